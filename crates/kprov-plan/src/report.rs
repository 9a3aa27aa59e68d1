//! What an apply did, per resource and in total: one [`Outcome`] per
//! resource and one [`Report`] per plan, for host plans and API plans
//! alike, and a [`RunReport`] per command (the `--output json` schema).

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
    /// Existed and was removed or stopped (or would be, in a dry run).
    Removed,
}

impl Outcome {
    /// The word shown to users.
    pub fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Self::Unchanged, _) => "unchanged",
            (Self::Created, false) => "created",
            (Self::Changed, false) => "changed",
            (Self::Removed, false) => "removed",
            (Self::Created, true) => "would create",
            (Self::Changed, true) => "would change",
            (Self::Removed, true) => "would remove",
        }
    }

    /// True for anything but [`Outcome::Unchanged`].
    pub fn is_change(self) -> bool {
        self != Self::Unchanged
    }

    /// The outcome of a group of resources (a certificate's key and
    /// certificate files): unchanged when all are, created when all were
    /// created, removed when all were removed, else changed.
    pub fn combine(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        let mut combined: Option<Outcome> = None;
        for o in outcomes {
            combined = Some(match combined {
                None => o,
                Some(c) if c == o => c,
                Some(_) => Outcome::Changed,
            });
        }
        combined.unwrap_or(Outcome::Unchanged)
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
    /// Resources removed (or stopped).
    pub removed: usize,
    /// Resources already as planned.
    pub unchanged: usize,
}

impl Summary {
    /// True when something was (or would be) changed.
    pub fn any_change(&self) -> bool {
        self.created + self.changed + self.removed > 0
    }
}

/// The report of one apply.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plan's headline.
    pub plan: String,
    /// Where it was applied: a root directory, or an API server's URL.
    pub target: String,
    /// True when nothing was changed.
    pub dry_run: bool,
    /// Per-resource results, in plan order.
    pub resources: Vec<ResourceReport>,
    /// Totals.
    pub summary: Summary,
}

impl Report {
    /// An empty report for a plan headed `plan` applied to `target`.
    pub fn new(plan: impl Into<String>, target: impl Into<String>, dry_run: bool) -> Self {
        Self {
            plan: plan.into(),
            target: target.into(),
            dry_run,
            resources: Vec::new(),
            summary: Summary::default(),
        }
    }

    /// Adds a resource result and counts it.
    pub fn push(&mut self, entry: ResourceReport) {
        match entry.outcome {
            Outcome::Created => self.summary.created += 1,
            Outcome::Changed => self.summary.changed += 1,
            Outcome::Removed => self.summary.removed += 1,
            Outcome::Unchanged => self.summary.unchanged += 1,
        }
        self.resources.push(entry);
    }

    /// True when something was (or, in a dry run, would be) changed.
    pub fn changed_anything(&self) -> bool {
        self.summary.any_change()
    }

    /// E.g. `24 resources: 3 created, 1 changed, 20 unchanged` (removals
    /// are named only when there are some).
    pub fn summary_line(&self) -> String {
        let s = self.summary;
        let total = s.created + s.changed + s.removed + s.unchanged;
        let removed = |word: &str| {
            if s.removed > 0 {
                format!(", {} {word}", s.removed)
            } else {
                String::new()
            }
        };
        if self.dry_run {
            format!(
                "dry run, nothing changed: {total} resources: {} would be created, {} would be changed{}, {} unchanged",
                s.created,
                s.changed,
                removed("would be removed"),
                s.unchanged
            )
        } else {
            format!(
                "{total} resources: {} created, {} changed{}, {} unchanged",
                s.created,
                s.changed,
                removed("removed"),
                s.unchanged
            )
        }
    }

    /// The text report: one line per resource, then the summary.
    pub fn render_text(&self) -> String {
        let mut out = format!("{}\ntarget: {}\n", self.plan, self.target);
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

/// What one command did: its reports, one per plan, in order. This is
/// the document `--output json` prints for every command that changes
/// something.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The command, e.g. `provision`, `init`, `reset`.
    pub command: String,
    /// True when nothing was changed.
    pub dry_run: bool,
    /// One report per plan (host or API), in the order they were applied.
    pub reports: Vec<Report>,
    /// In a dry run, the host plans in full (file contents included,
    /// secrets redacted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plans: Vec<crate::Plan>,
    /// Values the command produced, by name (`kprov init`'s
    /// `join_command`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,
}

impl RunReport {
    /// An empty run of `command`.
    pub fn new(command: impl Into<String>, dry_run: bool) -> Self {
        Self {
            command: command.into(),
            dry_run,
            reports: Vec::new(),
            plans: Vec::new(),
            outputs: Default::default(),
        }
    }

    /// True when some report changed (or would change) something.
    pub fn changed_anything(&self) -> bool {
        self.reports.iter().any(Report::changed_anything)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_unchanged_only_when_every_member_is() {
        use Outcome::*;
        let cases: &[(&[Outcome], Outcome)] = &[
            (&[], Unchanged),
            (&[Unchanged, Unchanged], Unchanged),
            (&[Created, Created], Created),
            (&[Unchanged, Created], Changed),
            (&[Removed], Removed),
            (&[Changed, Unchanged], Changed),
        ];
        for (members, expected) in cases {
            assert_eq!(
                Outcome::combine(members.iter().copied()),
                *expected,
                "{members:?}"
            );
        }
    }

    #[test]
    fn removals_are_counted_and_named_in_the_summary() {
        let mut report = Report::new("reset", "/", false);
        for (id, outcome) in [("a", Outcome::Removed), ("b", Outcome::Unchanged)] {
            report.push(ResourceReport {
                id: id.into(),
                description: id.into(),
                outcome,
                detail: None,
            });
        }
        assert_eq!(
            report.summary_line(),
            "2 resources: 0 created, 0 changed, 1 removed, 1 unchanged"
        );
        assert!(report.changed_anything());
    }
}
