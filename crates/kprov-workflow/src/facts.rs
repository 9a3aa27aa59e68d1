//! What the diagnoses read from a node, through its root and runner (so
//! that tests can supply a root of their own): the kubelet's state and
//! journal, the static pods' container logs, the host name.

use std::path::{Path, PathBuf};

use kprov_controlplane::diagnose::{journal_excerpt, ComponentFacts, KubeletFacts};
use kprov_host::{fs, Command, Root, Runner};

/// Where the kubelet keeps container logs.
pub const POD_LOGS: &str = "/var/log/pods";

/// `systemctl is-active kubelet` and the end of the kubelet's journal.
pub fn kubelet(runner: &dyn Runner) -> KubeletFacts {
    let active = runner
        .run(&Command::new(
            "systemctl",
            ["is-active", "--quiet", "kubelet"],
        ))
        .is_ok_and(|o| o.success);
    let journal = runner
        .run(&Command::new(
            "journalctl",
            ["-u", "kubelet", "-n", "400", "--no-pager", "-o", "cat"],
        ))
        .map(|o| o.stdout)
        .unwrap_or_default();
    KubeletFacts {
        active,
        journal_tail: journal_excerpt(&journal),
    }
}

/// Each named static pod's container logs as the kubelet keeps them:
/// `/var/log/pods/kube-system_<name>-<node>_<uid>/<name>/<restart>.log`;
/// the newest log with something in it (a container just restarted has
/// not logged yet), and how many there are.
pub fn components(root: &Root, names: &[&str], node: &str) -> Vec<ComponentFacts> {
    let pods = Path::new(POD_LOGS);
    let pod_dirs = fs::list_dir(root, pods).unwrap_or_default();
    names
        .iter()
        .map(|name| {
            let prefix = format!("kube-system_{name}-{node}_");
            let mut logs: Vec<(PathBuf, std::time::SystemTime)> = pod_dirs
                .iter()
                .filter(|d| d.starts_with(&prefix))
                .flat_map(|d| {
                    let dir = pods.join(d).join(name);
                    fs::list_dir(root, &dir)
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |f| dir.join(f))
                })
                .map(|p| {
                    let modified = root
                        .resolve(&p)
                        .ok()
                        .and_then(|h| std::fs::metadata(h).ok())
                        .and_then(|m| m.modified().ok())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (p, modified)
                })
                .collect();
            logs.sort_by_key(|(_, t)| *t);
            let tails: Vec<String> = logs
                .iter()
                .map(|(p, _)| {
                    let text = fs::read(root, p).ok().flatten().unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                    lines[lines.len().saturating_sub(10)..].join("\n")
                })
                .collect();
            let log_tail = tails
                .iter()
                .rev()
                .find(|t| !t.is_empty())
                .or(tails.last())
                .cloned();
            ComponentFacts {
                name: name.to_string(),
                log_tail,
                attempts: logs.len(),
            }
        })
        .collect()
}

/// The node's host name as the kubelet would use it (lower case), from
/// the kernel (`/proc/sys/kernel/hostname` under the root).
pub fn hostname(root: &Root) -> Result<String, kprov_host::HostError> {
    let path = Path::new("/proc/sys/kernel/hostname");
    let name = fs::read(root, path)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&name).trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn the_newest_log_with_lines_is_shown_and_restarts_counted() {
        let dir = tempfile::tempdir().unwrap();
        let base = "var/log/pods/kube-system_etcd-master-1_0123/etcd";
        write(dir.path(), &format!("{base}/0.log"), "old line\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(
            dir.path(),
            &format!("{base}/1.log"),
            "first\nfatal: disk full\n",
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), &format!("{base}/2.log"), "");
        write(
            dir.path(),
            "var/log/pods/kube-system_etcd-master-2_0456/etcd/0.log",
            "another node's etcd\n",
        );
        let root = Root::new(dir.path()).unwrap();
        let facts = components(&root, &["etcd", "kube-apiserver"], "master-1");
        assert_eq!(facts[0].attempts, 3);
        assert_eq!(
            facts[0].log_tail.as_deref(),
            Some("first\nfatal: disk full")
        );
        assert_eq!(facts[1].attempts, 0);
        assert_eq!(facts[1].log_tail, None);
    }

    #[test]
    fn the_host_name_is_read_under_the_root_in_lower_case() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "proc/sys/kernel/hostname", "Worker-1\n");
        let root = Root::new(dir.path()).unwrap();
        assert_eq!(hostname(&root).unwrap(), "worker-1");
    }
}
