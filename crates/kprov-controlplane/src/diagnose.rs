//! Why a control plane did not come up: facts gathered from the node (the
//! kubelet's state and journal, each static pod's container log) turned
//! into a message that names the component at fault and shows its last
//! log lines. Pure; the facts are read by the caller.

use std::fmt::Write;

/// What the node says about one static pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFacts {
    /// etcd, kube-apiserver, ...
    pub name: String,
    /// The last lines of its newest container log, or None when the
    /// kubelet never started a container for it.
    pub log_tail: Option<String>,
    /// The number of container logs (restarts + 1).
    pub attempts: usize,
}

/// What the node says about the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletFacts {
    /// `systemctl is-active kubelet` said active.
    pub active: bool,
    /// What the journal says about its end ([`journal_excerpt`]).
    pub journal_tail: String,
}

/// The part of a kubelet journal that says why it stopped. A Go program
/// that dies prints its reason (a klog fatal line `F1121 10:15:54 ...`,
/// `panic:` or `fatal error:`) and then pages of goroutine stacks, so the
/// last lines alone show only stacks: the reason and the lines just
/// before it are taken instead. Without such a line, the last 15 lines.
pub fn journal_excerpt(journal: &str) -> String {
    let lines: Vec<&str> = journal.lines().collect();
    let is_fatal = |line: &&str| {
        let text = line.trim_start();
        let klog_fatal = text.len() > 5
            && text.starts_with('F')
            && text[1..5].bytes().all(|b| b.is_ascii_digit());
        klog_fatal || text.starts_with("panic:") || text.starts_with("fatal error:")
    };
    let picked: Vec<&str> = match lines.iter().rposition(is_fatal) {
        Some(at) => lines[at.saturating_sub(3)..(at + 2).min(lines.len())].to_vec(),
        None => last_distinct(&lines, 15),
    };
    picked
        .iter()
        .map(|l| clip(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One log line, cut at 400 bytes: a Go program can log a whole object.
fn clip(line: &str) -> String {
    let mut line = line.to_string();
    if line.len() > 400 {
        let cut = (0..=400)
            .rev()
            .find(|i| line.is_char_boundary(*i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push_str(" ...");
    }
    line
}

/// The last `n` lines whose messages differ: a kubelet repeats one error
/// many times a second, which would hide everything else. A klog line's
/// message is what follows its `] `.
fn last_distinct<'a>(lines: &[&'a str], n: usize) -> Vec<&'a str> {
    let message = |l: &str| l.split_once("] ").map_or(l, |(_, m)| m).to_string();
    let mut seen = std::collections::HashSet::new();
    let mut picked: Vec<&str> = lines
        .iter()
        .rev()
        .filter(|l| seen.insert(message(l)))
        .take(n)
        .copied()
        .collect();
    picked.reverse();
    picked
}

/// An API server's /readyz answer, which lists every check (`[+]ping ok`,
/// `[-]etcd failed: reason withheld`, ...), shortened to the checks that
/// failed; other answers unchanged.
pub fn readyz_summary(answer: &str) -> String {
    let mut failed: Vec<&str> = Vec::new();
    for check in answer
        .split(['\n', '\\'])
        .filter_map(|line| line.trim_start_matches('n').strip_prefix("[-]"))
        .filter_map(|check| check.split_whitespace().next())
    {
        // kube's error repeats the body; each check once.
        if !failed.contains(&check) {
            failed.push(check);
        }
    }
    if failed.is_empty() {
        answer.trim().to_string()
    } else {
        format!("checks failing: {}", failed.join(", "))
    }
}

/// A container log line as the kubelet writes it
/// (`2026-11-21T12:00:08.01Z stderr F message`), reduced to its message.
fn cri_message(line: &str) -> &str {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(time), Some("stdout" | "stderr"), Some("F" | "P"), Some(message))
            if time.contains('T') =>
        {
            message
        }
        _ => line,
    }
}

/// A diagnosis: the first cause found, then the evidence.
pub fn diagnose(
    waited_for: &str,
    last_error: &str,
    kubelet: &KubeletFacts,
    components: &[ComponentFacts],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{waited_for} did not become ready; last answer: {last_error}"
    );
    if !kubelet.active {
        let _ = writeln!(
            out,
            "cause: the kubelet is not running, so no static pod starts. Its journal ends with:\n{}",
            indent(&kubelet.journal_tail)
        );
        return out;
    }
    let never_started: Vec<&str> = components
        .iter()
        .filter(|c| c.log_tail.is_none())
        .map(|c| c.name.as_str())
        .collect();
    for c in components {
        match &c.log_tail {
            None => {}
            Some(tail) if c.attempts > 1 => {
                let _ = writeln!(
                    out,
                    "cause: {} has been started {} times (it keeps exiting). Its last log lines:\n{}",
                    c.name,
                    c.attempts,
                    indent(tail)
                );
                // The API server exits when etcd does not answer: show
                // etcd too, unless it is a cause of its own.
                let etcd = components.iter().find(|e| e.name == "etcd");
                if let Some(ComponentFacts {
                    log_tail: Some(etcd_tail),
                    attempts: 1,
                    ..
                }) = etcd.filter(|_| c.name == "kube-apiserver")
                {
                    let _ = writeln!(
                        out,
                        "etcd, which it needs, logged last:\n{}",
                        indent(etcd_tail)
                    );
                }
            }
            Some(_) => {}
        }
    }
    if !never_started.is_empty() {
        let _ = writeln!(
            out,
            "cause: the kubelet has not started {} (is the image in containerd? `ctr -n k8s.io images ls`). The kubelet's journal ends with:\n{}",
            never_started.join(", "),
            indent(&kubelet.journal_tail)
        );
    }
    if !out.contains("cause:") {
        let _ = writeln!(out, "every static pod is running; their last log lines:");
        for c in components {
            if let Some(tail) = &c.log_tail {
                let _ = writeln!(out, "{}:\n{}", c.name, indent(tail));
            }
        }
    }
    out
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {}", clip(cri_message(l))))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubelet(active: bool) -> KubeletFacts {
        KubeletFacts {
            active,
            journal_tail: "kubelet: something".into(),
        }
    }

    fn facts(name: &str, tail: Option<&str>, attempts: usize) -> ComponentFacts {
        ComponentFacts {
            name: name.into(),
            log_tail: tail.map(str::to_string),
            attempts,
        }
    }

    #[test]
    fn a_stopped_kubelet_is_the_cause() {
        let d = diagnose("the API server", "connection refused", &kubelet(false), &[]);
        assert!(d.contains("the kubelet is not running"), "{d}");
        assert!(d.contains("    kubelet: something"));
    }

    #[test]
    fn a_crash_looping_component_is_named_with_its_log() {
        let d = diagnose(
            "the API server",
            "connection refused",
            &kubelet(true),
            &[
                facts("etcd", Some("ok"), 1),
                facts("kube-apiserver", Some("Error: bad flag --foo"), 3),
            ],
        );
        assert!(d.contains("kube-apiserver has been started 3 times"), "{d}");
        assert!(d.contains("    Error: bad flag --foo"));
        assert!(!d.contains("etcd has been started"));
        assert!(
            d.contains("etcd, which it needs, logged last:\n    ok"),
            "{d}"
        );
    }

    #[test]
    fn container_log_lines_are_shown_by_their_message() {
        let tail = "2026-11-21T12:00:08.01Z stderr F I1121 client.go:360] parsed scheme\n\
                    2026-11-21T12:00:09.01Z stdout F W1121 etcd is slow";
        let d = diagnose(
            "the API server",
            "refused",
            &kubelet(true),
            &[facts("kube-apiserver", Some(tail), 2)],
        );
        assert!(
            d.contains("\n    I1121 client.go:360] parsed scheme\n    W1121 etcd is slow"),
            "{d}"
        );
        assert!(!d.contains("stderr F"), "{d}");
    }

    #[test]
    fn a_readyz_answer_is_shortened_to_its_failing_checks() {
        let body = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
                    [+]shutdown ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n\
                    readyz check failed";
        assert_eq!(
            readyz_summary(body),
            "checks failing: etcd, poststarthook/rbac/bootstrap-roles"
        );
        // kube's error for a 500 carries the body in its Debug form.
        let debug = format!("ApiError: {body:?}: Failed to parse error data (message: {body:?})");
        assert_eq!(
            readyz_summary(&debug),
            "checks failing: etcd, poststarthook/rbac/bootstrap-roles"
        );
        assert_eq!(
            readyz_summary("client error (Connect)\n"),
            "client error (Connect)"
        );
    }

    #[test]
    fn a_component_never_started_points_at_images() {
        let d = diagnose(
            "the API server",
            "timed out",
            &kubelet(true),
            &[facts("etcd", None, 0), facts("kube-apiserver", None, 0)],
        );
        assert!(d.contains("has not started etcd, kube-apiserver"), "{d}");
        assert!(d.contains("images ls"));
    }

    #[test]
    fn a_crashed_kubelet_is_shown_by_its_reason_not_its_stacks() {
        let journal = "I1121 10:15:53 server.go:416] Version: v1.20.2\n\
E1121 10:15:54 server.go:300] something before\n\
F1121 10:15:54 server.go:269] failed to run Kubelet: invalid kernel flag: vm/overcommit_memory\n\
goroutine 1 [running]:\n\
k8s.io/klog/v2.stacks(0x1)\n\
goroutine 2 [chan receive]:\n\
k8s.io/x.loop()\n\
kubelet.service: Main process exited, code=exited, status=255/EXCEPTION";
        let excerpt = journal_excerpt(journal);
        assert!(
            excerpt.contains("failed to run Kubelet: invalid kernel flag"),
            "{excerpt}"
        );
        assert!(excerpt.contains("something before"), "{excerpt}");
        assert!(!excerpt.contains("chan receive"), "{excerpt}");
        let repeated = "E1121 10:46:15 kubelet.go:2243] node \"x\" not found\n";
        let journal = format!(
            "E1121 10:46:01 pod_workers.go:191] sandbox failed\n{}",
            repeated.repeat(30)
        );
        let excerpt = journal_excerpt(&journal);
        assert_eq!(excerpt.lines().count(), 2, "{excerpt}");
        assert!(excerpt.contains("sandbox failed"), "{excerpt}");
        let plain: String = (0..40).map(|i| format!("line {i}\n")).collect();
        let excerpt = journal_excerpt(&plain);
        assert!(
            excerpt.starts_with("line 25") && excerpt.ends_with("line 39"),
            "{excerpt}"
        );
    }
}
