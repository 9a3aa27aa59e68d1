//! The apply engine: check each resource, change only what differs.
//!
//! For every resource in plan order the engine asks for its current state
//! ([`check`]); if it already matches, nothing happens. Otherwise, unless
//! this is a dry run, it converges the resource ([`converge`]) and moves on.
//! Each converge step is itself idempotent and crash-safe (atomic writes,
//! package managers' own journals), so a run killed anywhere and started
//! again ends in the same state as an uninterrupted one.

mod archive;
mod containers;
pub mod network;
mod packages;
mod removal;
mod resources;
mod systemd;

use kprov_artifacts::ArtifactSource;
use kprov_host::{failpoint, HostError, Root, Runner};

use crate::plan::Plan;
use crate::report::{Outcome, Report, ResourceReport};
use crate::resource::Resource;

pub use resources::{check, converge};

/// What the engine works against.
pub struct ApplyContext<'a> {
    /// The node's root.
    pub root: &'a Root,
    /// Runs commands on the node.
    pub runner: &'a dyn Runner,
    /// Provides binaries.
    pub artifacts: &'a dyn ArtifactSource,
    /// Check only; change nothing.
    pub dry_run: bool,
}

impl<'a> ApplyContext<'a> {
    /// A context for plans that install no artifacts (files, units,
    /// removals): asking for an artifact is an error.
    pub fn files_only(root: &'a Root, runner: &'a dyn Runner, dry_run: bool) -> Self {
        Self {
            root,
            runner,
            artifacts: &kprov_artifacts::NoArtifacts,
            dry_run,
        }
    }
}

/// A resource's state compared with the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// As planned.
    Ok,
    /// Absent; the detail says what is missing.
    Missing(String),
    /// Present but different; the detail says how.
    Differs(String),
    /// Present where the plan wants it gone (or running where the plan
    /// wants it stopped); the detail says what is there.
    Present(String),
}

/// Why applying a resource failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A host operation failed.
    #[error("{resource}: {source}")]
    Host {
        /// The resource id.
        resource: String,
        /// The failure.
        source: HostError,
    },
    /// An artifact could not be provided or verified.
    #[error("{resource}: {source}")]
    Artifact {
        /// The resource id.
        resource: String,
        /// The failure (boxed: artifact errors carry several URLs and sums).
        source: Box<kprov_artifacts::ArtifactError>,
    },
    /// Anything else, described.
    #[error("{resource}: {message}")]
    Other {
        /// The resource id.
        resource: String,
        /// What went wrong.
        message: String,
    },
}

impl ApplyError {
    /// An [`ApplyError::Artifact`] for `resource`.
    pub fn artifact(resource: impl Into<String>, source: kprov_artifacts::ArtifactError) -> Self {
        Self::Artifact {
            resource: resource.into(),
            source: Box::new(source),
        }
    }
}

/// Progress events, for a caller that shows progress.
pub enum Event<'a> {
    /// Checking (and maybe converging) resource `index` of `total`.
    Started {
        /// 1-based position.
        index: usize,
        /// Number of resources.
        total: usize,
        /// The resource.
        resource: &'a Resource,
    },
    /// Done with it.
    Finished {
        /// 1-based position.
        index: usize,
        /// Number of resources.
        total: usize,
        /// Its result.
        entry: &'a ResourceReport,
    },
}

/// Applies `plan` to the node and reports per resource.
///
/// A first pass only checks. If everything is as planned (the common
/// re-run) that is the whole run. Otherwise the artifacts of the resources
/// to change are verified in full before anything is touched, so a bad
/// artifact leaves the node unchanged; then resources are converged in
/// order, re-checking those after the first change (an earlier change, such
/// as a package install, can change a later resource's state).
pub fn apply(
    plan: &Plan,
    ctx: &ApplyContext<'_>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, ApplyError> {
    let mut report = Report::new(&plan.headline, ctx.root.to_string(), ctx.dry_run);
    let first_pass: Vec<Status> = plan
        .resources
        .iter()
        .map(|r| check(r, ctx))
        .collect::<Result<_, _>>()?;
    if !ctx.dry_run {
        verify_artifacts(plan, &first_pass, ctx)?;
    }
    let total = plan.resources.len();
    let mut changed_anything = false;
    for (i, (resource, first_status)) in plan.resources.iter().zip(first_pass).enumerate() {
        let index = i + 1;
        let id = resource.id();
        let span = tracing::info_span!("resource", id = %id);
        let _guard = span.enter();
        on_event(Event::Started {
            index,
            total,
            resource,
        });
        let status = if changed_anything {
            check(resource, ctx)?
        } else {
            first_status
        };
        let (outcome, detail) = match status {
            Status::Ok => (Outcome::Unchanged, None),
            Status::Missing(d) => (Outcome::Created, Some(d)),
            Status::Differs(d) => (Outcome::Changed, Some(d)),
            Status::Present(d) => (Outcome::Removed, Some(d)),
        };
        if outcome != Outcome::Unchanged && !ctx.dry_run {
            converge(resource, ctx)?;
            changed_anything = true;
            tracing::info!(outcome = outcome.word(false), "applied");
            failpoint::hit("resource.applied");
        }
        let entry = ResourceReport {
            id,
            description: resource.to_string(),
            outcome,
            detail,
        };
        on_event(Event::Finished {
            index,
            total,
            entry: &entry,
        });
        report.push(entry);
    }
    if !ctx.dry_run {
        // An optimisation for the next run: failing to keep it is no
        // failure of this one.
        if let Err(e) = ctx.root.save_hash_cache() {
            tracing::warn!("keeping the sums of large files for the next run: {e}");
        }
    }
    Ok(report)
}

/// Fetches and hashes, in full, every artifact a pending change will install.
fn verify_artifacts(
    plan: &Plan,
    statuses: &[Status],
    ctx: &ApplyContext<'_>,
) -> Result<(), ApplyError> {
    let pending: Vec<(&Resource, &kprov_artifacts::ArtifactId)> = plan
        .resources
        .iter()
        .zip(statuses)
        .filter(|(_, status)| **status != Status::Ok)
        .filter_map(|(resource, _)| match resource {
            Resource::Binary { artifact, .. }
            | Resource::Archive { artifact, .. }
            | Resource::ImageArchive { artifact, .. } => Some((resource, artifact)),
            _ => None,
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    // Downloading sources fetch everything at once, in parallel.
    let ids: Vec<kprov_artifacts::ArtifactId> =
        pending.iter().map(|(_, id)| (*id).clone()).collect();
    ctx.artifacts
        .prefetch(&ids)
        .map_err(|source| ApplyError::artifact("artifacts", source))?;
    for (resource, artifact) in pending {
        let err = |source| ApplyError::artifact(resource.id(), source);
        ctx.artifacts
            .fetch(artifact)
            .map_err(err)?
            .verify(artifact)
            .map_err(err)?;
    }
    Ok(())
}
