//! setup.sh: the first-boot script both boot config formats install.
//!
//! It is POSIX sh (`set -eu`), for every supported distribution. In order,
//! logging each step as `kprov-setup: step N/5: ...` on stderr (the journal
//! and the console):
//!
//! 1. if the success stamp ([`paths::SETUP_DONE`]) exists, it stops: the
//!    node is set up already;
//! 2. it fetches kprov from the `--provision-source` into a temporary file
//!    next to [`paths::KPROV_BINARY`], with curl (or wget where curl is
//!    missing) or cp for `file://`, retrying failed attempts — unless a
//!    binary with the pinned sha256 is in place already (a second run);
//! 3. it checks the sha256 pinned at render time **before** anything runs,
//!    and on a mismatch deletes the download and stops with a message
//!    naming the expected and the actual sum;
//! 4. it runs `kprov provision` with the node's flags, rendered from the
//!    same struct `kprov provision` parses them into
//!    ([`crate::BootSpec::provision_flags`], `NodeConfig::to_flags`), every
//!    value spelled out so that the fetched kprov does what was rendered
//!    whatever its own defaults; the bootstrap token is read from its 0600
//!    file into `KPROV_TOKEN` (never a command-line argument, which other
//!    users could read in /proc);
//! 5. it writes the stamp.
//!
//! The pinned values are assigned at the top in single quotes; the body
//! (`setup-body.sh`) is fixed text with no substitutions.
//!
//! Environment variables, for tests and debugging: `KPROV_SETUP_PREFIX`
//! (a directory prepended to the script's own paths: the binary, the token
//! file and the stamp), `KPROV_SETUP_ATTEMPTS` (default 5) and
//! `KPROV_SETUP_RETRY_DELAY` (seconds, default 10).

use std::fmt::Write as _;

use crate::paths;
use crate::shell::quote;
use crate::source::SourceKind;
use crate::BootSpec;

const BODY: &str = include_str!("setup-body.sh");

/// The text of setup.sh for `spec`.
pub fn render(spec: &BootSpec) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         # kprov setup: fetch kprov, verify its sha256, run `kprov provision`.\n\
         # Rendered by `kprov userdata`; run once at first boot, safe to run again.\n\
         # Test and debug overrides: KPROV_SETUP_PREFIX (prepended to this\n\
         # script's own paths), KPROV_SETUP_ATTEMPTS, KPROV_SETUP_RETRY_DELAY.\n\
         set -eu\n\
         umask 022\n\
         \n\
         # Pinned when this script was rendered.\n",
    );
    let source = &spec.provision_source;
    let source_path = match source.kind() {
        SourceKind::File { path } => path.as_str(),
        SourceKind::Http => "",
    };
    let _ = writeln!(s, "source_url={}", quote(source.url()));
    let _ = writeln!(s, "source_path={}", quote(source_path));
    let _ = writeln!(s, "want_sha256={}", quote(spec.provision_sha256.as_hex()));
    s.push_str("# The flags of kprov provision; the token goes in its environment.\n");
    // One flag and its value per line.
    let args: Vec<String> = spec
        .provision_flags()
        .iter()
        .map(|flag| {
            let words: Vec<String> = flag.words().iter().map(|w| quote(w)).collect();
            words.join(" ")
        })
        .collect();
    let _ = writeln!(s, "set -- \\\n    {}", args.join(" \\\n    "));
    s.push('\n');
    s.push_str("prefix=${KPROV_SETUP_PREFIX:-}\n");
    let _ = writeln!(s, "bin=$prefix{}", quote(paths::KPROV_BINARY));
    let _ = writeln!(s, "token_file=$prefix{}", quote(paths::TOKEN_FILE));
    let _ = writeln!(s, "stamp=$prefix{}", quote(paths::SETUP_DONE));
    s.push_str(BODY);
    s
}
