//! What an apply did, per resource and in total.

use serde::Serialize;

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already as planned.
    Unchanged,
    /// Did not exist and was created (or would be, in a dry run).
    Created,
    /// Existed and was changed (or would be, in a dry run).
    Changed,
}

impl Outcome {
    /// The word shown to users.
    pub fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Self::Unchanged, _) => "unchanged",
            (Self::Created, false) => "created",
            (Self::Changed, false) => "changed",
            (Self::Created, true) => "would create",
            (Self::Changed, true) => "would change",
        }
    }
}

/// One resource's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    /// The resource id.
    pub id: String,
    /// A human description.
    pub description: String,
    /// What happened.
    pub outcome: Outcome,
    /// Why it was (or would be) changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Resources created.
    pub created: usize,
    /// Resources changed.
    pub changed: usize,
    /// Resources already as planned.
    pub unchanged: usize,
}

/// The report of one apply.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plan's headline.
    pub plan: String,
    /// The target root.
    pub root: String,
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Per-resource results, in plan order.
    pub resources: Vec<ResourceReport>,
    /// Totals.
    pub summary: Summary,
}

impl Report {
    /// Adds a resource result and counts it.
    pub fn push(&mut self, entry: ResourceReport) {
        match entry.outcome {
            Outcome::Created => self.summary.created += 1,
            Outcome::Changed => self.summary.changed += 1,
            Outcome::Unchanged => self.summary.unchanged += 1,
        }
        self.resources.push(entry);
    }

    /// E.g. `24 resources: 3 created, 1 changed, 20 unchanged`.
    pub fn summary_line(&self) -> String {
        let s = self.summary;
        let total = s.created + s.changed + s.unchanged;
        if self.dry_run {
            format!(
                "dry run, nothing changed: {total} resources: {} would be created, {} would be changed, {} unchanged",
                s.created, s.changed, s.unchanged
            )
        } else {
            format!(
                "{total} resources: {} created, {} changed, {} unchanged",
                s.created, s.changed, s.unchanged
            )
        }
    }

    /// The text report: one line per resource, then the summary.
    pub fn render_text(&self) -> String {
        let mut out = format!("{}\nroot: {}\n", self.plan, self.root);
        for r in &self.resources {
            let word = r.outcome.word(self.dry_run);
            match &r.detail {
                Some(d) => out.push_str(&format!("  {word:<12} {} ({d})\n", r.description)),
                None => out.push_str(&format!("  {word:<12} {}\n", r.description)),
            }
        }
        out.push_str(&self.summary_line());
        out.push('\n');
        out
    }
}
