//! Provisioning a node: OS detection, the plan, and the apply engine.
//!
//! Data flows one way: [`os::detect`] turns os-release text into
//! [`os::OsFacts`]; [`plan::plan_base`] turns facts and a
//! [`kprov_core::NodeSpec`] into a [`plan::Plan`] of typed
//! [`resource::Resource`]s, with no side effects; [`apply::apply`] checks
//! each resource on the target root and changes only what differs,
//! returning a [`report::Report`]. [`plan::plan_join`] plans the join
//! phase's files the same way; [`reset`] undoes them. Everything under
//! `apply` (and `reset::apply_reset`) is the thin layer that touches the
//! node; everything else is pure.

pub mod apply;
pub mod facts;
pub mod fstab;
pub mod health;
pub mod os;
pub mod plan;
pub mod pod_routes;
pub mod render;
pub mod report;
pub mod reset;
pub mod resource;
pub mod tables;
