//! Workflows as tables of phases (placeholder, filled in below).
