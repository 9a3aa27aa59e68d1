//! Workflows as tables of phases, the way kubeadm's workflow runner does
//! it: a phase has a name, a description, a run condition and a body.
//! The table is the single source of a workflow's phase list: the runner
//! walks it, `NAME phase PHASE` runs one entry, `--skip-phases` names
//! entries, and `--help` lists them from it.
//!
//! Progress and results reach the caller through an [`Observer`]: phases
//! starting, host plans and their resources, reports (host and API), and
//! notes such as "waiting for the API server (10 s of 300 s)". Every
//! phase runs in a `tracing` span named after it.

use crate::apply::Event;
use crate::plan::Plan;
use crate::report::Report;

/// One phase of a workflow over a context `C`.
pub struct Phase<C, E> {
    /// Its name on the command line, e.g. `certs`.
    pub name: &'static str,
    /// What it does, one line, for `--help` and progress.
    pub description: &'static str,
    /// Whether the whole workflow runs it with this context (a phase run
    /// alone by name always runs): e.g. phases that talk to the API
    /// server only run on a live host, and not in a dry run of the
    /// whole workflow before anything exists.
    pub run_if: fn(&C) -> bool,
    /// The work.
    pub run: fn(&mut C) -> Result<(), E>,
}

/// Always.
pub fn always<C>(_: &C) -> bool {
    true
}

/// Which phases of a table to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every phase whose condition holds, minus these names.
    All {
        /// Phases to skip.
        skip: Vec<String>,
    },
    /// Exactly this one.
    Only(String),
}

/// A phase name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase {name:?} of {workflow}: expected one of {known}")]
pub struct UnknownPhase {
    /// The workflow.
    pub workflow: String,
    /// The name given.
    pub name: String,
    /// The table's names, comma-separated.
    pub known: String,
}

/// What a workflow tells its caller as it goes.
pub trait Observer {
    /// A phase starts.
    fn phase(&mut self, _workflow: &str, _name: &str, _description: &str) {}
    /// A host plan is about to be applied.
    fn plan(&mut self, _plan: &Plan, _dry_run: bool) {}
    /// Progress on one resource of the plan being applied.
    fn resource(&mut self, _event: &Event<'_>, _dry_run: bool) {}
    /// A plan (host or API) was applied, or dry-run.
    fn report(&mut self, _report: &Report) {}
    /// A line of progress or a fact worth telling.
    fn note(&mut self, _message: &str) {}
    /// The state of one item of a long workflow (a cluster's machine:
    /// `booting`, `joining`, `Ready`), as it changes.
    fn item(&mut self, _item: &str, _state: &str) {}
}

/// An observer that ignores everything (for tests and library callers
/// that only want the result).
pub struct Quiet;

impl Observer for Quiet {}

/// Names of a table's phases, in order.
pub fn names<C, E>(phases: &[Phase<C, E>]) -> Vec<&'static str> {
    phases.iter().map(|p| p.name).collect()
}

/// The phases `selection` picks from `phases` for `ctx`, checking every
/// name it gives first.
pub fn select<'p, C, E>(
    workflow: &str,
    phases: &'p [Phase<C, E>],
    selection: &Selection,
    ctx: &C,
) -> Result<Vec<&'p Phase<C, E>>, UnknownPhase> {
    let unknown = |name: &str| UnknownPhase {
        workflow: workflow.to_string(),
        name: name.to_string(),
        known: names(phases).join(", "),
    };
    match selection {
        Selection::Only(name) => phases
            .iter()
            .find(|p| p.name == name)
            .map(|p| vec![p])
            .ok_or_else(|| unknown(name)),
        Selection::All { skip } => {
            if let Some(bad) = skip.iter().find(|s| !phases.iter().any(|p| p.name == *s)) {
                return Err(unknown(bad));
            }
            Ok(phases
                .iter()
                .filter(|p| !skip.iter().any(|s| s == p.name) && (p.run_if)(ctx))
                .collect())
        }
    }
}

/// A workflow's context: it carries the observer phases report to.
pub trait Observed {
    /// Who hears about the run.
    fn observer(&mut self) -> &mut dyn Observer;
}

/// Runs the selected phases of `phases` in order, each in a tracing span,
/// telling the context's observer as each starts. Stops at the first
/// failure.
pub fn run<C, E>(
    workflow: &str,
    phases: &[Phase<C, E>],
    selection: &Selection,
    ctx: &mut C,
) -> Result<(), E>
where
    C: Observed,
    E: From<UnknownPhase>,
{
    for phase in select(workflow, phases, selection, ctx)? {
        let span = tracing::info_span!("phase", workflow, name = phase.name);
        let _guard = span.enter();
        ctx.observer()
            .phase(workflow, phase.name, phase.description);
        (phase.run)(ctx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Ctx {
        live: bool,
        ran: Vec<&'static str>,
        told: Told,
    }

    #[derive(Default)]
    struct Told(Vec<String>);

    impl Observer for Told {
        fn phase(&mut self, workflow: &str, name: &str, _: &str) {
            self.0.push(format!("{workflow} {name}"));
        }
    }

    impl Observed for Ctx {
        fn observer(&mut self) -> &mut dyn Observer {
            &mut self.told
        }
    }

    #[derive(Debug, PartialEq)]
    enum Error {
        Unknown(UnknownPhase),
        Failed,
    }

    impl From<UnknownPhase> for Error {
        fn from(e: UnknownPhase) -> Self {
            Self::Unknown(e)
        }
    }

    fn table() -> Vec<Phase<Ctx, Error>> {
        vec![
            Phase {
                name: "files",
                description: "write files",
                run_if: always,
                run: |c| {
                    c.ran.push("files");
                    Ok(())
                },
            },
            Phase {
                name: "api",
                description: "talk to the API server",
                run_if: |c| c.live,
                run: |c| {
                    c.ran.push("api");
                    Ok(())
                },
            },
            Phase {
                name: "fail",
                description: "fails",
                run_if: |c| c.live,
                run: |_| Err(Error::Failed),
            },
        ]
    }

    #[test]
    fn the_whole_workflow_runs_phases_whose_condition_holds() {
        let mut ctx = Ctx::default();
        let selection = Selection::All {
            skip: vec!["fail".into()],
        };
        run("test", &table(), &selection, &mut ctx).unwrap();
        assert_eq!(ctx.ran, ["files"]);
        let mut ctx = Ctx {
            live: true,
            ..Ctx::default()
        };
        run("test", &table(), &selection, &mut ctx).unwrap();
        assert_eq!(ctx.ran, ["files", "api"]);
        assert_eq!(ctx.told.0, ["test files", "test api"]);
    }

    #[test]
    fn a_phase_run_alone_runs_whatever_its_condition() {
        let mut ctx = Ctx::default();
        run("test", &table(), &Selection::Only("api".into()), &mut ctx).unwrap();
        assert_eq!(ctx.ran, ["api"]);
    }

    #[test]
    fn a_failing_phase_stops_the_run() {
        let mut ctx = Ctx {
            live: true,
            ..Ctx::default()
        };
        let all = Selection::All { skip: Vec::new() };
        assert_eq!(run("test", &table(), &all, &mut ctx), Err(Error::Failed));
        assert_eq!(ctx.ran, ["files", "api"]);
    }

    #[test]
    fn unknown_names_are_refused_naming_the_known_ones() {
        let mut ctx = Ctx::default();
        let skip = Selection::All {
            skip: vec!["nope".into()],
        };
        let err = run("init", &table(), &skip, &mut ctx).unwrap_err();
        assert_eq!(
            err,
            Error::Unknown(UnknownPhase {
                workflow: "init".into(),
                name: "nope".into(),
                known: "files, api, fail".into()
            })
        );
        assert_eq!(
            err_text(&table()),
            "unknown phase \"x\" of init: expected one of files, api, fail"
        );
        assert!(ctx.ran.is_empty());
    }

    fn err_text(t: &[Phase<Ctx, Error>]) -> String {
        select("init", t, &Selection::Only("x".into()), &Ctx::default())
            .err()
            .unwrap()
            .to_string()
    }
}
