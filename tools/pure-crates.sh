#!/usr/bin/env bash
# Gate: the crates that plan, render and decide link no network stack
# (the kube-core / kube-client split is the model). Only kprov-fetch,
# kprov-resolve, kprov-kube, kprov-netboot, kprov-workflow and the CLI may
# pull in an HTTP client, an async runtime or a DNS resolver.
set -euo pipefail
cd "$(dirname "$0")/.."
pure=(kprov-core kprov-host kprov-plan kprov-artifacts kprov-provision kprov-bootconfig kprov-pki kprov-controlplane kprov-image)
network='^(reqwest|oci-client|tokio|hyper|hyper-util|kube-client|hickory-resolver|hickory-proto) '
status=0
for crate in "${pure[@]}"; do
    tree=$(cargo tree --locked -p "$crate" -e normal --prefix none)
    found=$(grep -E "$network" <<<"$tree" | cut -d' ' -f1 | sort -u | tr '\n' ' ' || true)
    if [[ -n $found ]]; then
        echo "pure-crates: $crate links $found(it must not: move the code that needs them to a crate beside it)" >&2
        status=1
    fi
done
exit "$status"
