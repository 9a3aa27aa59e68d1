//! Crash and pause points for fault tests.
//!
//! `KPROV_FAILPOINTS=name=N[,name=N...]` makes the process exit abruptly (no
//! destructors, no cleanup, exit status 86) on the N-th time it reaches the
//! failpoint `name`. The fault tests use it to kill an apply at exact points
//! and check that a re-run reaches the state of an uninterrupted run.
//!
//! `name=pause:FILE` instead stops the process the first time it reaches
//! `name`: it creates `FILE.paused`, then waits until `FILE` exists (at most
//! 120 s) and goes on. Tests use it to change the world at an exact point,
//! e.g. to swap an artifact between its verification and its use.
//!
//! Unset, a failpoint is a cheap no-op.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The exit status of a process stopped by a failpoint.
pub const FAILPOINT_EXIT_STATUS: i32 = 86;

/// How long a paused process waits for its test.
const PAUSE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Exit on the N-th hit.
    ExitAt(u64),
    /// Pause on the first hit until the file exists.
    Pause(PathBuf),
}

struct Failpoints {
    armed: HashMap<String, Action>,
    hits: Mutex<HashMap<String, u64>>,
}

fn failpoints() -> &'static Failpoints {
    static FAILPOINTS: OnceLock<Failpoints> = OnceLock::new();
    FAILPOINTS.get_or_init(|| {
        let armed = std::env::var("KPROV_FAILPOINTS")
            .ok()
            .map(|spec| parse(&spec))
            .unwrap_or_default();
        Failpoints {
            armed,
            hits: Mutex::new(HashMap::new()),
        }
    })
}

fn parse(spec: &str) -> HashMap<String, Action> {
    spec.split(',')
        .filter_map(|item| {
            let (name, what) = item.trim().split_once('=')?;
            let action = match what.strip_prefix("pause:") {
                Some(file) if !file.is_empty() => Action::Pause(file.into()),
                Some(_) => return None,
                None => Action::ExitAt(what.parse().ok()?),
            };
            Some((name.to_string(), action))
        })
        .collect()
}

/// Marks that execution reached `name`; exits or pauses the process if
/// this hit is armed.
pub fn hit(name: &str) {
    let fp = failpoints();
    let Some(action) = fp.armed.get(name) else {
        return;
    };
    let count = {
        let mut hits = fp.hits.lock().unwrap_or_else(|e| e.into_inner());
        let count = hits.entry(name.to_string()).or_insert(0);
        *count += 1;
        *count
    };
    match action {
        Action::ExitAt(at) if count == *at => {
            eprintln!("kprov: failpoint {name} hit {at} time(s): exiting abruptly");
            std::process::exit(FAILPOINT_EXIT_STATUS);
        }
        Action::Pause(file) if count == 1 => {
            let mut marker = file.clone().into_os_string();
            marker.push(".paused");
            eprintln!(
                "kprov: failpoint {name}: paused until {} exists",
                file.display()
            );
            if let Err(e) = std::fs::write(&marker, name) {
                eprintln!("kprov: failpoint {name}: cannot write {marker:?}: {e}");
            }
            let start = Instant::now();
            while !file.exists() && start.elapsed() < PAUSE_LIMIT {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_name_and_action() {
        let armed =
            parse("resource.applied=3, write.before-rename=1,bad,x=y,p=pause:/tmp/go,q=pause:");
        assert_eq!(armed.get("resource.applied"), Some(&Action::ExitAt(3)));
        assert_eq!(armed.get("write.before-rename"), Some(&Action::ExitAt(1)));
        assert_eq!(armed.get("p"), Some(&Action::Pause("/tmp/go".into())));
        assert_eq!(armed.len(), 3);
    }
}
