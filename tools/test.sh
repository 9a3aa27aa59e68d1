#!/usr/bin/env bash
# Runs the test suite.
#
#   tools/test.sh          everything, as CI does: the gates (cargo fmt
#                          --check, cargo clippy -D warnings, shellcheck),
#                          unit and golden tests, CLI tests, and the tests
#                          that need a real Debian root, the Kubernetes
#                          v1.20.2 build, systemd-nspawn and qemu VMs (the
#                          #[ignore]d ones; the qemu ones, tests/*_vm.rs,
#                          in a lane beside the rest); then the benchmarks,
#                          which print figures. VM and nspawn tests run
#                          the static release binary.
#   tools/test.sh --fast   the gates and the tests that need neither a real
#                          root nor VMs (unit, golden, CLI tests), in
#                          minutes; no #[ignore]d test runs.
#
# Installs what it needs (idempotently) first: --fast only shellcheck and
# the shells and groff the completion and manual tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=0
case "${1:-}" in
"") ;;
--fast) fast=1 ;;
*)
    echo "usage: tools/test.sh [--fast]" >&2
    exit 2
    ;;
esac

if [[ $EUID -ne 0 ]]; then
    echo "tools/test.sh: run as root: the CLI tests write root-owned files into synthetic roots, and the full suite builds roots, chroots into them and boots containers and VMs" >&2
    exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"
# One build from scratch gains nothing from incremental state (gigabytes).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

# Each step says when it starts (seconds into the run): where CI time goes.
step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS" >&2; }

# The least free space seen on the disks the run writes to (the work tree,
# the test roots in /var/tmp, the caches in /var/cache), sampled every 5 s:
# a full disk fails tests far from its cause, so the run reports its margin.
disk_log=$(mktemp /tmp/kprov-disk.XXXXXX)
free_mib() { df -B1M --output=avail "$PWD" /var/tmp /var/cache | awk 'NR > 1 && (m == "" || $1 < m) {m = $1} END {print m}'; }
echo "start $(free_mib)" >"$disk_log"
(while sleep 5; do free_mib; done >>"$disk_log") &
disk_sampler=$!
disk_report() {
    kill "$disk_sampler" 2>/dev/null || true
    echo "== done (at $SECONDS s)" >&2
    awk 'NR == 1 {start = $2; least = $2; next} $1 < least {least = $1}
        END {printf "disk: %.1f GiB free at the start, %.1f GiB at the least (%.1f GiB used at the peak)\n", start / 1024, least / 1024, (start - least) / 1024}' "$disk_log" >&2
    rm -f "$disk_log"
}
trap disk_report EXIT

step "dependencies"
if [[ $fast -eq 1 ]]; then
    tools/install-deps.sh fast
else
    tools/install-deps.sh build root test vm images
    tools/build-kubernetes.sh >/dev/null
    tools/build-images.sh >/dev/null
    tools/debian-root.sh node >/dev/null
    tools/debian-root.sh vm >/dev/null
    tools/debian-root.sh cloud >/dev/null
    tools/artifacts-dir.sh >/dev/null
fi

step "gates: cargo fmt --check, cargo clippy -D warnings, shellcheck, no network stack in the pure crates"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
shellcheck tools/*.sh .ci/run
tools/pure-crates.sh

if [[ $fast -eq 1 ]]; then
    step "unit, golden and CLI tests (no #[ignore]d ones)"
    cargo test --workspace --locked
    exit 0
fi

step "the static release binary"
# .cargo/config.toml builds for the gnu target with +crt-static; every VM
# and nspawn test runs this binary, and the benchmarks measure it.
cargo build --release --locked -p kprov
export KPROV_RELEASE_BIN KPROV_BENCH_LOG
KPROV_RELEASE_BIN=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/kprov
file "$KPROV_RELEASE_BIN" >&2

# Tests that measure something as they go append BENCH lines here.
KPROV_BENCH_LOG=$(mktemp /tmp/kprov-bench.XXXXXX)

# Two lanes side by side. The qemu lane runs the tests that boot VMs (they
# live in crates/kprov/tests/*_vm.rs), one test binary at a time, so that
# no more than two VMs run (each takes a core under TCG); a VM leaves the
# other core mostly idle, so everything else (nspawn clusters, network
# namespaces, unit tests) runs beside it in the main lane.
vm_tests=()
main_tests=()
for file in crates/kprov/tests/*.rs; do
    name=$(basename "$file" .rs)
    case "$name" in
    *_vm) vm_tests+=(--test "$name") ;;
    *) main_tests+=(--test "$name") ;;
    esac
done
vm_log=$(mktemp /tmp/kprov-vm-lane.XXXXXX)
trap 'rm -f "$KPROV_BENCH_LOG" "$vm_log"; disk_report' EXIT

step "tests (including the ones that need root), in two lanes: qemu VMs, and everything else; each lane's benchmarks after its tests"
cargo test --workspace --locked --no-run
# Each lane runs its benchmarks (figures, not pass/fail on time) after
# its tests, one at a time; a main-lane benchmark may thus share the
# machine with a VM of the other lane: its ratios compare two programs
# measured under the same load.
benchmarks() {
    cargo test --locked -p kprov "$@" -- --ignored --nocapture --test-threads 1 benchmark_ 2>&1 |
        grep -oE 'BENCH.*|test result.*'
}
(
    cargo test --locked --no-fail-fast -p kprov "${vm_tests[@]}" -- --include-ignored --skip benchmark_ || exit 1
    echo "== the qemu lane's benchmarks"
    benchmarks "${vm_tests[@]}"
) >"$vm_log" 2>&1 &
vm_lane=$!
failed=0
cargo test --workspace --exclude kprov --locked --no-fail-fast -- --include-ignored --skip benchmark_ || failed=1
cargo test --locked --no-fail-fast -p kprov --bins "${main_tests[@]}" -- --include-ignored --skip benchmark_ || failed=1
if [[ $failed -eq 0 ]]; then
    step "the main lane's benchmarks"
    benchmarks "${main_tests[@]}" || failed=1
fi
wait "$vm_lane" || failed=1
echo "== the qemu lane's output (at $SECONDS s)" >&2
cat "$vm_log"
if [[ $failed -ne 0 ]]; then
    echo "tools/test.sh: a test failed (the qemu lane's output is after the main lane's)" >&2
    exit 1
fi

step "figures the tests printed as they went"
cat "$KPROV_BENCH_LOG"
