//! `kprov etcd members`: stacked etcd's members as a master's own member
//! lists them; the work is in kprov-workflow.

use std::process::ExitCode;

use anyhow::Context;
use kprov_host::Root;

use crate::cli::{EtcdMembersArgs, OutputArg};

/// Lists the members, and whether each answers.
pub fn members(args: &EtcdMembersArgs) -> anyhow::Result<ExitCode> {
    let rt = super::runtime()?;
    let members =
        kprov_workflow::etcd::members(rt.handle(), &Root::live(), &args.cert_dir, &args.endpoint)
            .with_context(|| format!("listing etcd's members at --endpoint {}", args.endpoint))?;
    #[allow(clippy::print_stdout)]
    match args.output {
        OutputArg::Json => {
            let list: Vec<serde_json::Value> = members
                .iter()
                .map(|(m, answers)| {
                    let mut v = serde_json::to_value(m).unwrap_or_default();
                    v["answers"] = (*answers).into();
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "members": list }))?
            );
        }
        OutputArg::Text => {
            for (m, answers) in &members {
                println!(
                    "{:<16} {:<24} {:<8} {:<12} {}",
                    m.hex_id(),
                    if m.started() {
                        m.name.as_str()
                    } else {
                        "(not started)"
                    },
                    if m.is_learner { "learner" } else { "voter" },
                    if *answers { "answers" } else { "no answer" },
                    m.peer_urls.join(",")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
