//! `kprov reset`: undo the join phase and keep the base phase. The plan
//! is kprov-provision's [`plan_reset`]; it is applied under the node lock,
//! so that a health-check round cannot start the kubelet again halfway.

use kprov_plan::Report;
use kprov_provision::reset::plan_reset;

use crate::{Context, Error, Target};

/// Resets the node.
pub fn run(target: &mut Target<'_>) -> Result<Report, Error> {
    let root = target.root.clone();
    let os = kprov_provision::facts::detect_os(&root).context(|| format!("reading {root}"))?;
    let plan = plan_reset(&os, root.is_live());
    // Applied under the node lock: no health-check round runs during the
    // reset (it could start the kubelet again); the next one sees the join
    // undone.
    let report = target.apply_files(&plan, "resetting")?;
    if !report.changed_anything() {
        target.note(format!("nothing to reset on {root}; nothing changed"));
    } else if !target.dry_run {
        target.note(format!(
            "reset {root}: the join phase is undone, the base phase is kept"
        ));
    }
    Ok(report)
}
