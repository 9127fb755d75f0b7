#!/usr/bin/env bash
# Runs every Berth test: formatting and lints, unit, conformance and protocol tests, then the
# end-to-end suite with real docker, podman and skopeo against a `berth serve` it starts.
# Installs what it needs (idempotently) and stops everything it started, by PID.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# --- prerequisites -------------------------------------------------------------------------
need_packages=()
for tool in dockerd:docker.io podman:podman skopeo:skopeo jq:jq curl:curl; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_packages+=("${tool#*:}")
done
if ((${#need_packages[@]})); then
    step "installing ${need_packages[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# --- Rust: format, lints, unit/conformance/protocol tests ----------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test"
cargo test --workspace --all-features

# --- end to end with real clients ----------------------------------------------------------
step "building berth (release)"
cargo build --release -p berth

step "end-to-end suite: docker, podman, skopeo against berth serve"
BERTH_BIN="$root/target/release/berth" tests/e2e/berth.sh
