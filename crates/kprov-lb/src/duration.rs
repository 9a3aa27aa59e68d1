//! Durations as flags take them: a whole number with a unit, `500ms`,
//! `2s`, `1m`.

use std::time::Duration;

/// Parses `NUMBERms`, `NUMBERs` or `NUMBERm` (more than zero).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("{text:?} is not a duration (expected a number with ms, s or m, e.g. 500ms)");
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|at| text.split_at(at))
        .ok_or_else(bad)?;
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{text:?}: the duration must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_have_a_number_and_a_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "500", "ms", "1.5s", "-1s", "1h", "1 s"] {
            assert_eq!(
                parse_duration(bad).unwrap_err(),
                format!(
                    "{bad:?} is not a duration (expected a number with ms, s or m, e.g. 500ms)"
                )
            );
        }
        assert_eq!(
            parse_duration("0s").unwrap_err(),
            "\"0s\": the duration must be more than zero"
        );
    }
}
