//! `kprov version`, `kprov completions` and `kprov man` from the command
//! line: what they print is checked by the tools that read it (bash runs
//! the completion function; zsh and fish parse their scripts when they are
//! installed, as tools/install-deps.sh does; groff reads the manual pages).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::process::Command;

use common::kprov;

/// The top-level commands `kprov --help` lists (without `help`).
fn commands() -> Vec<String> {
    let help = kprov(&["--help"], &[]);
    assert!(help.ok(), "{}", help.stderr);
    let mut names = Vec::new();
    let mut in_list = false;
    for line in help.stdout.lines() {
        if line == "Commands:" {
            in_list = true;
        } else if in_list && line.is_empty() {
            break;
        } else if in_list && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.split_whitespace().next().unwrap().to_string();
            if name != "help" {
                names.push(name);
            }
        }
    }
    assert!(names.len() > 10, "too few commands in --help: {names:?}");
    names
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(common::repo_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_as_json_names_the_version_the_commit_and_the_kubernetes_range() {
    let run = kprov(&["version", "--output", "json"], &[]);
    assert!(run.ok(), "{}", run.stderr);
    let json = run.json();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["git_commit", "git_tree_dirty", "kubernetes", "version"]
    );
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    let (oldest, newest) = (
        kprov_core::version::MINIMUM_SUPPORTED,
        kprov_core::version::NEWEST_KNOWN,
    );
    assert_eq!(
        json["kubernetes"],
        serde_json::json!({
            "oldest": format!("v{}.{}", oldest.major(), oldest.minor()),
            "newest": format!("v{}.{}", newest.major(), newest.minor()),
        })
    );
    let commit = json["git_commit"].as_str().unwrap();
    let dirty = json["git_tree_dirty"].as_bool().unwrap();
    assert_eq!(commit.ends_with("-dirty"), dirty, "{commit}");
    // Built from this checkout: the commit is its HEAD.
    if let Some(head) = git(&["rev-parse", "HEAD"]) {
        assert_eq!(commit.trim_end_matches("-dirty"), head);
    }
}

#[test]
fn version_as_text_and_dash_dash_version_agree_with_the_json() {
    let json = kprov(&["version", "--output", "json"], &[]).json();
    let text = kprov(&["version"], &[]);
    assert!(text.ok(), "{}", text.stderr);
    assert_eq!(
        text.stdout,
        format!(
            "kprov {}\ngit commit: {}\nKubernetes: {} to {}\n",
            json["version"].as_str().unwrap(),
            json["git_commit"].as_str().unwrap(),
            json["kubernetes"]["oldest"].as_str().unwrap(),
            json["kubernetes"]["newest"].as_str().unwrap()
        )
    );
    let flag = kprov(&["--version"], &[]);
    assert_eq!(
        flag.stdout,
        format!(
            "kprov {} (git {})\n",
            json["version"].as_str().unwrap(),
            json["git_commit"].as_str().unwrap()
        )
    );
}

#[test]
fn bash_completion_parses_and_completes_commands_and_flags() {
    let script = kprov(&["completions", "bash"], &[]);
    assert!(script.ok(), "{}", script.stderr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kprov.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // bash calls the function with the command, the word being completed
    // and the word before it.
    let complete = |words: &[&str]| -> Vec<String> {
        let cword = words.len() - 1;
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; _kprov kprov '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words[cword],
            words[cword - 1]
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(complete(&["kprov", "prov"]), ["provision"]);
    assert_eq!(complete(&["kprov", "compl"]), ["completions"]);
    assert_eq!(
        complete(&["kprov", "bundle", "create", "--no-im"]),
        ["--no-images"]
    );
    assert_eq!(
        complete(&["kprov", "version", "--output", ""]),
        ["text", "json"]
    );
    let every = complete(&["kprov", ""]);
    for command in commands() {
        assert!(every.contains(&command), "{command} not in {every:?}");
    }
}

#[test]
fn zsh_and_fish_completions_name_every_command_and_parse() {
    let commands = commands();
    for (shell, check) in [("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])] {
        let script = kprov(&["completions", shell], &[]);
        assert!(script.ok(), "{shell}: {}", script.stderr);
        assert!(!script.stdout.is_empty(), "{shell}: empty script");
        for command in &commands {
            assert!(
                script.stdout.contains(&format!("'{command}:"))
                    || script.stdout.contains(&format!("-a \"{command}\"")),
                "{shell}: no completion for {command}"
            );
        }
        // The shell parses its script, when installed (tools/install-deps.sh
        // installs both for tools/test.sh).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("kprov.{shell}"));
        std::fs::write(&path, &script.stdout).unwrap();
        match Command::new(check[0]).arg(check[1]).arg(&path).output() {
            Ok(out) => assert!(
                out.status.success(),
                "{shell} {}: {}",
                check[1],
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => println!("{shell} not installed ({e}): its script was not parsed"),
        }
    }
}

#[test]
fn an_unknown_shell_is_refused_naming_the_choices() {
    let run = kprov(&["completions", "tcsh"], &[]);
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr.contains("invalid value 'tcsh'")
            && run.stderr.contains("[possible values: bash, zsh, fish]"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

/// groff reads a page without a warning, and its text names what it must.
fn check_page(roff: &str, title: &str, must_name: &[&str]) {
    assert!(
        roff.lines()
            .find(|l| l.starts_with(".TH "))
            .is_some_and(|l| l.starts_with(&format!(".TH {title} 1 "))),
        "no .TH {title} 1 line:\n{roff}"
    );
    let mut groff = Command::new("groff")
        // Plain text (no overstrike), long lines and no hyphenation, so
        // that names can be searched for.
        .args(["-man", "-Tutf8", "-ww", "-rLL=300n", "-rHY=0", "-P-cbou"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    groff
        .stdin
        .take()
        .unwrap()
        .write_all(roff.as_bytes())
        .unwrap();
    let out = groff.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "groff on {title}: {stderr}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in must_name {
        assert!(text.contains(name), "{title}: {name:?} not in:\n{text}");
    }
}

#[test]
fn man_prints_the_main_page_naming_every_command() {
    let run = kprov(&["man"], &[]);
    assert!(run.ok(), "{}", run.stderr);
    let commands = commands();
    let mut must: Vec<&str> = vec!["NAME", "SYNOPSIS", "--log-level"];
    must.extend(commands.iter().map(String::as_str));
    check_page(&run.stdout, "kprov", &must);
}

#[test]
fn man_dir_writes_a_page_per_command_replacing_a_planted_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    std::fs::create_dir(&pages).unwrap();
    // A symlink at a page's name is replaced, never followed.
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&outside, pages.join("kprov-version.1")).unwrap();

    let run = kprov(&["man", "--dir", pages.to_str().unwrap()], &[]);
    assert!(run.ok(), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me\n");
    assert!(!pages
        .join("kprov-version.1")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());

    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for command in commands() {
        assert!(
            names.contains(&format!("kprov-{command}.1")),
            "no page for {command}: {names:?}"
        );
    }
    for nested in ["kprov-bundle-create.1", "kprov-token-list.1", "kprov.1"] {
        assert!(names.contains(&nested.to_string()), "{nested}: {names:?}");
    }
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("kprov") && n.ends_with(".1")),
        "{names:?}"
    );
    assert_eq!(
        run.stderr.trim(),
        format!("kprov man: {} pages in {}", names.len(), pages.display())
    );
    let provision = std::fs::read_to_string(pages.join("kprov-provision.1")).unwrap();
    check_page(
        &provision,
        "kprov-provision",
        &["--phase", "--root", "--dry-run"],
    );
}

#[test]
fn man_dir_that_does_not_exist_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let run = kprov(&["man", "--dir", missing.to_str().unwrap()], &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "kprov: error: --dir {}: creating {}/.",
            missing.display(),
            missing.display()
        )) && run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
    assert!(!missing.exists());
}
