//! Provisioning a node: OS detection and the node's plans.
//!
//! Data flows one way: [`os::detect`] turns os-release text into
//! [`os::OsFacts`]; [`plan::plan_base`] turns facts and a
//! [`kprov_core::NodeSpec`] into a [`kprov_plan::Plan`] of typed
//! [`kprov_plan::Resource`]s, with no side effects; kprov-plan's engine
//! checks each resource on the target root and changes only what
//! differs. [`plan::plan_join`] plans the join phase's files the same
//! way; [`reset::plan_reset`] plans undoing them. [`facts`] and [`health`]
//! are the thin layer that reads or changes a node;
//! everything else is pure.

pub mod facts;
pub mod health;
pub mod os;
pub mod plan;
pub mod render;
pub mod reset;
pub mod tables;
