//! A computed plan: the resources, in apply order, and what they are for.

use std::fmt::Write;

use serde::Serialize;

use crate::resource::{Contents, Resource};

/// A computed plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// What the plan is for, in one line: "base phase for Debian GNU/Linux
    /// 12 [apt], kubelet v1.20.2, ...", "static pods", "reset".
    pub headline: String,
    /// True when planned for a running host (services started, kernel
    /// configured now), false when prebaking a root offline.
    pub live: bool,
    /// The resources, in apply order.
    pub resources: Vec<Resource>,
}

impl Plan {
    /// A plan of `resources` for `headline`.
    pub fn new(headline: impl Into<String>, live: bool, resources: Vec<Resource>) -> Self {
        Self {
            headline: headline.into(),
            live,
            resources,
        }
    }

    /// The full plan as text, file contents included (secrets redacted);
    /// used for `--dry-run` details and golden files.
    pub fn render_text(&self) -> String {
        let mut out = format!("# plan: {}\n", self.headline);
        for (i, res) in self.resources.iter().enumerate() {
            let _ = writeln!(out, "{:>2}. {res}", i + 1);
            if let Resource::File { contents, .. } = res {
                match contents {
                    Contents::Text(t) => {
                        for line in t.lines() {
                            let _ = writeln!(out, "      | {line}");
                        }
                    }
                    Contents::Secret(_) => out.push_str("      | <redacted>\n"),
                }
            }
        }
        out
    }
}
