//! Test harness pieces shared by kprov's crates (a dev-dependency only).

pub mod golden;
pub mod http;
