//! How commands that change something print: progress on stderr, data on
//! stdout. [`Printer`] hears a workflow's phases, plans, reports and
//! notes; with `--output text` each report is printed as it comes, with
//! `--output json` one [`RunReport`] is printed at the end (the schema the
//! README documents).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use kprov_plan::workflow::Observer;
use kprov_plan::{Event, Plan, Report, Resource, RunReport};

use crate::cli::OutputArg;

/// Prints a command's progress and reports.
pub struct Printer {
    output: OutputArg,
    run: RunReport,
    items: Option<ItemBars>,
}

/// A spinner per item (a cluster's machine) with its state, on a
/// terminal only; lines printed meanwhile go above them.
struct ItemBars {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar)>,
}

impl ItemBars {
    fn set(&mut self, item: &str, state: &str) {
        let bar = match self.bars.iter().find(|(name, _)| name == item) {
            Some((_, bar)) => bar.clone(),
            None => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<24} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(item.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.bars.push((item.to_string(), bar.clone()));
                bar
            }
        };
        bar.set_message(state.to_string());
    }

    /// Stops the spinners, each left showing its last state.
    fn end(&mut self) {
        for (_, bar) in self.bars.drain(..) {
            bar.finish();
        }
    }
}

impl Drop for ItemBars {
    fn drop(&mut self) {
        self.end();
    }
}

impl Printer {
    /// A printer for `command`.
    pub fn new(command: &str, output: OutputArg, dry_run: bool) -> Self {
        Self {
            output,
            run: RunReport::new(command, dry_run),
            items: None,
        }
    }

    /// A line on stderr, above the item bars when there are any.
    fn say(&self, line: &str) {
        match &self.items {
            Some(items) if !items.bars.is_empty() => items.multi.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }

    /// Stops the item bars, each left showing its last state, so that
    /// what follows prints below them.
    pub fn end_items(&mut self) {
        if let Some(items) = &mut self.items {
            items.end();
        }
    }

    /// Records a value the command produced; text output prints it on
    /// stdout at once.
    pub fn output(&mut self, name: &str, value: String) {
        if self.output == OutputArg::Text {
            #[allow(clippy::print_stdout)]
            {
                println!("{value}");
            }
        }
        self.run.outputs.insert(name.to_string(), value);
    }

    /// Says when nothing changed, and prints the JSON document (for
    /// `--output json`).
    pub fn finish(mut self) -> anyhow::Result<RunReport> {
        self.end_items();
        if !self.run.dry_run && !self.run.reports.is_empty() && !self.run.changed_anything() {
            eprintln!("kprov: nothing changed");
        }
        if self.output == OutputArg::Json {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", serde_json::to_string_pretty(&self.run)?);
            }
        }
        Ok(self.run)
    }
}

impl Observer for Printer {
    fn phase(&mut self, workflow: &str, name: &str, _description: &str) {
        self.say(&format!("kprov: {workflow} phase {name}"));
    }

    fn plan(&mut self, plan: &Plan, dry_run: bool) {
        self.say(&format!("kprov: {}", plan.headline));
        if dry_run {
            match self.output {
                OutputArg::Text => {
                    #[allow(clippy::print_stdout)]
                    {
                        print!("{}", plan.render_text());
                    }
                }
                OutputArg::Json => self.run.plans.push(plan.clone()),
            }
        }
    }

    fn resource(&mut self, event: &Event<'_>, dry_run: bool) {
        match *event {
            Event::Started {
                index,
                total,
                resource,
            } => {
                // Long steps say they started.
                let long = matches!(
                    resource,
                    Resource::Packages { .. } | Resource::Archive { .. }
                );
                if long && !dry_run {
                    let width = total.to_string().len();
                    self.say(&format!("[{index:>width$}/{total}] {resource} ..."));
                }
            }
            Event::Finished {
                index,
                total,
                entry,
            } => {
                let width = total.to_string().len();
                self.say(&format!(
                    "[{index:>width$}/{total}] {:<12} {}",
                    entry.outcome.word(dry_run),
                    entry.description
                ));
            }
        }
    }

    fn report(&mut self, report: &Report) {
        if self.output == OutputArg::Text {
            let text = report.render_text();
            #[allow(clippy::print_stdout)]
            let print = || print!("{text}");
            match &self.items {
                Some(items) => items.multi.suspend(print),
                None => print(),
            }
        }
        self.run.reports.push(report.clone());
    }

    fn note(&mut self, message: &str) {
        self.say(&format!("kprov: {message}"));
    }

    fn item(&mut self, item: &str, state: &str) {
        if self.items.is_none() {
            if !std::io::stderr().is_terminal() {
                // The notes say the same, a line each.
                return;
            }
            self.items = Some(ItemBars {
                multi: MultiProgress::new(),
                bars: Vec::new(),
            });
        }
        if let Some(items) = &mut self.items {
            items.set(item, state);
        }
    }
}
