//! Crash points for fault tests.
//!
//! `KPROV_FAILPOINTS=name=N[,name=N...]` makes the process exit abruptly (no
//! destructors, no cleanup, exit status 86) on the N-th time it reaches the
//! failpoint `name`. The fault tests use it to kill an apply at exact points
//! and check that a re-run reaches the state of an uninterrupted run. Unset,
//! a failpoint is a cheap no-op.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// The exit status of a process stopped by a failpoint.
pub const FAILPOINT_EXIT_STATUS: i32 = 86;

struct Failpoints {
    armed: HashMap<String, u64>,
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

fn parse(spec: &str) -> HashMap<String, u64> {
    spec.split(',')
        .filter_map(|item| {
            let (name, n) = item.trim().split_once('=')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Marks that execution reached `name`; exits the process if this is the
/// armed hit.
pub fn hit(name: &str) {
    let fp = failpoints();
    let Some(&at) = fp.armed.get(name) else {
        return;
    };
    let mut hits = fp.hits.lock().unwrap_or_else(|e| e.into_inner());
    let count = hits.entry(name.to_string()).or_insert(0);
    *count += 1;
    if *count == at {
        eprintln!("kprov: failpoint {name} hit {at} time(s): exiting abruptly");
        std::process::exit(FAILPOINT_EXIT_STATUS);
    }
}

/// Marks a point where a test may make the current thread panic:
/// `KPROV_FAILPOINTS=name=panic:N` panics on the N-th time it is reached
/// (a server's supervision tests use it to check that a panicked task is
/// noticed). Unset, a cheap no-op.
pub fn panic_point(name: &str) {
    static ARMED: OnceLock<HashMap<String, u64>> = OnceLock::new();
    static HITS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("KPROV_FAILPOINTS")
            .ok()
            .map(|spec| parse_panics(&spec))
            .unwrap_or_default()
    });
    let Some(&at) = armed.get(name) else {
        return;
    };
    let count = {
        let mut hits = HITS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let count = hits.entry(name.to_string()).or_insert(0);
        *count += 1;
        *count
    };
    if count == at {
        panic!("failpoint {name} hit {at} time(s)");
    }
}

fn parse_panics(spec: &str) -> HashMap<String, u64> {
    spec.split(',')
        .filter_map(|item| {
            let (name, what) = item.trim().split_once('=')?;
            Some((name.to_string(), what.strip_prefix("panic:")?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_name_and_count() {
        let armed = parse("resource.applied=3, write.before-rename=1,bad,x=y");
        assert_eq!(armed.get("resource.applied"), Some(&3));
        assert_eq!(armed.get("write.before-rename"), Some(&1));
        assert_eq!(armed.len(), 2);
    }

    #[test]
    fn panic_specs_are_read_apart_from_exit_specs() {
        let spec = "a=panic:2,b=3,c=panic:x";
        assert_eq!(parse_panics(spec), HashMap::from([("a".to_string(), 2)]));
        assert_eq!(parse(spec), HashMap::from([("b".to_string(), 3)]));
    }
}
