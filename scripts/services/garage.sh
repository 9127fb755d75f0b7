#!/usr/bin/env bash
# Installs and runs a one-node Garage (an S3-compatible object store) on the loopback
# interface, for the tests of Berth's S3 blob store.
#
#   garage.sh install     cargo-installs garage 2.5.0, unless that version is already there
#   garage.sh start DIR   starts a node keeping its data, config, log and PID in DIR, creates a
#                         key and a bucket the first time, and prints `export` lines for them:
#                             eval "$(scripts/services/garage.sh start /tmp/berth-garage)"
#                         Starting a node that runs prints the same lines again.
#   garage.sh stop DIR    stops the node started in DIR (by its PID) and waits for it to exit
#
# Everything but the `export` lines goes to stderr. Every port is on 127.0.0.1, unless
# GARAGE_BIND_ADDR names another IPv4 address of this host for the S3 API (the RPC and admin
# ports stay on 127.0.0.1): tests/sam/run.sh gives Docker's bridge gateway address, which both
# the host and SAM's function containers reach. The address is written into the node's config
# when DIR is first set up; later starts of DIR keep it.
set -euo pipefail

readonly GARAGE_VERSION=2.5.0
readonly BUCKET=berth-test
readonly KEY_NAME=berth-test
# Garage's default `s3_region`; requests must be signed for it.
readonly REGION=garage
readonly S3_BIND_ADDR=${GARAGE_BIND_ADDR:-127.0.0.1}

log() { printf 'garage.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# The garage binary, from PATH or where cargo installs it.
garage_bin() {
    if command -v garage >/dev/null 2>&1; then
        command -v garage
    elif [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/garage ]]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage"
    else
        return 1
    fi
}

has_wanted_version() {
    local bin
    bin=$(garage_bin) || return 1
    "$bin" --version 2>/dev/null | grep -Eq "(^|[^0-9.])v?${GARAGE_VERSION//./\\.}([^0-9.]|$)"
}

install() {
    if has_wanted_version; then
        log "garage $GARAGE_VERSION is installed: $(garage_bin)"
        return
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install garage"
    log "installing garage $GARAGE_VERSION with cargo (this takes a while)"
    nice cargo install garage --version "$GARAGE_VERSION" --locked >&2
    has_wanted_version || die "garage $GARAGE_VERSION is still not on PATH or in ~/.cargo/bin"
}

# A TCP port nothing listens on now, on ADDR (default 127.0.0.1).
free_port() {
    local addr=${1:-127.0.0.1}
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$addr"
        return
    fi
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (: <"/dev/tcp/$addr/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "no free port found"
}

random_hex() {
    local bytes=$1
    if command -v openssl >/dev/null 2>&1; then
        openssl rand -hex "$bytes"
    else
        python3 -c "import secrets; print(secrets.token_hex($bytes))"
    fi
}

write_config() {
    local dir=$1
    local rpc_port s3_port admin_port
    rpc_port=$(free_port)
    s3_port=$(free_port "$S3_BIND_ADDR")
    admin_port=$(free_port)
    (
        umask 077
        cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"

replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "$S3_BIND_ADDR:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$(random_hex 32)"
EOF
    )
}

# The address:port of the listener in the config's `[section]` (its `api_bind_addr`).
section_addr() {
    local dir=$1 section=$2
    sed -n "/^\[$section\]/,/^\[/s/^api_bind_addr *= *\"\([0-9.]*:[0-9]*\)\"$/\1/p" "$dir/garage.toml"
}

# The port of the listener in the config's `[section]`.
section_port() {
    local addr
    addr=$(section_addr "$@")
    echo "${addr##*:}"
}

# Whether the node whose PID is in DIR runs (and is garage, not a reused PID).
running() {
    local dir=$1 pid
    [[ -f $dir/garage.pid ]] || return 1
    pid=$(<"$dir/garage.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ ! -r /proc/$pid/comm ]] || [[ $(</proc/"$pid"/comm) == garage* ]]
}

# Runs a command until it succeeds, for up to `seconds`.
wait_for() {
    local what=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what"
        sleep 0.5
    done
}

healthy() {
    local dir=$1
    curl -fsS --max-time 2 "http://127.0.0.1:$(section_port "$dir" admin)/health"
}

# Lays out the single node, then creates the key and the bucket, and records the exports.
configure() {
    local dir=$1 bin=$2
    local garage=("$bin" -c "$dir/garage.toml")
    local node key_json key_id secret
    # Each step checks first, so that a setup cut short can simply be run again.
    if ! "${garage[@]}" layout show 2>/dev/null | grep -q '^Current cluster layout version: [1-9]'; then
        node=$("${garage[@]}" node id -q 2>/dev/null)
        "${garage[@]}" layout assign -z local -c 1G "${node%%@*}" >&2
        "${garage[@]}" layout apply --version 1 >&2
    fi
    wait_for "the cluster to be healthy" 60 healthy "$dir"

    key_json=$("${garage[@]}" json-api CreateKey "{\"name\": \"$KEY_NAME\"}")
    key_id=$(sed -n 's/^ *"accessKeyId": *"\([^"]*\)".*/\1/p' <<<"$key_json")
    secret=$(sed -n 's/^ *"secretAccessKey": *"\([^"]*\)".*/\1/p' <<<"$key_json")
    [[ -n $key_id && -n $secret ]] || die "could not read the new key from: $key_json"

    if ! "${garage[@]}" bucket info "$BUCKET" >/dev/null 2>&1; then
        "${garage[@]}" bucket create "$BUCKET" >&2
    fi
    "${garage[@]}" bucket allow --read --write --owner "$BUCKET" --key "$key_id" >&2

    (
        umask 077
        cat >"$dir/env.tmp" <<EOF
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=$REGION
export AWS_ENDPOINT_URL_S3=http://$(section_addr "$dir" s3_api)
export BERTH_TEST_S3_BUCKET=$BUCKET
EOF
    )
    mv "$dir/env.tmp" "$dir/env"
}

start() {
    local dir=$1 bin
    bin=$(garage_bin) || die "garage is not installed: run $0 install"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    if running "$dir"; then
        [[ -f $dir/env ]] || die "a node runs in $dir but was never set up: stop it and start again"
        log "garage already runs in $dir (PID $(<"$dir/garage.pid"))"
        cat "$dir/env"
        return
    fi

    [[ -f $dir/garage.toml ]] || write_config "$dir"
    log "starting garage in $dir (log: $dir/garage.log)"
    nohup "$bin" -c "$dir/garage.toml" server >>"$dir/garage.log" 2>&1 </dev/null &
    echo $! >"$dir/garage.pid"
    wait_for "garage to answer on its RPC port" 60 "$bin" -c "$dir/garage.toml" status
    running "$dir" || die "garage exited; see $dir/garage.log"

    [[ -f $dir/env ]] || configure "$dir" "$bin"
    wait_for "the cluster to be healthy" 60 healthy "$dir"
    log "garage is ready: S3 on $(section_addr "$dir" s3_api), bucket $BUCKET"
    cat "$dir/env"
}

stop() {
    local dir=$1 pid
    if ! running "$dir"; then
        log "no garage runs in $dir"
        rm -f "$dir/garage.pid"
        return
    fi
    pid=$(<"$dir/garage.pid")
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "garage (PID $pid) ignored SIGTERM for 30s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$dir/garage.pid"
    log "garage (PID $pid) stopped"
}

case ${1:-} in
install) install ;;
start)
    [[ $# -eq 2 ]] || usage
    start "$2"
    ;;
stop)
    [[ $# -eq 2 ]] || usage
    stop "$2"
    ;;
*) usage ;;
esac
