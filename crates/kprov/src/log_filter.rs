//! `--log-level` and `KPROV_LOG`: a level, or `tracing` filter directives
//! whose every level is one tracing knows. A bad value is an error, not a
//! silent fall back to the default.

use std::fmt;
use std::str::FromStr;

/// The levels a directive may name.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// What a filter must look like, for error messages.
pub const EXPECTED: &str =
    "expected error, warn, info, debug, trace, off or directives such as kprov=debug,warn";

/// A checked log filter: `LEVEL` or comma-separated `[TARGET=]LEVEL`
/// directives (targets may carry tracing's span filters,
/// `kprov[phase]=debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

/// Why a filter was refused; the caller names where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilterError {
    /// The value given.
    pub value: String,
}

impl fmt::Display for LogFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {EXPECTED}", self.value)
    }
}

impl std::error::Error for LogFilterError {}

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s))
}

impl FromStr for LogFilter {
    type Err = LogFilterError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let refuse = || LogFilterError {
            value: value.to_string(),
        };
        if value.chars().any(char::is_control) {
            return Err(refuse());
        }
        let mut directives = 0;
        for directive in value.split(',').map(str::trim) {
            if directive.is_empty() {
                continue;
            }
            directives += 1;
            // A bare word would be read by tracing as a target to log at
            // trace level: only levels may stand alone.
            let ok = match directive.rsplit_once('=') {
                None => is_level(directive),
                Some((target, level)) => {
                    !target.is_empty()
                        && !target.chars().any(|c| c.is_whitespace() || c == '=')
                        && is_level(level)
                }
            };
            if !ok {
                return Err(refuse());
            }
        }
        if directives == 0 || tracing_subscriber::EnvFilter::try_new(value).is_err() {
            return Err(refuse());
        }
        Ok(Self(value.to_string()))
    }
}

impl LogFilter {
    /// The filter text, for `tracing_subscriber::EnvFilter`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn levels_and_directives_are_accepted() {
        for good in [
            "error",
            "warn",
            "INFO",
            "debug",
            "trace",
            "off",
            "kprov=debug",
            "kprov=debug,warn",
            "warn,kube_client=off",
            "kprov_provision::apply=trace, info",
            "kprov[resource]=debug",
        ] {
            assert_eq!(good.parse::<LogFilter>().unwrap().as_str(), good);
        }
    }

    #[test]
    fn anything_else_is_refused_with_the_expected_forms() {
        for bad in [
            "bogus",
            "",
            ",",
            "kprov=loud",
            "=debug",
            "kprov=",
            "warn,bogus",
            "my target=debug",
            "kprov=debug\n",
            "info=info=info",
        ] {
            assert_eq!(
                bad.parse::<LogFilter>().unwrap_err().to_string(),
                format!("{bad:?}: {EXPECTED}"),
                "{bad:?}"
            );
        }
    }
}
