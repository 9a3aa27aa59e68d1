#!/usr/bin/env bash
# Runs the whole test suite, as CI does: formatting and lint gates, unit and
# golden tests, CLI tests, and the tests that need root, a real Debian root,
# the Kubernetes v1.20.2 build and systemd-nspawn; then the benchmarks,
# which print figures. Installs what it needs (idempotently) first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "tools/test.sh: run as root: the tests build roots, chroot into them and boot containers" >&2
    exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n== %s\n' "$*" >&2; }

step "dependencies"
tools/install-deps.sh build root test vm images
tools/build-kubernetes.sh >/dev/null
tools/build-images.sh >/dev/null
tools/debian-root.sh node >/dev/null
tools/debian-root.sh vm >/dev/null
tools/debian-root.sh cloud >/dev/null
tools/artifacts-dir.sh >/dev/null

step "gates: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (including the ones that need root)"
# Tests that measure something as they go append BENCH lines here; the
# ones that time kprov (benchmarks, and the VM tests that compare it with
# kubeadm) use the release build.
export KPROV_BENCH_LOG KPROV_BENCH_BIN="$PWD/target/release/kprov"
KPROV_BENCH_LOG=$(mktemp /tmp/kprov-bench.XXXXXX)
trap 'rm -f "$KPROV_BENCH_LOG"' EXIT
cargo build --release --locked -p kprov
cargo test --workspace --locked -- --include-ignored --skip benchmark_

step "benchmarks (figures, not pass/fail on time)"
cargo test --locked -p kprov -- --ignored --nocapture --test-threads 1 benchmark_ 2>&1 |
    grep -oE 'BENCH.*|test result.*'
cat "$KPROV_BENCH_LOG"
