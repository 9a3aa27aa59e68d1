
attempts=${KPROV_SETUP_ATTEMPTS:-5}
retry_delay=${KPROV_SETUP_RETRY_DELAY:-10}

log() {
    printf 'kprov-setup: %s\n' "$*" >&2
}

fail() {
    printf 'kprov-setup: error: %s\n' "$*" >&2
    exit 1
}

case $attempts in
'' | *[!0-9]* | 0) fail "KPROV_SETUP_ATTEMPTS=$attempts: expected a whole number of at least 1" ;;
esac
case $retry_delay in
'' | *[!0-9]*) fail "KPROV_SETUP_RETRY_DELAY=$retry_delay: expected a whole number of seconds" ;;
esac

# Prints the sha256 of file $1 (read on stdin, so that no file name
# escaping can change sha256sum's output).
sha256_of() {
    sum=$(sha256sum <"$1") || return 1
    printf '%s\n' "${sum%% *}"
}

# Fetches kprov into $1, once.
fetch_once() {
    if [ -n "$source_path" ]; then
        cp "$source_path" "$1"
    elif command -v curl >/dev/null 2>&1; then
        curl --fail --silent --show-error --location --connect-timeout 20 \
            --max-time 900 --output "$1" "$source_url"
    else
        wget -q -T 20 -O "$1" "$source_url"
    fi
}

log "step 1/5: checking for an earlier successful run"
if [ -e "$stamp" ]; then
    log "$stamp exists: this node was set up already; nothing to do"
    exit 0
fi

log "step 2/5: fetching kprov from $source_url"
bin_dir=${bin%/*}
download=$bin_dir/.kprov.download
mkdir -p "$bin_dir"
if [ -f "$bin" ] && [ "$(sha256_of "$bin")" = "$want_sha256" ]; then
    log "$bin is in place with the pinned sha256 already; not fetching it again"
    have=$bin
else
    if [ -z "$source_path" ] && ! command -v curl >/dev/null 2>&1 &&
        ! command -v wget >/dev/null 2>&1; then
        fail "neither curl nor wget is installed: cannot fetch $source_url"
    fi
    rm -f "$download"
    n=1
    until fetch_once "$download"; do
        if [ "$n" -ge "$attempts" ]; then
            rm -f "$download"
            fail "could not fetch kprov from $source_url ($attempts attempts)"
        fi
        log "attempt $n of $attempts failed; retrying in ${retry_delay}s"
        n=$((n + 1))
        sleep "$retry_delay"
    done
    log "fetched on attempt $n"
    have=$download
fi

log "step 3/5: verifying the sha256 of kprov before running it"
got=$(sha256_of "$have") || fail "cannot compute the sha256 of $have: is sha256sum installed?"
if [ "$got" != "$want_sha256" ]; then
    rm -f "$download"
    fail "sha256 mismatch for kprov from $source_url: expected $want_sha256, got $got; refusing to run it"
fi
if [ "$have" = "$download" ]; then
    chmod 0755 "$download"
    mv -f "$download" "$bin"
fi
log "sha256 $got is the pinned one; kprov is $bin"

log "step 4/5: running kprov provision $*"
if [ -f "$token_file" ]; then
    KPROV_TOKEN=$(cat "$token_file")
    export KPROV_TOKEN
    log "the bootstrap token from $token_file is passed in the environment"
fi
status=0
"$bin" provision "$@" || status=$?
if [ "$status" -ne 0 ]; then
    fail "kprov provision failed with exit status $status (its messages are above); fix the cause and run $0 again"
fi

log "step 5/5: recording success in $stamp"
mkdir -p "${stamp%/*}"
printf '%s\n' "$want_sha256" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
log "done: kprov provision succeeded"
