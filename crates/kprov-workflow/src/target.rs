//! The node a workflow works on, and how it reports.

use kprov_artifacts::ArtifactSource;
use kprov_host::{Root, Runner};
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

    /// Applies a host plan with progress, and reports it.
    pub fn apply(
        &mut self,
        plan: &Plan,
        artifacts: &dyn ArtifactSource,
        context: &str,
    ) -> Result<Report, Error> {
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
