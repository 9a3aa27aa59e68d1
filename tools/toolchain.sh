#!/usr/bin/env bash
# Makes the compiler rust-toolchain.toml names available without a
# download (no internet here): when rustup does not have that toolchain
# but its default one is the same release, the default is linked under the
# pinned name. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

want=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
if rustup toolchain list | grep -q "^$want-"; then
    exit 0
fi
stable=$(rustup toolchain list | awk '/^stable-/ {print $1; exit}')
if [[ -z $stable ]]; then
    echo "toolchain: rust-toolchain.toml pins $want, rustup has neither it nor a stable toolchain" >&2
    exit 1
fi
dir=$(rustup run "$stable" rustc --print sysroot)
have=$("$dir/bin/rustc" --version | awk '{print $2}')
if [[ $have != "$want" ]]; then
    echo "toolchain: rust-toolchain.toml pins $want, but $stable is $have (and nothing can be downloaded here)" >&2
    exit 1
fi
# `rustup toolchain link` refuses release-like names; a toolchain is a
# directory under RUSTUP_HOME/toolchains, so link it there.
host=${stable#stable-}
ln -sfn "$dir" "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$want-$host"
echo "toolchain: linked $stable ($have) as $want-$host" >&2
