//! Disabling swap entries in /etc/fstab: commented out, never deleted.

/// The prefix kprov puts before a swap line it disables.
pub const DISABLED_PREFIX: &str = "#kprov-swap-off# ";

/// True when an fstab line mounts swap.
fn is_swap_line(line: &str) -> bool {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.is_empty() {
        return false;
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    fields.len() >= 3 && fields[2] == "swap"
}

/// `fstab` with every active swap line commented out; other lines, and
/// their order and spacing, unchanged.
pub fn disable_swap(fstab: &str) -> String {
    let mut out = String::with_capacity(fstab.len() + 64);
    for line in fstab.split_inclusive('\n') {
        if is_swap_line(line) {
            out.push_str(DISABLED_PREFIX);
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_lines_are_commented_and_the_rest_kept() {
        let fstab = "# /etc/fstab\nUUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n  UUID=2\tnone\tswap\tsw\t0\t0\n#/old none swap sw 0 0\n";
        let out = disable_swap(fstab);
        assert_eq!(
            out,
            "# /etc/fstab\nUUID=1 / ext4 defaults 0 1\n#kprov-swap-off# /swapfile none swap sw 0 0\n#kprov-swap-off#   UUID=2\tnone\tswap\tsw\t0\t0\n#/old none swap sw 0 0\n"
        );
        assert_eq!(disable_swap(&out), out, "idempotent");
    }

    #[test]
    fn a_last_line_without_newline_is_handled() {
        assert_eq!(
            disable_swap("/dev/sdb1 none swap sw"),
            "#kprov-swap-off# /dev/sdb1 none swap sw"
        );
    }
}
