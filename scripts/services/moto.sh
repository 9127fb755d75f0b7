#!/usr/bin/env bash
# Installs and runs moto's server (an AWS mock) on the loopback interface, as the AWS SSM
# Parameter Store of Berth's tests (Berth keeps its token signing keys in SSM), and as the SQS
# queues and KMS keys of replication's AWS tests.
#
#   moto.sh install     pip-installs moto[server] 5.2, unless moto's server already imports
#   moto.sh start DIR   installs if needed, starts a server keeping its log, PID and exports in
#                       DIR, waits until it answers HTTP, and prints an `export` line for it:
#                           eval "$(scripts/services/moto.sh start /tmp/berth-moto)"
#                       Starting a server that runs prints the same line again.
#   moto.sh stop DIR    stops the server started in DIR (by its PID) and waits for it to exit
#
# Everything but the `export` line goes to stderr. Only AWS_ENDPOINT_URL_SSM,
# AWS_ENDPOINT_URL_SQS and AWS_ENDPOINT_URL_KMS are exported (one server serves all three): moto
# accepts any credentials, and is told to accept any region too (Garage's is "garage"), so
# those of Garage and DynamoDB Local stay in force. Each region has its own parameters. The
# server listens on 127.0.0.1, unless MOTO_BIND_ADDR names another IPv4 address of this host,
# on a free port chosen at each start, and keeps its state in memory only.
set -euo pipefail

readonly MOTO_SPEC='moto[server]==5.2.*'
readonly BIND_ADDR=${MOTO_BIND_ADDR:-127.0.0.1}

log() { printf 'moto.sh: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

has_moto() {
    python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1
}

# The moto_server command, from PATH or where pip puts the interpreter's commands.
moto_bin() {
    local dir
    if command -v moto_server >/dev/null 2>&1; then
        command -v moto_server
        return
    fi
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
        "$(python3 -m site --user-base)/bin"; do
        if [[ -x $dir/moto_server ]]; then
            echo "$dir/moto_server"
            return
        fi
    done
    return 1
}

install() {
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to run moto"
    if has_moto && moto_bin >/dev/null; then
        log "moto's server is installed: $(moto_bin)"
        return
    fi
    log "installing $MOTO_SPEC with pip"
    python3 -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC" >&2
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
    has_moto || die "moto's server still does not import after pip install"
    moto_bin >/dev/null || die "moto_server is not on PATH nor in the interpreter's scripts directory"
}

# A TCP port nothing listens on now, on ADDR.
free_port() {
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"
}

# Whether the server whose PID is in DIR runs (and is moto, not a reused PID).
running() {
    local dir=$1 pid
    [[ -f $dir/moto.pid ]] || return 1
    pid=$(<"$dir/moto.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ ! -r /proc/$pid/cmdline ]] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'moto_server'
}

# Whether anything answers HTTP at URL (any status will do).
answers() {
    curl -sS -o /dev/null --max-time 2 "$1"
}

start() {
    local dir=$1 bin port pid endpoint
    install
    bin=$(moto_bin)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)

    if running "$dir"; then
        [[ -f $dir/env ]] || die "a server runs in $dir but never answered: stop it and start again"
        log "moto already runs in $dir (PID $(<"$dir/moto.pid"))"
        cat "$dir/env"
        return
    fi

    rm -f "$dir/env"
    port=$(free_port "$BIND_ADDR" 2>/dev/null) || die "cannot listen on $BIND_ADDR (MOTO_BIND_ADDR)"
    endpoint=http://$BIND_ADDR:$port
    log "starting moto on $BIND_ADDR:$port (log: $dir/moto.log)"
    MOTO_ALLOW_NONEXISTENT_REGION=true nohup "$bin" -H "$BIND_ADDR" -p "$port" >>"$dir/moto.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/moto.pid"

    local deadline=$((SECONDS + 60))
    until answers "$endpoint/" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/moto.pid"
            log "moto exited before it answered; the end of $dir/moto.log:"
            tail -n 30 "$dir/moto.log" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "moto did not answer on $endpoint within 60s; the end of $dir/moto.log:"
            tail -n 30 "$dir/moto.log" >&2
            stop "$dir"
            exit 1
        fi
        sleep 0.2
    done

    echo "export AWS_ENDPOINT_URL_SSM=$endpoint AWS_ENDPOINT_URL_SQS=$endpoint AWS_ENDPOINT_URL_KMS=$endpoint" >"$dir/env.tmp"
    mv "$dir/env.tmp" "$dir/env"
    log "moto is ready (PID $pid): SSM, SQS and KMS on $endpoint"
    cat "$dir/env"
}

stop() {
    local dir=$1 pid
    if ! running "$dir"; then
        log "no moto runs in $dir"
        rm -f "$dir/moto.pid"
        return
    fi
    pid=$(<"$dir/moto.pid")
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "moto (PID $pid) ignored SIGTERM for 30s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$dir/moto.pid" "$dir/env"
    log "moto (PID $pid) stopped"
}

case ${1:-} in
install)
    [[ $# -eq 1 ]] || usage
    install
    ;;
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
