# shellcheck shell=bash
# Shared helpers for Berth's end-to-end tests.
#
# Source this file from a script that runs with `set -euo pipefail`, then call
# e2e_init once. Everything started through these helpers is registered with
# on_exit and stopped by PID when the script exits, whether it passed or not.
#
# Environment knobs:
#   E2E_KEEP_TMP=1        keep the scratch directory (its path is printed)
#   E2E_REGISTRY_LOG=FILE copy the Distribution log there when it stops

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_TMP=""
E2E_RESULTS=""
_E2E_CLEANUPS=()

# --- logging -----------------------------------------------------------------

log_step() { printf '\n==> %s\n' "$*"; }
log_info() { printf '    %s\n' "$*"; }
log_warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Print a command, then run it with its output shown.
run() {
  printf '    $ %s\n' "$*"
  "$@"
}

# run_to FILE CMD...: like run, but also keeps stdout+stderr in FILE.
run_to() {
  local out=$1
  shift
  printf '    $ %s\n' "$*"
  "$@" 2>&1 | tee "$out" | sed 's/^/      | /'
}

require_cmds() {
  local c missing=()
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  ((${#missing[@]} == 0)) || die "missing required commands: ${missing[*]}"
}

# --- lifecycle ---------------------------------------------------------------

# on_exit CMD: run CMD (a string, eval'd) at exit; last registered runs first.
on_exit() { _E2E_CLEANUPS+=("$*"); }

_e2e_cleanup() {
  local rc=$? i
  set +e
  for ((i = ${#_E2E_CLEANUPS[@]} - 1; i >= 0; i--)); do
    eval "${_E2E_CLEANUPS[i]}"
  done
  exit "$rc"
}

_e2e_remove_tmp() {
  if [[ ${E2E_KEEP_TMP:-0} == 1 ]]; then
    log_info "keeping scratch directory $E2E_TMP" >&2
  else
    rm -rf "$E2E_TMP"
  fi
}

# Create the per-run scratch directory and install the exit/signal traps.
e2e_init() {
  E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/berth-e2e.XXXXXX")
  E2E_RESULTS=$E2E_TMP/results
  : >"$E2E_RESULTS"
  export E2E_TMP
  trap _e2e_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  on_exit _e2e_remove_tmp
}

# Print a free TCP port on 127.0.0.1 (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_http URL [TIMEOUT_SECONDS [PID]]: wait until URL answers with any
# status below 500 (a registry's /v2/ may legitimately answer 401); give up
# early if PID is given and that process has exited. Returns 1 on failure.
wait_for_http() {
  local url=$1 timeout=${2:-30} pid=${3:-} code="" deadline
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [[ ! $code =~ ^[1-4][0-9][0-9]$ ]] || return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      log_warn "process $pid exited before $url answered"
      return 1
    fi
    sleep 0.3
  done
  log_warn "no HTTP answer from $url within ${timeout}s (last status: ${code:-none})"
  return 1
}

# stop_pid PID NAME: SIGTERM, wait up to 30 s, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log_warn "$name (pid $pid) ignored SIGTERM, killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# --- docker ------------------------------------------------------------------

DOCKERD_PID=""

# Start a private dockerd (own socket, data root, exec root, pidfile, config)
# and point the docker CLI at it through DOCKER_HOST.
start_dockerd() {
  local dir=$E2E_TMP/dockerd major i
  mkdir -p "$dir/client"
  echo '{}' >"$dir/client/config.json" # podman also reads $DOCKER_CONFIG/config.json
  # Docker < 23 writes a trust key to /etc/docker/key.json unless told otherwise.
  major=$(dockerd --version | sed -E 's/^Docker version ([0-9]+).*/\1/')
  if [[ $major =~ ^[0-9]+$ ]] && ((major < 23)); then
    printf '{"deprecated-key-path": "%s"}\n' "$dir/key.json" >"$dir/daemon.json"
  else
    echo '{}' >"$dir/daemon.json"
  fi
  dockerd \
    --host "unix://$dir/docker.sock" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" \
    --config-file "$dir/daemon.json" \
    --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
    >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  on_exit stop_dockerd
  export DOCKER_HOST="unix://$dir/docker.sock"
  export DOCKER_CONFIG="$dir/client" # keep ~/.docker out of it
  export DOCKER_BUILDKIT=0           # classic builder: no buildx needed
  for ((i = 0; i < 120; i++)); do
    if docker info >/dev/null 2>&1; then
      log_info "dockerd pid $DOCKERD_PID on $DOCKER_HOST"
      return 0
    fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 20 "$dir/dockerd.log" >&2
  die "dockerd did not come up (log: $dir/dockerd.log)"
}

stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  stop_pid "$DOCKERD_PID" dockerd
  DOCKERD_PID=""
}

# --- podman / skopeo ---------------------------------------------------------

E2E_PODMAN_DIR=""

# Private podman store: vfs driver under the scratch dir, system store untouched.
setup_podman() {
  E2E_PODMAN_DIR=$E2E_TMP/podman
  mkdir -p "$E2E_PODMAN_DIR/tmp"
}

pm() {
  podman --root "$E2E_PODMAN_DIR/root" --runroot "$E2E_PODMAN_DIR/run" \
    --storage-driver vfs --tmpdir "$E2E_PODMAN_DIR/tmp" --events-backend none "$@"
}

sk() { skopeo --tmpdir "$E2E_TMP" "$@"; }

# --- CNCF Distribution (reference registry) -----------------------------------

DISTRIBUTION_PID=""
DISTRIBUTION_ADDR=""
DISTRIBUTION_LOG=""

# start_distribution [PORT [NAME]]: start /usr/bin/docker-registry on 127.0.0.1:PORT (default:
# a free port) with filesystem storage in $E2E_TMP/NAME (default: distribution); sets
# DISTRIBUTION_ADDR (host:port) and DISTRIBUTION_PID. Only the default instance is stopped
# by stop_distribution; another NAME is stopped by PID at exit.
# shellcheck disable=SC2120 # the arguments are optional
start_distribution() {
  local port=${1:-} name=${2:-distribution}
  local dir=$E2E_TMP/$name
  mkdir -p "$dir/data"
  [[ -n $port ]] || port=$(free_port)
  DISTRIBUTION_ADDR=127.0.0.1:$port
  DISTRIBUTION_LOG=$dir/registry.log
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $DISTRIBUTION_ADDR
EOF
  # REGISTRY_* variables would override the config file, so drop them.
  (
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^REGISTRY_' || true)
    exec /usr/bin/docker-registry serve "$dir/config.yml"
  ) >"$DISTRIBUTION_LOG" 2>&1 &
  DISTRIBUTION_PID=$!
  if [[ $name == distribution ]]; then
    on_exit stop_distribution
  else
    on_exit "stop_pid $DISTRIBUTION_PID docker-registry"
  fi
  wait_for_http "http://$DISTRIBUTION_ADDR/v2/" 30 "$DISTRIBUTION_PID" ||
    die "distribution did not start; log:$(printf '\n'; tail -n 20 "$DISTRIBUTION_LOG")"
  log_info "distribution pid $DISTRIBUTION_PID on $DISTRIBUTION_ADDR"
}

stop_distribution() {
  [[ -n $DISTRIBUTION_PID ]] || return 0
  stop_pid "$DISTRIBUTION_PID" docker-registry
  DISTRIBUTION_PID=""
  if [[ -n ${E2E_REGISTRY_LOG:-} ]]; then
    cp "$DISTRIBUTION_LOG" "$E2E_REGISTRY_LOG"
    log_info "registry log copied to $E2E_REGISTRY_LOG" >&2
  fi
}

# --- Berth ---------------------------------------------------------------------

BERTH_PID=""
BERTH_ADDR=""

# start_berth BINARY: `BINARY serve --listen 127.0.0.1:PORT --data-dir DIR`;
# sets BERTH_ADDR (host:port). Its output goes to $E2E_TMP/berth/berth.log.
start_berth() {
  local bin=$1 dir=$E2E_TMP/berth
  mkdir -p "$dir/data"
  BERTH_ADDR=127.0.0.1:$(free_port)
  "$bin" serve --listen "$BERTH_ADDR" --data-dir "$dir/data" >"$dir/berth.log" 2>&1 &
  BERTH_PID=$!
  on_exit stop_berth
  wait_for_http "http://$BERTH_ADDR/v2/" 30 "$BERTH_PID" ||
    die "berth did not start; log:$(printf '\n'; tail -n 20 "$dir/berth.log")"
  log_info "berth pid $BERTH_PID on $BERTH_ADDR"
}

stop_berth() {
  [[ -n $BERTH_PID ]] || return 0
  stop_pid "$BERTH_PID" berth
  BERTH_PID=""
}

# with_registry ADDR PID [serve | CMD...]: the tail of distribution.sh and
# berth.sh. No argument runs run.sh against ADDR; `serve` waits on PID;
# anything else is run as a command with REGISTRY=ADDR exported.
with_registry() {
  local addr=$1 pid=$2
  shift 2
  export REGISTRY=$addr
  case ${1:-} in
    "") "$E2E_DIR/run.sh" "$addr" ;;
    serve)
      log_info "serving on http://$addr/; Ctrl-C to stop"
      wait "$pid"
      ;;
    *) "$@" ;;
  esac
}

# --- wire helpers (the Lambda and SAM suites) ----------------------------------

size_of() { stat -c %s "$1"; }
now_ms() { date +%s%3N; }

# req METHOD URL OUT [CURL ARGS...]: one request; headers in OUT.headers, body in OUT.body;
# prints the status code. Bounded by CURL_TIMEOUT seconds (default 60).
req() {
  local method=$1 url=$2 out=$3
  shift 3
  local how=(-X "$method")
  [[ $method != HEAD ]] || how=(--head)
  curl -sS --max-time "${CURL_TIMEOUT:-60}" "${how[@]}" -D "$out.headers" -o "$out.body" \
    -w '%{http_code}' "$@" "$url"
}

# header FILE NAME: the value of the last NAME header in a headers file (case-insensitive).
header() {
  awk -v name="${2,,}" '
    { sub(/\r$/, "") }
    index($0, ":") { n = tolower(substr($0, 1, index($0, ":") - 1)); if (n == name) { v = substr($0, index($0, ":") + 1); sub(/^[ \t]+/, "", v) } }
    END { print v }' "$1"
}

# with_digest LOCATION DIGEST: the upload LOCATION with `digest=DIGEST` added to its query.
with_digest() { if [[ $1 == *\?* ]]; then echo "$1&digest=$2"; else echo "$1?digest=$2"; fi; }

# show_log NAME FILE [LINES]: the end of a process's log, for a failure report.
show_log() {
  [[ -s $2 ]] || return 0
  printf '\n--- last lines of the %s log (%s) ---\n' "$1" "$2" >&2
  tail -n "${3:-25}" "$2" >&2
}

# --- checks ------------------------------------------------------------------
# Every check records one PASS or FAIL line in $E2E_RESULTS. A failing check
# prints what was expected and what was found, then exits (ending the scenario).

pass() {
  [[ -z $E2E_RESULTS ]] || printf 'PASS %s\n' "$*" >>"$E2E_RESULTS"
  printf '    ok: %s\n' "$*"
}

fail() {
  [[ -z $E2E_RESULTS ]] || printf 'FAIL %s\n' "$1" >>"$E2E_RESULTS"
  printf '    FAIL: %s\n' "$1" >&2
  shift
  local line
  for line in "$@"; do printf '          %s\n' "$line" >&2; done
  exit 1
}

# assert_eq DESC EXPECTED ACTUAL
assert_eq() {
  if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1" "expected: '$2'" "actual:   '$3'"; fi
}

# assert_ne DESC UNEXPECTED ACTUAL
assert_ne() {
  if [[ $2 != "$3" ]]; then pass "$1"; else fail "$1" "expected anything but: '$2'"; fi
}

# assert_contains DESC HAYSTACK NEEDLE (plain substring)
assert_contains() {
  if [[ $2 == *"$3"* ]]; then pass "$1"; else fail "$1" "expected to contain: '$3'" "actual: '$2'"; fi
}

# assert_match DESC REGEX VALUE (bash ERE)
assert_match() {
  if [[ $3 =~ $2 ]]; then pass "$1"; else fail "$1" "expected to match: /$2/" "actual: '$3'"; fi
}

# assert_cmd DESC CMD...: the command must succeed.
assert_cmd() {
  local desc=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$desc"; else fail "$desc" "command failed: $*"; fi
}

# assert_not DESC CMD...: the command must fail.
assert_not() {
  local desc=$1
  shift
  if "$@" >/dev/null 2>&1; then fail "$desc" "command unexpectedly succeeded: $*"; else pass "$desc"; fi
}

# ERR trap body: say which command failed and where it was called from.
_e2e_on_err() {
  local rc=$1 where i
  where="${BASH_SOURCE[1]##*/}:$2 (${FUNCNAME[1]})"
  for ((i = 2; i < ${#FUNCNAME[@]}; i++)); do
    [[ ${FUNCNAME[i]} != run_scenario ]] || break
    where+=" <- ${BASH_SOURCE[i]##*/}:${BASH_LINENO[i - 1]} (${FUNCNAME[i]})"
  done
  printf '    command failed (exit %s): %s\n      at %s\n' "$rc" "$3" "$where" >&2
}

# run_scenario NAME FUNCTION: run FUNCTION in a subshell with errexit; an
# unexpected command failure counts as one failed check.
run_scenario() {
  local name=$1 fn=$2 rc fails_before fails_after start=$SECONDS
  log_step "scenario: $name"
  fails_before=$(grep -c '^FAIL' "$E2E_RESULTS" || true)
  set +e
  (
    set -eE
    trap '_e2e_on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR
    "$fn"
  )
  rc=$?
  set -e
  fails_after=$(grep -c '^FAIL' "$E2E_RESULTS" || true)
  if ((rc != 0 && fails_after == fails_before)); then
    printf 'FAIL %s: aborted by a failing command\n' "$name" >>"$E2E_RESULTS"
  fi
  if ((rc == 0)); then
    log_info "scenario $name passed in $((SECONDS - start))s"
  else
    log_info "scenario $name FAILED after $((SECONDS - start))s"
  fi
}

# run_scenarios NAME...: runs scenario_NAME for each, then prints the report; non-zero if a
# check failed.
run_scenarios() {
  local scenario start=$SECONDS
  for scenario in "$@"; do
    run_scenario "$scenario" "scenario_$scenario"
  done
  log_step "finished in $((SECONDS - start))s"
  e2e_report
}

# Print "N passed, M failed" (the last line of a run); non-zero if M > 0.
e2e_report() {
  local passed failed
  passed=$(grep -c '^PASS' "$E2E_RESULTS" || true)
  failed=$(grep -c '^FAIL' "$E2E_RESULTS" || true)
  if ((failed > 0)); then
    printf '\nfailed checks:\n'
    sed -n 's/^FAIL /  - /p' "$E2E_RESULTS"
  fi
  printf '%s passed, %s failed\n' "$passed" "$failed"
  ((failed == 0))
}
