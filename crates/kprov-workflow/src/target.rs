//! The node a workflow works on, and how it reports.

use kprov_artifacts::ArtifactSource;
use kprov_host::{HostError, NodeLock, Root, Runner};
use kprov_plan::workflow::Observer;
use kprov_plan::{ApplyContext, Plan, Report};

use crate::{Context, Error};

/// The node, the command's runtime, and who hears about progress.
pub struct Target<'a> {
    /// The node's root: `/` on a running host, a directory when prebaking.
    pub root: Root,
    /// Runs commands on the node.
    pub runner: &'a dyn Runner,
    /// The command's one async runtime; API calls block on it.
    pub rt: tokio::runtime::Handle,
    /// Check and report only; change nothing.
    pub dry_run: bool,
    /// Hears about phases, plans, reports and progress.
    pub observer: &'a mut dyn Observer,
}

impl Target<'_> {
    /// True on the running host.
    pub fn live(&self) -> bool {
        self.root.is_live()
    }

    /// Tells the observer something.
    pub fn note(&mut self, message: impl AsRef<str>) {
        self.observer.note(message.as_ref());
    }

    /// Takes the node lock of the root (kprov-host's [`NodeLock`]). When
    /// another kprov run holds it, tells the observer and waits, for at
    /// most `KPROV_LOCK_TIMEOUT` seconds (600 by default).
    pub fn lock_node(&mut self) -> Result<NodeLock, Error> {
        let observer = &mut *self.observer;
        NodeLock::acquire_for_command(&self.root, &mut |message| observer.note(message)).map_err(
            |e| match e {
                e @ (HostError::Locked { .. } | HostError::BadLockTimeout { .. }) => {
                    Error::Failed(e.to_string())
                }
                other => Error::Host {
                    context: "taking the node lock".into(),
                    source: Box::new(other),
                },
            },
        )
    }

    /// Applies a host plan with progress, and reports it. Changes are
    /// made under the node lock ([`Target::lock_node`]); a dry run takes
    /// none.
    pub fn apply(
        &mut self,
        plan: &Plan,
        artifacts: &dyn ArtifactSource,
        context: &str,
    ) -> Result<Report, Error> {
        let _lock = if self.dry_run {
            None
        } else {
            Some(self.lock_node()?)
        };
        let ctx = ApplyContext {
            root: &self.root,
            runner: self.runner,
            artifacts,
            dry_run: self.dry_run,
        };
        self.observer.plan(plan, self.dry_run);
        let dry_run = self.dry_run;
        let observer = &mut *self.observer;
        let report = kprov_plan::apply(plan, &ctx, &mut |event| observer.resource(&event, dry_run))
            .context(|| format!("{context} on {}", self.root))?;
        self.observer.report(&report);
        Ok(report)
    }

    /// Applies a host plan that installs no artifacts.
    pub fn apply_files(&mut self, plan: &Plan, context: &str) -> Result<Report, Error> {
        self.apply(plan, &kprov_artifacts::NoArtifacts, context)
    }
}
