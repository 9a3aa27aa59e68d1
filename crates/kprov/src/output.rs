//! How commands that change something print: progress on stderr, data on
//! stdout. [`Printer`] hears a workflow's phases, plans, reports and
//! notes; with `--output text` each report is printed as it comes, with
//! `--output json` one [`RunReport`] is printed at the end (the schema the
//! README documents).

use kprov_plan::workflow::Observer;
use kprov_plan::{Event, Plan, Report, Resource, RunReport};

use crate::cli::OutputArg;

/// Prints a command's progress and reports.
pub struct Printer {
    output: OutputArg,
    run: RunReport,
}

impl Printer {
    /// A printer for `command`.
    pub fn new(command: &str, output: OutputArg, dry_run: bool) -> Self {
        Self {
            output,
            run: RunReport::new(command, dry_run),
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
    pub fn finish(self) -> anyhow::Result<RunReport> {
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
        eprintln!("kprov: {workflow} phase {name}");
    }

    fn plan(&mut self, plan: &Plan, dry_run: bool) {
        eprintln!("kprov: {}", plan.headline);
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
                    eprintln!("[{index:>width$}/{total}] {resource} ...");
                }
            }
            Event::Finished {
                index,
                total,
                entry,
            } => {
                let width = total.to_string().len();
                eprintln!(
                    "[{index:>width$}/{total}] {:<12} {}",
                    entry.outcome.word(dry_run),
                    entry.description
                );
            }
        }
    }

    fn report(&mut self, report: &Report) {
        if self.output == OutputArg::Text {
            #[allow(clippy::print_stdout)]
            {
                print!("{}", report.render_text());
            }
        }
        self.run.reports.push(report.clone());
    }

    fn note(&mut self, message: &str) {
        eprintln!("kprov: {message}");
    }
}
