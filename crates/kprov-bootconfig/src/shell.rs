//! Quoting for POSIX sh.

/// `value` as one POSIX sh word: in single quotes, with each `'` written
/// as `'\''`. Nothing inside single quotes is special to the shell.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_come_back_unchanged_from_a_real_shell() {
        let cases = [
            "plain",
            "",
            "it's",
            "$(touch /tmp/pwned) `x` $HOME \\ \" ;|&<>*?[]{}~#",
            "two\nlines",
            "'",
            "''",
        ];
        for value in cases {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(value)))
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
    }
}
