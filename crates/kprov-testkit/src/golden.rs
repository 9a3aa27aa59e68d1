//! Golden files: rendered output compared with a reviewed file under
//! `tests/golden/`. `KPROV_UPDATE_GOLDEN=1` rewrites the files instead;
//! review the diff before committing.

use std::path::Path;

/// Compares `got` with the golden file at `path` (or rewrites it when
/// KPROV_UPDATE_GOLDEN is set). Returns a description of the first
/// difference, for collecting several before failing.
pub fn compare(path: &Path, got: &str) -> Result<(), String> {
    if std::env::var_os("KPROV_UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return std::fs::write(path, got).map_err(|e| format!("{}: {e}", path.display()));
    }
    let want = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if want == got {
        return Ok(());
    }
    Err(format!(
        "{} differs:\n{}",
        path.display(),
        first_difference(&want, got)
    ))
}

fn first_difference(want: &str, got: &str) -> String {
    for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
        if w != g {
            return format!("line {}:\n  want: {w}\n  got:  {g}", i + 1);
        }
    }
    format!(
        "lengths differ: want {} lines, got {}",
        want.lines().count(),
        got.lines().count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_differing_line_is_shown() {
        assert_eq!(
            first_difference("a\nb\n", "a\nc\n"),
            "line 2:\n  want: b\n  got:  c"
        );
        assert_eq!(
            first_difference("a\n", "a\nb\n"),
            "lengths differ: want 1 lines, got 2"
        );
    }
}
