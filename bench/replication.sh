#!/usr/bin/env bash
# Replication benchmark: Berth's own replication (Harbor-style /api/v2.0/replication) against
# `skopeo copy`, both copying one image with a large random layer between two local
# `berth serve` instances, A (source) and B (destination), on 127.0.0.1 with auth on.
#
# Per run and per tool (order alternates every run), into a fresh B (new process, empty data dir):
#   - berth:  registry endpoint + manual push policy on A (dest_namespace run<i>), POST an
#             execution, poll it every 100 ms until Succeed; wall clock POST -> Succeed
#   - skopeo: skopeo copy docker://A/library/big:v1 docker://B/skopeo<i>/big:v1; wall clock
#   - memory: A's VmRSS sampled every 50 ms during the copy (baseline, peak, peak - baseline),
#             A's and B's VmHWM afterwards
#   - CPU of A, B and skopeo, and foreign CPU during the copy (interference)
# B's manifest digest must equal A's after every copy.
#
# Numbers are reported, never asserted. See bench/README.md, "Replication benchmark".
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as decimal separator

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_SRC/.." && pwd)
HELPER="$BENCH_SRC/replication_helper.py"

# ---------------------------------------------------------------- knobs ----
RUNS=${RUNS:-3}
LAYER_MIB=${LAYER_MIB:-1024}
BENCH_DIR=${BENCH_DIR:-/tmp/berth-bench}
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-target}/release/berth}
BERTH_ARGS=${BERTH_ARGS:-}
ACCESS_LOGS=${ACCESS_LOGS:-1}
SKOPEO_BIN=${SKOPEO_BIN:-skopeo}
RSS_INTERVAL_MS=${RSS_INTERVAL_MS:-50}
POLL_INTERVAL=${POLL_INTERVAL:-0.1}
COPY_TIMEOUT=${COPY_TIMEOUT:-1800}
READY_TIMEOUT=${READY_TIMEOUT:-30}
RESULTS_JSON=${RESULTS_JSON:-$BENCH_SRC/results/replication.json}
KEEP_RUN_DIR=${KEEP_RUN_DIR:-0}
KEEP_LAYOUT=${KEEP_LAYOUT:-0}
ORDER=${ORDER:-alternate}
BUSY_LIMIT=${BUSY_LIMIT:-25}

if [[ $ACCESS_LOGS == 1 ]]; then BERTH_LOG_FILTER=info; else BERTH_LOG_FILTER=warn; fi
MANIFEST_ACCEPT='application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json'

# -------------------------------------------------------------- helpers ----
log() { printf '[repl %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for knob in RUNS LAYER_MIB RSS_INTERVAL_MS COPY_TIMEOUT READY_TIMEOUT BUSY_LIMIT; do
	is_uint "${!knob}" || die "$knob must be a non-negative integer (got '${!knob}')"
done
((RUNS >= 1)) || die "RUNS must be >= 1"
((LAYER_MIB >= 1)) || die "LAYER_MIB must be >= 1"
((RSS_INTERVAL_MS >= 1)) || die "RSS_INTERVAL_MS must be >= 1"
case "$ORDER" in alternate | berth-first | skopeo-first) ;; *) die "ORDER must be alternate, berth-first or skopeo-first" ;; esac

for tool in curl python3 "$SKOPEO_BIN"; do
	command -v "$tool" >/dev/null || die "missing tool: $tool (skopeo: apt-get install skopeo)"
done

case "$BERTH_BIN" in
/*) ;;
*/*) BERTH_BIN="$REPO_ROOT/$BERTH_BIN" ;;
*) BERTH_BIN=$(command -v "$BERTH_BIN" || echo "$REPO_ROOT/$BERTH_BIN") ;;
esac
[ -x "$BERTH_BIN" ] || die "Berth binary not found: $BERTH_BIN (cargo build --release -p berth, or set BERTH_BIN)"
read -r -a BERTH_EXTRA <<<"$BERTH_ARGS"

CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
T_START=$EPOCHREALTIME

mkdir -p "$BENCH_DIR/cache"
RUN_DIR=$(mktemp -d "$BENCH_DIR/repl.XXXXXX")
RAW="$RUN_DIR/raw.tsv"
META="$RUN_DIR/meta.tsv"
: >"$RAW"
: >"$META"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/data" "$RUN_DIR/tmp"
LAYOUT="$BENCH_DIR/cache/replication-layout-${LAYER_MIB}mib"

# --------------------------------------------------- process management ----
declare -A LIVE_PIDS=() # pid -> name of every process we started and not yet stopped
CHILD_PID=
STATUS=failed

stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid did not stop after SIGTERM, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	unset "LIVE_PIDS[$pid]"
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	if [ -n "$CHILD_PID" ]; then
		kill -TERM "$CHILD_PID" 2>/dev/null || true
		wait "$CHILD_PID" 2>/dev/null || true
	fi
	for pid in "${!LIVE_PIDS[@]}"; do
		log "stopping ${LIVE_PIDS[$pid]} (pid $pid)"
		stop_pid "$pid"
	done
	rm -rf "$RUN_DIR/data" "$RUN_DIR/tmp"
	if [ "$KEEP_LAYOUT" != 1 ]; then rm -rf "$LAYOUT"; fi
	if [ "$STATUS" = ok ] && [ "$KEEP_RUN_DIR" != 1 ]; then
		rm -rf "$RUN_DIR"
	else
		log "run directory kept for inspection (logs, raw results): $RUN_DIR"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_child CMD...: run CMD in the background and wait, so INT/TERM clean up at once.
run_child() {
	local rc=0
	"$@" &
	CHILD_PID=$!
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=
	return "$rc"
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

proc_kb() {
	awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print "nan" }' "/proc/$1/status"
}
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) }
	awk '{ print $12 + $13 }' <<<"$stat"
}
host_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
own_children_ticks() {
	local stat
	stat=$(<"/proc/$$/stat")
	stat=${stat##*) }
	awk '{ print $14 + $15 }' <<<"$stat"
}
ticks_to_s() { awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }
host_busy_pct() {
	local a b
	a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat)
	sleep 1
	b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
		busy = y[1] - x[1]; idle = y[2] - x[2]
		printf "%.0f", ((busy + idle) > 0 ? 100 * busy / (busy + idle) : 0) }'
}
kb_to_mib() { awk -v kb="$1" 'BEGIN { if (kb == "nan") print "nan"; else printf "%.1f", kb / 1024 }'; }
elapsed() {
	local us=$((10#${2//[.,]/} - 10#${1//[.,]/}))
	printf '%d.%06d' $((us / 1000000)) $((us % 1000000))
}
header_value() {
	{ grep -i "^$2:" "$1" || true; } | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}
json_field() { python3 -c 'import json, sys; v = json.load(sys.stdin)[sys.argv[1]]; print("" if v is None else v)' "$1"; }

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

ADMIN_PASSWORD=Bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
CREDS="admin:$ADMIN_PASSWORD"

# api METHOD URL [JSON] -> sets API_CODE, API_BODY and API_LOCATION (the Location header)
api() {
	local method=$1 url=$2 data=${3:-} hdr="$RUN_DIR/tmp/api.hdr" body="$RUN_DIR/tmp/api.body"
	local args=(-sS -u "$CREDS" -X "$method" -o "$body" -D "$hdr" -w '%{http_code}')
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")
	API_CODE=$(curl "${args[@]}" "$url") || API_CODE=000
	API_LOCATION=$(header_value "$hdr" location)
	API_BODY=$(cat "$body" 2>/dev/null || true)
}

create_project() { # BASE NAME
	api POST "$1/api/v2.0/projects" "{\"project_name\":\"$2\"}"
	[ "$API_CODE" = 201 ] || [ "$API_CODE" = 409 ] || die "creating project $2 on $1 answered $API_CODE"
}

# manifest_digest BASE REPO TAG -> Docker-Content-Digest of the manifest (bearer token via admin)
manifest_digest() {
	local base=$1 repo=$2 tag=$3 token hdr="$RUN_DIR/tmp/manifest.hdr" code
	token=$(curl -sS -u "$CREDS" "$base/service/token?service=berth&scope=repository:$repo:pull" | json_field token) ||
		die "no token from $base"
	code=$(curl -sS -o /dev/null -D "$hdr" -w '%{http_code}' -I -H "Authorization: Bearer $token" \
		-H "Accept: $MANIFEST_ACCEPT" "$base/v2/$repo/manifests/$tag")
	[ "$code" = 200 ] || die "HEAD $base/v2/$repo/manifests/$tag answered $code"
	header_value "$hdr" docker-content-digest
}

# start_berth NAME DATA_DIR -> sets SRV_PID, SRV_URL, SRV_LOG
start_berth() {
	local name=$1 dir=$2 port i code
	port=$(free_port)
	SRV_URL="http://127.0.0.1:$port"
	SRV_LOG="$RUN_DIR/logs/$name.log"
	mkdir -p "$dir"
	# `env` execs, so $! is the server's own pid.
	env BERTH_LOG="$BERTH_LOG_FILTER" BERTH_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
		"$BERTH_BIN" serve --token-lifetime 86400s --listen "127.0.0.1:$port" --data-dir "$dir" \
		"${BERTH_EXTRA[@]}" >>"$SRV_LOG" 2>&1 &
	SRV_PID=$!
	LIVE_PIDS[$SRV_PID]=$name
	for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
		if ! kill -0 "$SRV_PID" 2>/dev/null; then
			tail -n 20 "$SRV_LOG" >&2 || true
			die "$name exited during startup (log: $SRV_LOG)"
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SRV_URL/v2/" || true)
		if [ "$code" = 200 ] || [ "$code" = 401 ]; then return 0; fi
		sleep 0.1
	done
	tail -n 20 "$SRV_LOG" >&2 || true
	die "$name did not answer on $SRV_URL/v2/ within ${READY_TIMEOUT}s (last status: $code)"
}

# start_sampler PID -> SAMPLER_PID, SAMPLER_OUT; returns once the first sample (the baseline)
# is taken
start_sampler() {
	local i
	SAMPLER_OUT="$RUN_DIR/tmp/rss.$1"
	rm -f "$SAMPLER_OUT" "$SAMPLER_OUT.ready"
	python3 "$HELPER" sample-rss "$1" "$RSS_INTERVAL_MS" "$SAMPLER_OUT" &
	SAMPLER_PID=$!
	LIVE_PIDS[$SAMPLER_PID]="rss sampler"
	for ((i = 0; i < 300; i++)); do
		[ -e "$SAMPLER_OUT.ready" ] && return 0
		kill -0 "$SAMPLER_PID" 2>/dev/null || die "the RSS sampler exited"
		sleep 0.02
	done
	die "the RSS sampler took no sample within 6 s"
}
# stop_sampler -> SAMPLES; PEAK_KB, PEAK_ANON_KB, PEAK_FILE_KB (highest VmRSS, RssAnon,
# RssFile sampled); BASE_ANON_KB, BASE_FILE_KB, BASE_KB (RssAnon, RssFile, VmRSS at the first
# sample, taken just before the copy starts: the baseline)
stop_sampler() {
	stop_pid "$SAMPLER_PID"
	read -r SAMPLES PEAK_KB _ PEAK_ANON_KB PEAK_FILE_KB BASE_ANON_KB BASE_FILE_KB BASE_KB <"$SAMPLER_OUT" ||
		die "the RSS sampler wrote nothing"
}

# ------------------------------------------------------------- preparation ----
log "binary: $BERTH_BIN"
HELP=$("$BERTH_BIN" serve --help 2>&1) || die "$BERTH_BIN serve --help failed"
grep -q -- '--data-dir' <<<"$HELP" || die "$BERTH_BIN serve has no --data-dir"

if [ -f "$LAYOUT/.done" ]; then
	read -r IMAGE_DIGEST LAYER_DIGEST LAYER_BYTES <"$LAYOUT/.done"
	log "using the cached image layout $LAYOUT"
else
	log "building an OCI layout with a ${LAYER_MIB} MiB random layer in $LAYOUT"
	rm -rf "$LAYOUT"
	python3 "$HELPER" make-layout "$LAYOUT" "$LAYER_MIB" >"$RUN_DIR/tmp/layout.out" || die "make-layout failed"
	cp "$RUN_DIR/tmp/layout.out" "$LAYOUT/.done"
	read -r IMAGE_DIGEST LAYER_DIGEST LAYER_BYTES <"$LAYOUT/.done"
fi
LAYER_MIB_EXACT=$(awk -v b="$LAYER_BYTES" 'BEGIN { printf "%.3f", b / 1048576 }')

meta started_at "$STARTED_AT"
meta berth_bin "$BERTH_BIN"
meta git_rev "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO_ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
meta access_logs "$ACCESS_LOGS"
meta skopeo_version "$("$SKOPEO_BIN" --version 2>/dev/null | head -n 1)"
meta cpus "$NCPU"
meta image_manifest_digest_layout "$IMAGE_DIGEST"
meta image_layer_digest "$LAYER_DIGEST"
meta image_layer_bytes "$LAYER_BYTES"
meta image_layer_media_type "application/vnd.oci.image.layer.v1.tar+gzip (gzip level 0 of a tar of random bytes)"
for knob in RUNS LAYER_MIB RSS_INTERVAL_MS POLL_INTERVAL ORDER BERTH_ARGS ACCESS_LOGS BUSY_LIMIT; do meta "knob_$knob" "${!knob}"; done
meta env_kernel "$(uname -r)"
meta env_cpus "$NCPU"
meta env_cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta env_mem_total_kb "$(awk '/^MemTotal/ { print $2 }' /proc/meminfo)"
meta env_curl_version "$(curl --version | awk 'NR == 1 { print $2 }')"
meta env_bench_dir "$BENCH_DIR"
meta env_filesystem "$(df -PT "$BENCH_DIR" | awk 'NR == 2 { print $1 " (" $2 ")" }')"

# ------------------------------------------------------------ registry A ----
start_berth A "$RUN_DIR/data/A"
A_PID=$SRV_PID A_URL=$SRV_URL A_HOST=${SRV_URL#http://}
log "A: pid $A_PID at $A_URL"
create_project "$A_URL" library
log "loading the image into A (skopeo copy oci:... docker://$A_HOST/library/big:v1)"
t0=$EPOCHREALTIME
run_child "$SKOPEO_BIN" copy --quiet --dest-creds "$CREDS" --dest-tls-verify=false \
	"oci:$LAYOUT:v1" "docker://$A_HOST/library/big:v1" >"$RUN_DIR/logs/load.log" 2>&1 ||
	{
		cat "$RUN_DIR/logs/load.log" >&2
		die "loading the image into A failed"
	}
log "loaded in $(elapsed "$t0" "$EPOCHREALTIME") s"
A_DIGEST=$(manifest_digest "$A_URL" library/big v1)
[ -n "$A_DIGEST" ] || die "A answered no Docker-Content-Digest for library/big:v1"
[ "$A_DIGEST" = "$IMAGE_DIGEST" ] || log "note: A stores the manifest as $A_DIGEST, the layout has $IMAGE_DIGEST (skopeo rewrote it)"
meta image_manifest_digest "$A_DIGEST"

# ------------------------------------------------------------- measuring ----
# measure TOOL RUN: one copy A -> fresh B with TOOL (berth or skopeo)
measure() {
	local tool=$1 run=$2
	local dir="$RUN_DIR/data/B-$tool-$run" b_pid b_url b_host repo busy
	local a0 b0 h0 c0 a1 b1 h1 c1 t0 t1 BASE_KB hwm_a hwm_b digest copy_s other

	sync
	busy=$(host_busy_pct)
	start_berth "B-$tool-$run" "$dir"
	b_pid=$SRV_PID b_url=$SRV_URL b_host=${SRV_URL#http://}
	if [ "$tool" = berth ]; then repo="run$run/big"; else repo="skopeo$run/big"; fi
	create_project "$b_url" "${repo%/big}"

	if [ "$tool" = berth ]; then
		local reg_id pol_id exec_path status body deadline exec_s sent ntasks
		api POST "$A_URL/api/v2.0/registries" "{\"name\":\"B-run$run\",\"url\":\"$b_url\",\"type\":\"berth\",\"insecure\":true,\"credential\":{\"type\":\"basic\",\"access_key\":\"admin\",\"access_secret\":\"$ADMIN_PASSWORD\"}}"
		body=$API_BODY
		[ "$API_CODE" = 201 ] || die "POST /registries answered $API_CODE: $body"
		reg_id=${API_LOCATION##*/}
		is_uint "$reg_id" || reg_id=$(json_field id <<<"$body")
		api POST "$A_URL/api/v2.0/replication/policies" "{\"name\":\"bench-run$run\",\"dest_registry\":{\"id\":$reg_id},\"dest_namespace\":\"run$run\",\"dest_namespace_replace_count\":1,\"filters\":[{\"type\":\"name\",\"value\":\"library/big\"}],\"trigger\":{\"type\":\"manual\"},\"override\":true,\"enabled\":true}"
		body=$API_BODY
		[ "$API_CODE" = 201 ] || die "POST /replication/policies answered $API_CODE: $body"
		pol_id=${API_LOCATION##*/}
		is_uint "$pol_id" || pol_id=$(json_field id <<<"$body")

		start_sampler "$A_PID"
		a0=$(cpu_ticks "$A_PID") b0=$(cpu_ticks "$b_pid") h0=$(host_ticks) c0=$(own_children_ticks)
		t0=$EPOCHREALTIME
		api POST "$A_URL/api/v2.0/replication/executions" "{\"policy_id\":$pol_id}"
		[ "$API_CODE" = 201 ] || die "POST /replication/executions answered $API_CODE: $API_BODY"
		exec_path=$API_LOCATION
		[ -n "$exec_path" ] || die "POST /replication/executions answered 201 without a Location"
		case "$exec_path" in http*) ;; /api/*) exec_path="$A_URL$exec_path" ;; *) exec_path="$A_URL/api/v2.0${exec_path}" ;; esac
		deadline=$((SECONDS + COPY_TIMEOUT))
		while :; do
			# No python here: under load its start-up alone would add 100 ms or more per poll.
			body=$(curl -sS -u "$CREDS" "$exec_path") || body=
			status=
			if [[ $body =~ \"status\":\"([A-Za-z]+)\" ]]; then status=${BASH_REMATCH[1]}; fi
			case "$status" in
			Succeed) break ;;
			InProgress | Pending | "") ;;
			*)
				curl -sS -u "$CREDS" "$exec_path/tasks" >&2 || true
				die "execution $exec_path ended $status"
				;;
			esac
			((SECONDS < deadline)) || die "execution $exec_path still $status after ${COPY_TIMEOUT}s"
			sleep "$POLL_INTERVAL"
		done
		t1=$EPOCHREALTIME
		a1=$(cpu_ticks "$A_PID") b1=$(cpu_ticks "$b_pid") h1=$(host_ticks) c1=$(own_children_ticks)
		stop_sampler
		curl -sS -u "$CREDS" "$exec_path" >"$RUN_DIR/tmp/exec.json"
		curl -sS -u "$CREDS" "$exec_path/tasks" >"$RUN_DIR/tmp/tasks.json"
		cp "$RUN_DIR/tmp/exec.json" "$RUN_DIR/logs/exec-run$run.json"
		cp "$RUN_DIR/tmp/tasks.json" "$RUN_DIR/logs/tasks-run$run.json"
		python3 - "$RUN_DIR/tmp/exec.json" "$RUN_DIR/tmp/tasks.json" "$LAYER_BYTES" >"$RUN_DIR/tmp/exec.check" <<-'PY' || die "execution check failed: $(cat "$RUN_DIR/tmp/exec.check")"
			import datetime, json, sys
			ex = json.load(open(sys.argv[1])); tasks = json.load(open(sys.argv[2])); layer = int(sys.argv[3])
			parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
			sent = sum(t.get("bytes") or 0 for t in tasks)
			ok = ex["status"] == "Succeed" and all(t["status"] == "Succeed" for t in tasks) and sent >= layer
			print(parse(ex["end_time"]) - parse(ex["start_time"]) if ex.get("end_time") else "nan", sent, len(tasks))
			sys.exit(0 if ok else 1)
		PY
		read -r exec_s sent ntasks <"$RUN_DIR/tmp/exec.check"
		record berth "$run" server_exec_s "$exec_s"
		record berth "$run" bytes_sent "$sent"
		record berth "$run" tasks "$ntasks"
	else
		start_sampler "$A_PID"
		a0=$(cpu_ticks "$A_PID") b0=$(cpu_ticks "$b_pid") h0=$(host_ticks) c0=$(own_children_ticks)
		t0=$EPOCHREALTIME
		run_child "$SKOPEO_BIN" copy --quiet --src-creds "$CREDS" --src-tls-verify=false \
			--dest-creds "$CREDS" --dest-tls-verify=false \
			"docker://$A_HOST/library/big:v1" "docker://$b_host/$repo:v1" >"$RUN_DIR/logs/skopeo-run$run.log" 2>&1 ||
			{
				cat "$RUN_DIR/logs/skopeo-run$run.log" >&2
				die "skopeo copy failed"
			}
		t1=$EPOCHREALTIME
		a1=$(cpu_ticks "$A_PID") b1=$(cpu_ticks "$b_pid") h1=$(host_ticks) c1=$(own_children_ticks)
		stop_sampler
		record skopeo "$run" client_cpu_s "$(ticks_to_s "$c0" "$c1")"
	fi
	hwm_a=$(proc_kb "$A_PID" VmHWM)
	hwm_b=$(proc_kb "$b_pid" VmHWM)
	digest=$(manifest_digest "$b_url" "$repo" v1)
	[ "$digest" = "$A_DIGEST" ] || die "$tool run $run: B has $repo:v1 as '$digest', A has $A_DIGEST"

	copy_s=$(elapsed "$t0" "$t1")
	other=$(awk -v t="$(((h1 - h0) - (a1 - a0) - (b1 - b0) - (c1 - c0)))" -v hz="$CLK_TCK" \
		'BEGIN { if (t < 0) t = 0; printf "%.2f", t / hz }')
	record "$tool" "$run" copy_s "$copy_s"
	record "$tool" "$run" copy_mibps "$(awk -v m="$LAYER_MIB_EXACT" -v s="$copy_s" 'BEGIN { printf "%.2f", m / s }')"
	record "$tool" "$run" a_cpu_s "$(ticks_to_s "$a0" "$a1")"
	record "$tool" "$run" b_cpu_s "$(ticks_to_s "$b0" "$b1")"
	record "$tool" "$run" a_rss_base_mib "$(kb_to_mib "$BASE_KB")"
	record "$tool" "$run" a_rss_peak_mib "$(kb_to_mib "$PEAK_KB")"
	record "$tool" "$run" a_rss_extra_mib "$(kb_to_mib $((PEAK_KB - BASE_KB)))"
	record "$tool" "$run" a_anon_extra_mib "$(kb_to_mib $((PEAK_ANON_KB - BASE_ANON_KB)))"
	record "$tool" "$run" a_file_extra_mib "$(kb_to_mib $((PEAK_FILE_KB - BASE_FILE_KB)))"
	record "$tool" "$run" a_hwm_mib "$(kb_to_mib "$hwm_a")"
	record "$tool" "$run" b_hwm_mib "$(kb_to_mib "$hwm_b")"
	record "$tool" "$run" rss_samples "$SAMPLES"
	record "$tool" "$run" host_busy_pct "$busy"
	record "$tool" "$run" other_cpu_s "$other"
	log "$tool run $run: ${copy_s} s, A CPU $(ticks_to_s "$a0" "$a1") s, B CPU $(ticks_to_s "$b0" "$b1") s, A RSS $(kb_to_mib "$BASE_KB") -> peak $(kb_to_mib "$PEAK_KB") MiB (RssAnon +$(kb_to_mib $((PEAK_ANON_KB - BASE_ANON_KB))), RssFile +$(kb_to_mib $((PEAK_FILE_KB - BASE_FILE_KB))); $SAMPLES samples), other CPU ${other} s, host busy before ${busy}%"

	stop_pid "$b_pid"
	rm -rf "$dir"
}

for ((run = 1; run <= RUNS; run++)); do
	case "$ORDER" in
	berth-first) order=(berth skopeo) ;;
	skopeo-first) order=(skopeo berth) ;;
	*) if ((run % 2)); then order=(berth skopeo); else order=(skopeo berth); fi ;;
	esac
	for tool in "${order[@]}"; do
		log "run $run/$RUNS: $tool"
		measure "$tool" "$run"
	done
done

stop_pid "$A_PID"
rm -rf "$RUN_DIR/data"
meta duration_s "$(elapsed "$T_START" "$EPOCHREALTIME")"
mkdir -p "$(dirname "$RESULTS_JSON")"
python3 "$HELPER" report "$RAW" "$META" "$RESULTS_JSON"
STATUS=ok
