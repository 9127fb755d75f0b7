#!/usr/bin/env bash
# End-to-end benchmark: Berth vs CNCF Distribution, both on 127.0.0.1.
#
# STORAGE=local (default): both on the local filesystem. STORAGE=s3: both on one Garage node
# (S3) started for the run, Berth's metadata in DynamoDB Local, blob GETs redirected to
# presigned Garage URLs for both; the run ends by counting the S3 and DynamoDB requests each
# registry makes per manifest GET, blob HEAD and blob GET (through a counting proxy).
#
# Measures, per round and per registry (order alternates every round):
#   - push of one large random blob (POST -> one chunked PATCH -> PUT ?digest=)
#   - pull of that blob (GET, following redirects)
#   - manifest GET by tag under load (wrk)
#   - resident memory (idle, peak during the push, peak over the whole round)
#
# Numbers are reported, never asserted. See bench/README.md.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as decimal separator

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_SRC/.." && pwd)

# ---------------------------------------------------------------- knobs ----
ROUNDS=${ROUNDS:-3}
BLOB_MIB=${BLOB_MIB:-1024}
WRK_SECONDS=${WRK_SECONDS:-10}
WRK_WARMUP=${WRK_WARMUP:-2}
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
BENCH_DIR=${BENCH_DIR:-/tmp/berth-bench}
BERTH_BIN=${BERTH_BIN:-${CARGO_TARGET_DIR:-target}/release/berth}
BERTH_ARGS=${BERTH_ARGS:-}
ACCESS_LOGS=${ACCESS_LOGS:-1}
if [[ $ACCESS_LOGS == 1 ]]; then
	BERTH_LOG_FILTER=info DIST_LOG_LEVEL=info DIST_ACCESSLOG_DISABLED=false
else
	BERTH_LOG_FILTER=warn DIST_LOG_LEVEL=error DIST_ACCESSLOG_DISABLED=true
fi
DIST_BIN=${DIST_BIN:-/usr/bin/docker-registry}
PIN_CPUS=${PIN_CPUS:-0}
DROP_CACHES=${DROP_CACHES:-0}
VERIFY_PULL=${VERIFY_PULL:-1}
PULL_REPEAT=${PULL_REPEAT:-3}
READY_TIMEOUT=${READY_TIMEOUT:-30}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_MAX_BUSY=${IDLE_MAX_BUSY:-25}
RESULTS_JSON=${RESULTS_JSON:-$BENCH_SRC/results/latest.json}
KEEP_RUN_DIR=${KEEP_RUN_DIR:-0}
STORAGE=${STORAGE:-local}
COUNT_REQUESTS=${COUNT_REQUESTS:-20}

MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json

# -------------------------------------------------------------- helpers ----
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for knob in ROUNDS BLOB_MIB WRK_SECONDS WRK_WARMUP WRK_THREADS WRK_CONNECTIONS READY_TIMEOUT IDLE_WAIT IDLE_MAX_BUSY PULL_REPEAT; do
	is_uint "${!knob}" || die "$knob must be a non-negative integer (got '${!knob}')"
done
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"
((BLOB_MIB >= 1)) || die "BLOB_MIB must be >= 1"
((WRK_SECONDS >= 1)) || die "WRK_SECONDS must be >= 1"
((PULL_REPEAT >= 1)) || die "PULL_REPEAT must be >= 1"
case "$STORAGE" in
local | s3) ;;
*) die "STORAGE must be local or s3 (got '$STORAGE')" ;;
esac
is_uint "$COUNT_REQUESTS" || die "COUNT_REQUESTS must be a positive integer (got '$COUNT_REQUESTS')"
((COUNT_REQUESTS >= 1)) || die "COUNT_REQUESTS must be >= 1"
if [ "$DROP_CACHES" = 1 ] && ((PULL_REPEAT != 1)); then
	log "DROP_CACHES=1: only the first pull would be cold, so PULL_REPEAT is set to 1"
	PULL_REPEAT=1
fi

for tool in curl wrk python3 sha256sum; do
	command -v "$tool" >/dev/null || die "missing tool: $tool"
done

# Resolve BERTH_BIN: relative paths are relative to the repository root.
case "$BERTH_BIN" in
/*) ;;
*/*) BERTH_BIN="$REPO_ROOT/$BERTH_BIN" ;;
*) BERTH_BIN=$(command -v "$BERTH_BIN" || echo "$REPO_ROOT/$BERTH_BIN") ;;
esac
[ -x "$BERTH_BIN" ] || die "Berth binary not found or not executable: $BERTH_BIN (build it: cargo build --release -p berth, or set BERTH_BIN)"
[ -x "$DIST_BIN" ] || die "Distribution binary not found: $DIST_BIN (apt-get install docker-registry, or set DIST_BIN)"

# Optional CPU pinning: server on CPU 0, every client (curl, wrk) on CPU 1.
SERVER_PREFIX=()
CLIENT_PREFIX=()
if [ "$PIN_CPUS" = 1 ]; then
	command -v taskset >/dev/null || die "PIN_CPUS=1 needs taskset (util-linux)"
	(($(nproc) >= 2)) || die "PIN_CPUS=1 needs at least 2 CPUs"
	SERVER_PREFIX=(taskset -c 0)
	CLIENT_PREFIX=(taskset -c 1)
fi

read -r -a BERTH_EXTRA <<<"$BERTH_ARGS"

CLK_TCK=$(getconf CLK_TCK)

mkdir -p "$BENCH_DIR/cache"
RUN_DIR=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
RAW="$RUN_DIR/raw.tsv"
META="$RUN_DIR/meta.tsv"
COUNTS="$RUN_DIR/counts.tsv"
: >"$RAW"
: >"$META"
: >"$COUNTS"
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/data" "$RUN_DIR/tmp"

# --------------------------------------------------- process management ----
declare -A LIVE_PIDS=() # pid -> name of every server we started and not yet stopped
CHILD_PID=                # long-running client (curl, wrk) currently waited for
STATUS=failed

# run_child IN OUT CMD...: run CMD with stdin IN and stdout OUT in the
# background and wait for it. Unlike a foreground command, `wait` returns as
# soon as a trapped signal arrives, so INT/TERM clean up immediately instead of
# after a 10 s wrk run or a 1 GiB transfer; cleanup then stops the child too.
run_child() {
	local in=$1 out=$2 rc=0
	shift 2
	"$@" <"$in" >"$out" &
	CHILD_PID=$!
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=
	return "$rc"
}

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
	stop_services
	rm -rf "$RUN_DIR/data" "$RUN_DIR/tmp"
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

# ------------------------------------------------ S3 and DynamoDB (STORAGE=s3) ----
SERVICES="$REPO_ROOT/scripts/services"
STARTED_DYNAMODB=0
start_services() {
	[ "$STORAGE" = s3 ] || return 0
	local dynamodb_pid_file="$HOME/.cache/berth/dynamodb-local/dynamodb.pid"
	if ! { [ -f "$dynamodb_pid_file" ] && kill -0 "$(<"$dynamodb_pid_file")" 2>/dev/null; }; then
		STARTED_DYNAMODB=1
	fi
	"$SERVICES/garage.sh" install
	# Garage's exports come last: its credentials are the ones in force (DynamoDB Local takes any).
	eval "$("$SERVICES/dynamodb-local.sh" start)"
	eval "$("$SERVICES/garage.sh" start "$RUN_DIR/garage")"
	S3_PORT=${AWS_ENDPOINT_URL_S3##*:}
	DYNAMODB_PORT=${AWS_ENDPOINT_URL_DYNAMODB##*:}
	BUCKET=$BERTH_TEST_S3_BUCKET
}
stop_services() {
	[ "$STORAGE" = s3 ] || return 0
	"$SERVICES/garage.sh" stop "$RUN_DIR/garage" >/dev/null 2>&1 || true
	if [ "$STARTED_DYNAMODB" = 1 ]; then
		"$SERVICES/dynamodb-local.sh" stop >/dev/null 2>&1 || true
	fi
	rm -rf "$RUN_DIR/garage"
}

free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Berth runs with its auth on, as deployed: the admin creates the project `bench`, and every
# request carries a bearer token for the benchmark's repositories (one token, fetched once,
# valid for the whole run). Distribution runs without auth.
AUTH=()
AUTH_HEADER=()
BENCH_ADMIN_PASSWORD=Bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# bench_login KIND -> sets AUTH (curl/wrk arguments) and AUTH_HEADER for SRV_URL
bench_login() {
	AUTH=() AUTH_HEADER=()
	[ "$1" = berth ] || return 0
	local code query="service=berth&scope=repository:bench/manifest:pull,push,delete" i token
	code=$(curl -sS -o /dev/null -w '%{http_code}' -u "admin:$BENCH_ADMIN_PASSWORD" \
		-H 'Content-Type: application/json' --data '{"project_name":"bench"}' "$SRV_URL/api/v2.0/projects")
	[ "$code" = 201 ] || [ "$code" = 409 ] || die "creating the project bench answered $code"
	for ((i = 1; i <= ROUNDS; i++)); do query+="&scope=repository:bench/blob-r$i:pull,push"; done
	token=$(curl -sS -u "admin:$BENCH_ADMIN_PASSWORD" "$SRV_URL/service/token?$query" |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])') || die "no token from berth"
	AUTH_HEADER=("Authorization: Bearer $token")
	AUTH=(-H "${AUTH_HEADER[0]}")
}

# start_server KIND NAME DATA_DIR -> sets SRV_PID, SRV_URL, SRV_LOG
start_server() {
	local kind=$1 name=$2 dir=$3 port cfg i code
	port=$(free_port)
	SRV_URL="http://127.0.0.1:$port"
	SRV_LOG="$RUN_DIR/logs/$name.log"
	mkdir -p "$dir"
	case "$kind" in
	berth)
		local storage=() endpoints=()
		: >"$SRV_LOG"
		if [ "$STORAGE" = s3 ]; then
			storage=(--blob-store "s3://$BUCKET/$name" --metadata "dynamodb://berth-bench-$name"
				--s3-path-style)
			endpoints=(AWS_ENDPOINT_URL_S3="$S3_ENDPOINT" AWS_ENDPOINT_URL_DYNAMODB="$DYNAMODB_ENDPOINT")
			env BERTH_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" "${endpoints[@]}" "$BERTH_BIN" init "${storage[@]}" \
				--data-dir "$dir" >>"$SRV_LOG" 2>&1 ||
				die "berth init failed (log: $SRV_LOG)"
		fi
		# `env` and `taskset` exec, so $! is the server's own pid.
		env BERTH_LOG="$BERTH_LOG_FILTER" BERTH_ADMIN_PASSWORD="$BENCH_ADMIN_PASSWORD" "${endpoints[@]}" \
			"${SERVER_PREFIX[@]}" "$BERTH_BIN" serve --token-lifetime 86400s \
			--listen "127.0.0.1:$port" --data-dir "$dir" "${storage[@]}" "${BERTH_EXTRA[@]}" >>"$SRV_LOG" 2>&1 &
		SRV_PID=$!
		;;
	distribution)
		cfg="$RUN_DIR/$name.yml"
		cat >"$cfg" <<-YAML
			version: 0.1
			log:
			  level: $DIST_LOG_LEVEL
			  accesslog:
			    disabled: $DIST_ACCESSLOG_DISABLED
			storage:
			$(distribution_storage "$name" "$dir")
			  cache:
			    blobdescriptor: inmemory
			  delete:
			    enabled: true
			  maintenance:
			    uploadpurging:
			      enabled: false
			http:
			  addr: 127.0.0.1:$port
		YAML
		# aws-sdk-go (Distribution's S3 driver) cannot combine AWS_CA_BUNDLE with its own HTTP
		# transport and panics at start-up; the endpoint here is plain HTTP anyway.
		env -u AWS_CA_BUNDLE "${SERVER_PREFIX[@]}" "$DIST_BIN" serve "$cfg" >"$SRV_LOG" 2>&1 &
		SRV_PID=$!
		;;
	*) die "unknown registry kind $kind" ;;
	esac
	LIVE_PIDS[$SRV_PID]=$name
	for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
		if ! kill -0 "$SRV_PID" 2>/dev/null; then
			tail -n 20 "$SRV_LOG" >&2 || true
			die "$name exited during startup (log: $SRV_LOG)"
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SRV_URL/v2/" || true)
		if [ "$code" = 200 ] || { [ "$kind" = berth ] && [ "$code" = 401 ]; }; then
			bench_login "$kind"
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$SRV_LOG" >&2 || true
	die "$name did not answer 200 on $SRV_URL/v2/ within ${READY_TIMEOUT}s (last status: $code)"
}

# distribution_storage NAME DIR -> the storage driver section of Distribution's config
distribution_storage() {
	if [ "$STORAGE" = s3 ]; then
		# Distribution's S3 driver redirects blob GETs to presigned URLs unless told not to.
		cat <<-YAML
			  s3:
			    accesskey: $AWS_ACCESS_KEY_ID
			    secretkey: $AWS_SECRET_ACCESS_KEY
			    region: $AWS_REGION
			    regionendpoint: $S3_ENDPOINT
			    bucket: $BUCKET
			    rootdirectory: /$1
			    secure: false
			    v4auth: true
		YAML
	else
		printf '  filesystem:\n    rootdirectory: %s\n' "$2"
	fi
}

# proc_kb PID FIELD -> value in kB of a /proc/PID/status field (VmRSS, VmHWM)
proc_kb() {
	awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print "nan" }' "/proc/$1/status"
}
# cpu_ticks PID -> utime+stime of the whole process (all threads), in clock ticks
cpu_ticks() {
	local stat
	stat=$(<"/proc/$1/stat")
	stat=${stat##*) } # drop "pid (comm) ", comm may contain spaces
	awk '{ print $12 + $13 }' <<<"$stat"
}
# host_ticks -> busy clock ticks of all CPUs together (any process, kernel included)
host_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# own_children_ticks -> CPU of this script's finished children (curl, wrk, ...)
own_children_ticks() {
	local stat
	stat=$(<"/proc/$$/stat")
	stat=${stat##*) }
	awk '{ print $14 + $15 }' <<<"$stat"
}
# phase_begin PID / phase_end PID -> sets OTHER_CPU_S: CPU seconds spent during
# the phase by anything but the server and this script's clients (other
# processes, kernel threads such as writeback). Non-zero means interference.
phase_begin() {
	P_H0=$(host_ticks) P_S0=$(cpu_ticks "$1") P_C0=$(own_children_ticks)
}
phase_end() {
	local h1 s1 c1
	h1=$(host_ticks) s1=$(cpu_ticks "$1") c1=$(own_children_ticks)
	P_S1=$s1
	SERVER_CPU_S=$(ticks_to_s "$P_S0" "$s1")
	OTHER_CPU_S=$(awk -v t="$(((h1 - P_H0) - (s1 - P_S0) - (c1 - P_C0)))" -v hz="$CLK_TCK" \
		'BEGIN { if (t < 0) t = 0; printf "%.2f", t / hz }')
}
# ticks_to_s T0 T1 -> CPU seconds between two cpu_ticks readings
ticks_to_s() { awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }'; }

# host_busy_pct -> % of all CPUs busy (any process) over the next second
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

# ----------------------------------------------------------- http utils ----
# header_value FILE NAME -> last value of header NAME in a curl -D dump
header_value() {
	{ grep -i "^$2:" "$1" || true; } | tail -n 1 | cut -d: -f2- | tr -d '\r' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}

# resolve_url BASE REQUEST_URL LOCATION -> absolute URL
resolve_url() {
	local base=$1 req=$2 loc=$3
	case "$loc" in
	http://* | https://*) printf '%s' "$loc" ;;
	//*) printf 'http:%s' "$loc" ;;
	/*) printf '%s%s' "$base" "$loc" ;;
	*)
		req=${req%%\?*}
		printf '%s/%s' "${req%/*}" "$loc"
		;;
	esac
}

# add_query URL KEY=VALUE -> URL with the parameter appended (? or &)
add_query() {
	case "$1" in
	*\?*) printf '%s&%s' "$1" "$2" ;;
	*) printf '%s?%s' "$1" "$2" ;;
	esac
}

# elapsed T0 T1 (EPOCHREALTIME values) -> seconds with microsecond precision
elapsed() {
	local us=$((10#${2//[.,]/} - 10#${1//[.,]/}))
	printf '%d.%06d' $((us / 1000000)) $((us % 1000000))
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# start_upload BASE REPO -> sets UP_URL (absolute upload URL) or UP_DONE=1
start_upload() {
	local base=$1 repo=$2 hdr="$RUN_DIR/tmp/post.hdr" url code loc
	url="$base/v2/$repo/blobs/uploads/"
	code=$("${CLIENT_PREFIX[@]}" curl -sS "${AUTH[@]}" -o /dev/null -D "$hdr" -w '%{http_code}' \
		-X POST -H 'Content-Length: 0' "$url")
	[ "$code" = 202 ] || die "POST $url answered $code, expected 202"
	loc=$(header_value "$hdr" location)
	[ -n "$loc" ] || die "POST $url answered 202 without a Location header"
	UP_URL=$(resolve_url "$base" "$url" "$loc")
}

# push_big BASE REPO FILE DIGEST -> sets PUSH_S (POST .. 201 of the PUT)
push_big() {
	local base=$1 repo=$2 file=$3 digest=$4 hdr="$RUN_DIR/tmp/patch.hdr" t0 t1 code loc put_url
	t0=$EPOCHREALTIME
	start_upload "$base" "$repo"
	# One streamed PATCH of the whole file, chunked like docker does. Reading
	# from stdin (-T -) makes curl stream it in small buffers, never the whole
	# file in memory; 'Expect:' suppresses curl's 100-continue round trip.
	run_child "$file" "$RUN_DIR/tmp/patch.out" "${CLIENT_PREFIX[@]}" curl -sS "${AUTH[@]}" -o /dev/null -D "$hdr" \
		-w '%{http_code}' -X PATCH -T - -H 'Transfer-Encoding: chunked' \
		-H 'Content-Type: application/octet-stream' -H 'Expect:' "$UP_URL" || true
	code=$(<"$RUN_DIR/tmp/patch.out")
	[ "$code" = 202 ] || die "PATCH $UP_URL answered $code, expected 202"
	loc=$(header_value "$hdr" location)
	[ -n "$loc" ] && UP_URL=$(resolve_url "$base" "$UP_URL" "$loc")
	put_url=$(add_query "$UP_URL" "digest=$digest")
	code=$("${CLIENT_PREFIX[@]}" curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' \
		-X PUT -H 'Content-Length: 0' "$put_url")
	t1=$EPOCHREALTIME
	[ "$code" = 201 ] || die "PUT $put_url answered $code, expected 201"
	PUSH_S=$(elapsed "$t0" "$t1")
}

# push_small BASE REPO FILE DIGEST: POST + monolithic PUT ?digest= with body
push_small() {
	local base=$1 repo=$2 file=$3 digest=$4 code put_url
	start_upload "$base" "$repo"
	put_url=$(add_query "$UP_URL" "digest=$digest")
	code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT \
		-H 'Content-Type: application/octet-stream' --data-binary "@$file" "$put_url")
	[ "$code" = 201 ] || die "monolithic PUT $put_url answered $code, expected 201"
}

# check_blob_head BASE REPO DIGEST SIZE
check_blob_head() {
	local url="$1/v2/$2/blobs/$3" hdr="$RUN_DIR/tmp/head.hdr" code len
	code=$(curl -sS "${AUTH[@]}" -I -o /dev/null -D "$hdr" -w '%{http_code}' -L "$url")
	[ "$code" = 200 ] || die "HEAD $url answered $code, expected 200"
	len=$(header_value "$hdr" content-length)
	[ "$len" = "$4" ] || die "HEAD $url: Content-Length '$len', expected $4"
}

sha256_of() { sha256sum "$1" | awk '{ print "sha256:" $1 }'; }

# ------------------------------------------------------------ test data ----
BLOB_BYTES=$((BLOB_MIB * 1024 * 1024))
BLOB_FILE="$BENCH_DIR/cache/blob-${BLOB_MIB}MiB.bin"
BLOB_DIGEST_FILE="$BLOB_FILE.sha256"
if [ ! -f "$BLOB_FILE" ] || [ ! -f "$BLOB_DIGEST_FILE" ] ||
	[ "$(stat -c %s "$BLOB_FILE")" != "$BLOB_BYTES" ] || [ "$BLOB_DIGEST_FILE" -ot "$BLOB_FILE" ]; then
	log "generating $BLOB_MIB MiB of random data in $BLOB_FILE (cached for later runs)"
	rm -f "$BLOB_FILE" "$BLOB_DIGEST_FILE"
	# One pass: write random data and hash it (python's hashlib is several
	# times faster than coreutils sha256sum here).
	python3 - "$BLOB_FILE.part" "$BLOB_BYTES" >"$BLOB_DIGEST_FILE.part" <<-'PY'
		import hashlib, os, sys
		path, left = sys.argv[1], int(sys.argv[2])
		digest = hashlib.sha256()
		with open(path, "wb") as out:
		    while left:
		        block = os.urandom(min(left, 1 << 20))
		        digest.update(block)
		        out.write(block)
		        left -= len(block)
		print("sha256:" + digest.hexdigest())
	PY
	mv "$BLOB_FILE.part" "$BLOB_FILE"
	mv "$BLOB_DIGEST_FILE.part" "$BLOB_DIGEST_FILE"
fi
BLOB_DIGEST=$(cat "$BLOB_DIGEST_FILE")
[[ $BLOB_DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || die "bad cached digest in $BLOB_DIGEST_FILE"
log "blob: $BLOB_MIB MiB, $BLOB_DIGEST"

# Small image for the manifest test: one 4 KiB layer, a config, a manifest.
OCI="$RUN_DIR/oci"
mkdir -p "$OCI"
head -c 4096 /dev/urandom >"$OCI/layer.bin"
LAYER_DIGEST=$(sha256_of "$OCI/layer.bin")
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
	"$LAYER_DIGEST" >"$OCI/config.json"
CONFIG_DIGEST=$(sha256_of "$OCI/config.json")
printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}' \
	"$MANIFEST_TYPE" "$CONFIG_DIGEST" "$(stat -c %s "$OCI/config.json")" \
	"$LAYER_DIGEST" "$(stat -c %s "$OCI/layer.bin")" >"$OCI/manifest.json"
MANIFEST_DIGEST=$(sha256_of "$OCI/manifest.json")

# --------------------------------------------------------------- phases ----
warm_source() {
	# Keep the source file in the page cache so every push reads it from RAM,
	# whatever ran before (blob generation, DROP_CACHES, other rounds).
	cat "$BLOB_FILE" >/dev/null
}

quiesce() {
	# Flush dirty pages left by the previous phase, so writeback of one
	# registry's data does not slow down the next measurement.
	sync
	if [ "$DROP_CACHES" = 1 ]; then
		echo 3 >/proc/sys/vm/drop_caches || die "DROP_CACHES=1 needs root"
	fi
}

run_wrk() { # run_wrk URL SECONDS OUTFILE
	run_child /dev/null "$3" "${CLIENT_PREFIX[@]}" wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" \
		-d"$2s" --latency -H "Accept: $MANIFEST_TYPE" "${AUTH[@]}" "$1" || die "wrk failed: $(cat "$3")"
}

# parse_wrk FILE -> "rps p50_ms p99_ms non2xx socket_errors requests"
parse_wrk() {
	awk '
	function to_ms(v) {
		if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
		if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
		if (v ~ /[0-9]s$/) { sub(/s$/, "", v); return v * 1000 }
		if (v ~ /[0-9]m$/) { sub(/m$/, "", v); return v * 60000 }
		if (v ~ /[0-9]h$/) { sub(/h$/, "", v); return v * 3600000 }
		return "nan"
	}
	BEGIN { rps = "nan"; p50 = "nan"; p99 = "nan"; non2xx = 0; errs = 0; reqs = 0 }
	/ requests in / { reqs = $1 }
	/^Requests\/sec:/ { rps = $2 }
	/^[ \t]*50%/ { p50 = to_ms($2) }
	/^[ \t]*99%/ { p99 = to_ms($2) }
	/Non-2xx or 3xx responses:/ { non2xx = $NF }
	/Socket errors:/ { n = split($0, a, /[^0-9]+/); for (i = 1; i <= n; i++) errs += a[i] }
	END { print rps, p50, p99, non2xx, errs, reqs }' "$1"
}

# bench_one KIND ROUND: full measurement of one registry in one round, on a
# fresh process and a fresh data dir (so VmHWM is this round's and no blob
# exists beforehand).
bench_one() {
	local kind=$1 r=$2 name="$1-r$2" dir="$RUN_DIR/data/$1-r$2" repo="bench/blob-r$2"
	local url code size tsec pid out rps p50 p99 non2xx errs hdr="$RUN_DIR/tmp/get.hdr" got busy waited c0 c1 reqs i pulls
	# The benchmark assumes an otherwise idle machine: measure what else runs.
	busy=$(host_busy_pct)
	waited=0
	while ((busy > IDLE_MAX_BUSY && waited < IDLE_WAIT)); do
		((waited == 0)) && log "host CPU ${busy}% busy, waiting up to ${IDLE_WAIT}s for it to calm down"
		sleep 4
		waited=$((waited + 5))
		busy=$(host_busy_pct)
	done
	record "$kind" "$r" host_busy_pct "$busy"
	log "round $r/$ROUNDS: $kind (host CPU busy before start: ${busy}%)"
	if ((busy > IDLE_MAX_BUSY)); then
		log "  warning: other processes keep ${busy}% of the CPUs busy; these numbers will be noisy"
	fi
	start_server "$kind" "$name" "$dir"
	pid=$SRV_PID url=$SRV_URL
	record "$kind" "$r" rss_idle_mib "$(kb_to_mib "$(proc_kb "$pid" VmRSS)")"

	# a. push
	warm_source
	quiesce
	phase_begin "$pid"
	push_big "$url" "$repo" "$BLOB_FILE" "$BLOB_DIGEST"
	phase_end "$pid"
	record "$kind" "$r" push_s "$PUSH_S"
	record "$kind" "$r" push_cpu_s "$SERVER_CPU_S"
	record "$kind" "$r" push_other_cpu_s "$OTHER_CPU_S"
	# d. peak RSS of the server process, up to the end of the push
	record "$kind" "$r" rss_peak_push_mib "$(kb_to_mib "$(proc_kb "$pid" VmHWM)")"
	check_blob_head "$url" "$repo" "$BLOB_DIGEST" "$BLOB_BYTES"
	log "  push   ${PUSH_S}s"

	# b. pull
	quiesce
	# A single 1 GiB pull takes well under a second here, so it is repeated
	# PULL_REPEAT times: pull_s is the median, the CPU figures are per pull.
	pulls=()
	phase_begin "$pid"
	for ((i = 0; i < PULL_REPEAT; i++)); do
		run_child /dev/null "$RUN_DIR/tmp/pull.out" "${CLIENT_PREFIX[@]}" curl -sS "${AUTH[@]}" -L -o /dev/null \
			-w '%{http_code} %{size_download} %{time_total}' "$url/v2/$repo/blobs/$BLOB_DIGEST" || true
		out=$(<"$RUN_DIR/tmp/pull.out")
		read -r code size tsec <<<"$out"
		[ "$code" = 200 ] || die "GET blob answered $code, expected 200"
		[ "$size" = "$BLOB_BYTES" ] || die "GET blob returned $size bytes, expected $BLOB_BYTES"
		pulls+=("$tsec")
	done
	phase_end "$pid"
	tsec=$(printf '%s\n' "${pulls[@]}" | sort -g | awk '{ v[NR] = $1 }
		END { printf "%.6f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	record "$kind" "$r" pull_s "$tsec"
	record "$kind" "$r" pull_cpu_s "$(awk -v t="$SERVER_CPU_S" -v n="$PULL_REPEAT" 'BEGIN { printf "%.2f", t / n }')"
	record "$kind" "$r" pull_other_cpu_s "$(awk -v t="$OTHER_CPU_S" -v n="$PULL_REPEAT" 'BEGIN { printf "%.2f", t / n }')"
	log "  pull   ${tsec}s (median of ${pulls[*]})"
	if [ "$VERIFY_PULL" = 1 ] && [ "$r" = 1 ]; then
		run_child /dev/null "$RUN_DIR/tmp/verify.out" python3 -c '
import hashlib, sys, urllib.request
h = hashlib.sha256()
request = urllib.request.Request(sys.argv[1], headers=dict(a.split(": ", 1) for a in sys.argv[2:]))
with urllib.request.urlopen(request) as r:
    for block in iter(lambda: r.read(1 << 20), b""):
        h.update(block)
print("sha256:" + h.hexdigest())' "$url/v2/$repo/blobs/$BLOB_DIGEST" "${AUTH_HEADER[@]}" || die "could not download the blob again to verify it"
		got=$(<"$RUN_DIR/tmp/verify.out")
		[ "$got" = "$BLOB_DIGEST" ] || die "pulled blob has digest $got, expected $BLOB_DIGEST"
	fi

	# c. manifest GET by tag under load
	push_manifest_image "$url"
	code=$(curl -sS "${AUTH[@]}" -o "$RUN_DIR/tmp/manifest.got" -D "$hdr" -w '%{http_code}' \
		-H "Accept: $MANIFEST_TYPE" "$url/v2/bench/manifest/manifests/latest")
	[ "$code" = 200 ] || die "GET manifest by tag answered $code, expected 200"
	cmp -s "$RUN_DIR/tmp/manifest.got" "$OCI/manifest.json" || die "GET manifest returned different bytes than were pushed"
	got=$(header_value "$hdr" content-type)
	[ "$got" = "$MANIFEST_TYPE" ] || log "  warning: manifest GET Content-Type is '$got'"
	got=$(header_value "$hdr" docker-content-digest)
	[ -z "$got" ] || [ "$got" = "$MANIFEST_DIGEST" ] || die "Docker-Content-Digest '$got', expected $MANIFEST_DIGEST"

	quiesce
	if ((WRK_WARMUP > 0)); then
		run_wrk "$url/v2/bench/manifest/manifests/latest" "$WRK_WARMUP" "$RUN_DIR/logs/$name.wrk-warmup.txt"
	fi
	phase_begin "$pid"
	run_wrk "$url/v2/bench/manifest/manifests/latest" "$WRK_SECONDS" "$RUN_DIR/logs/$name.wrk.txt"
	phase_end "$pid"
	c0=$P_S0 c1=$P_S1
	read -r rps p50 p99 non2xx errs reqs <<<"$(parse_wrk "$RUN_DIR/logs/$name.wrk.txt")"
	[ "$rps" != nan ] || die "could not parse wrk output: $(cat "$RUN_DIR/logs/$name.wrk.txt")"
	record "$kind" "$r" manifest_rps "$rps"
	record "$kind" "$r" manifest_p50_ms "$p50"
	record "$kind" "$r" manifest_p99_ms "$p99"
	record "$kind" "$r" manifest_non2xx "$non2xx"
	record "$kind" "$r" manifest_socket_errors "$errs"
	record "$kind" "$r" wrk_other_cpu_s "$OTHER_CPU_S"
	record "$kind" "$r" manifest_cpu_us_per_req \
		"$(awk -v t="$((c1 - c0))" -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "nan" }')"
	log "  wrk    ${rps} req/s, p99 ${p99} ms"
	if [ "$non2xx" != 0 ] || [ "$errs" != 0 ]; then
		log "  warning: wrk saw $non2xx non-2xx/3xx responses and $errs socket errors"
	fi

	record "$kind" "$r" rss_peak_round_mib "$(kb_to_mib "$(proc_kb "$pid" VmHWM)")"
	stop_pid "$pid"
	rm -rf "$dir"
}

# push_manifest_image BASE: the small image of the manifest test, tagged bench/manifest:latest
push_manifest_image() {
	local url=$1 code
	push_small "$url" bench/manifest "$OCI/layer.bin" "$LAYER_DIGEST"
	push_small "$url" bench/manifest "$OCI/config.json" "$CONFIG_DIGEST"
	code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: $MANIFEST_TYPE" \
		--data-binary "@$OCI/manifest.json" "$url/v2/bench/manifest/manifests/latest")
	[ "$code" = 201 ] || die "PUT manifest answered $code, expected 201"
}

# count_step KIND PROBE CMD...: runs CMD (in this shell, so it may set variables) between a
# reset and a reading of both counting proxies, and appends the reading to $COUNTS_RAW.
count_step() {
	local kind=$1 probe=$2
	shift 2
	curl -fsS -o /dev/null -X POST "$S3_ENDPOINT/__berth_reset"
	curl -fsS -o /dev/null -X POST "$DYNAMODB_ENDPOINT/__berth_reset"
	"$@"
	printf '%s\t%s\t%s\t%s\n' "$kind" "$probe" "$(curl -fsS "$S3_ENDPOINT/__berth_counts")" \
		"$(curl -fsS "$DYNAMODB_ENDPOINT/__berth_counts")" >>"$COUNTS_RAW"
}

# expect_get URL CODES [CURL ARGS...]: one request; CODES lists the acceptable statuses (200/307)
expect_get() {
	local url=$1 codes=$2 code
	shift 2
	code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -H "Accept: $MANIFEST_TYPE" "$@" "$url")
	[[ /$codes/ == */$code/* ]] || die "$* $url answered $code, expected $codes"
}

# repeat N CMD...: runs CMD N times
repeat() {
	local n=$1 i
	shift
	for ((i = 0; i < n; i++)); do "$@"; done
}

# patch_chunk FILE START: PATCH one chunk at START to UP_URL, following the new Location
patch_chunk() {
	local file=$1 start=$2 size hdr="$RUN_DIR/tmp/count-patch.hdr" code loc
	size=$(stat -c %s "$file")
	code=$(curl -sS "${AUTH[@]}" -o /dev/null -D "$hdr" -w '%{http_code}' -X PATCH \
		-H 'Content-Type: application/octet-stream' -H "Content-Range: $start-$((start + size - 1))" \
		--data-binary "@$file" "$UP_URL")
	[ "$code" = 202 ] || die "PATCH $UP_URL answered $code, expected 202"
	loc=$(header_value "$hdr" location)
	[ -n "$loc" ] && UP_URL=$(resolve_url "$COUNT_URL" "$UP_URL" "$loc")
}

# expect_code METHOD URL CODE [CURL ARGS...]
expect_code() {
	local method=$1 url=$2 want=$3 code
	shift 3
	code=$(curl -sS "${AUTH[@]}" -o /dev/null -w '%{http_code}' -X "$method" "$@" "$url")
	[ "$code" = "$want" ] || die "$method $url answered $code, expected $want"
}

# count_requests: with STORAGE=s3, how many S3 and DynamoDB requests each registry makes per
# registry request: manifest and blob reads (COUNT_REQUESTS times each), and the requests of
# a chunked push (three uploads of 3 x 4 MiB chunks, a manifest PUT and DELETE each). Each
# registry talks to Garage and DynamoDB Local through a counting proxy.
count_requests() {
	[ "$STORAGE" = s3 ] || return 0
	local s3_proxy db_proxy kind pid url i chunk manifest digest
	s3_proxy=$(free_port)
	db_proxy=$(free_port)
	python3 "$BENCH_SRC/count-proxy.py" "$s3_proxy" "$S3_PORT" &
	LIVE_PIDS[$!]=s3-count-proxy
	python3 "$BENCH_SRC/count-proxy.py" "$db_proxy" "$DYNAMODB_PORT" &
	LIVE_PIDS[$!]=dynamodb-count-proxy
	for ((i = 0; i < 50; i++)); do
		curl -fsS -o /dev/null "http://127.0.0.1:$s3_proxy/__berth_counts" 2>/dev/null &&
			curl -fsS -o /dev/null "http://127.0.0.1:$db_proxy/__berth_counts" 2>/dev/null && break
		sleep 0.1
	done
	local direct_s3=$S3_ENDPOINT direct_db=$DYNAMODB_ENDPOINT
	S3_ENDPOINT="http://127.0.0.1:$s3_proxy" DYNAMODB_ENDPOINT="http://127.0.0.1:$db_proxy"
	COUNTS_RAW="$RUN_DIR/counts-raw.tsv"
	: >"$COUNTS_RAW"
	for kind in berth distribution; do
		start_server "$kind" "$kind-count" "$RUN_DIR/data/$kind-count"
		pid=$SRV_PID url=$SRV_URL
		COUNT_URL=$url
		push_manifest_image "$url"
		local base="$url/v2/bench/manifest"
		local n=$COUNT_REQUESTS
		count_step "$kind" manifest_get_by_tag repeat "$n" expect_get "$base/manifests/latest" 200
		count_step "$kind" manifest_get_by_digest repeat "$n" expect_get "$base/manifests/$MANIFEST_DIGEST" 200
		count_step "$kind" manifest_head_by_tag repeat "$n" expect_get "$base/manifests/latest" 200 -I
		# Distribution answers a blob HEAD with the same redirect as a GET.
		count_step "$kind" blob_head repeat "$n" expect_get "$base/blobs/$LAYER_DIGEST" 200/307 -I
		count_step "$kind" blob_get repeat "$n" expect_get "$base/blobs/$LAYER_DIGEST" 307
		for ((i = 1; i <= 3; i++)); do
			head -c $((12 * 1024 * 1024)) /dev/urandom >"$RUN_DIR/tmp/count-blob"
			digest=$(sha256_of "$RUN_DIR/tmp/count-blob")
			split -b $((4 * 1024 * 1024)) -d -a 1 "$RUN_DIR/tmp/count-blob" "$RUN_DIR/tmp/count-chunk."
			count_step "$kind" upload_start start_upload "$url" bench/manifest
			for chunk in 0 1 2; do
				count_step "$kind" upload_patch_4mib patch_chunk "$RUN_DIR/tmp/count-chunk.$chunk" \
					$((chunk * 4 * 1024 * 1024))
			done
			count_step "$kind" upload_close_12mib expect_code PUT "$(add_query "$UP_URL" "digest=$digest")" 201 \
				-H 'Content-Length: 0'
			manifest="$RUN_DIR/tmp/count-manifest.json"
			sed "s/}\$/,\"annotations\":{\"count\":\"$kind-$i\"}}/" "$OCI/manifest.json" >"$manifest"
			count_step "$kind" manifest_put expect_code PUT "$base/manifests/count-$i" 201 \
				-H "Content-Type: $MANIFEST_TYPE" --data-binary "@$manifest"
			count_step "$kind" manifest_delete expect_code DELETE "$base/manifests/$(sha256_of "$manifest")" 202
		done
		log "  request counts for $kind recorded"
		stop_pid "$pid"
	done
	# Per registry request: the steps of a probe summed, divided by the requests they made.
	python3 - "$COUNTS_RAW" "$COUNT_REQUESTS" >"$COUNTS" <<-'PY'
		import json, sys
		from collections import Counter, defaultdict
		raw, n = sys.argv[1], int(sys.argv[2])
		per_step = {"manifest_get_by_tag": n, "manifest_get_by_digest": n, "manifest_head_by_tag": n,
		            "blob_head": n, "blob_get": n}
		totals, requests = defaultdict(Counter), Counter()
		for line in open(raw):
		    kind, probe, s3, db = line.rstrip("\n").split("\t")
		    totals[(kind, probe)].update({**json.loads(s3), **json.loads(db)})
		    requests[(kind, probe)] += per_step.get(probe, 1)
		for (kind, probe), seen in totals.items():
		    n = requests[(kind, probe)]
		    for service in ("s3", "dynamodb"):
		        total = sum(v for k, v in seen.items() if k.startswith(service + ":"))
		        print("%s\t%s\t%s\t%g" % (kind, probe, service, total / n))
		    for operation, count in sorted(seen.items()):
		        print("%s\t%s\t%s\t%g" % (kind, probe, operation, count / n))
	PY
	S3_ENDPOINT=$direct_s3 DYNAMODB_ENDPOINT=$direct_db
}

# ----------------------------------------------------------------- main ----
meta started_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta berth_bin "$BERTH_BIN"
meta berth_args "$BERTH_ARGS"
meta access_logs "$ACCESS_LOGS"
meta distribution_bin "$DIST_BIN"
meta distribution_version "$("$DIST_BIN" --version 2>&1 | head -n 1 || true)"
meta git_rev "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta kernel "$(uname -r)"
meta cpus "$(nproc)"
meta cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
meta mem_total_kb "$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
meta curl_version "$(curl --version | head -n 1 | awk '{ print $2 }')"
meta wrk_version "$(wrk --version 2>&1 | head -n 1 | awk '{ print $2 }' || true)"
meta bench_dir "$BENCH_DIR"
meta filesystem "$(df -PT "$RUN_DIR" | awk 'NR == 2 { print $1 " (" $2 ")" }')"
for knob in ROUNDS BLOB_MIB WRK_SECONDS WRK_WARMUP WRK_THREADS WRK_CONNECTIONS PIN_CPUS DROP_CACHES VERIFY_PULL PULL_REPEAT IDLE_WAIT IDLE_MAX_BUSY; do
	meta "knob_$knob" "${!knob}"
done
meta blob_bytes "$BLOB_BYTES"
meta blob_digest "$BLOB_DIGEST"

meta storage "$STORAGE"
start_services
S3_ENDPOINT=${AWS_ENDPOINT_URL_S3:-} DYNAMODB_ENDPOINT=${AWS_ENDPOINT_URL_DYNAMODB:-}
log "berth: $BERTH_BIN; distribution: $DIST_BIN; storage: $STORAGE; $ROUNDS round(s); work dir $RUN_DIR"
START=$EPOCHREALTIME
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2 == 1)); then
		order=(berth distribution)
	else
		order=(distribution berth)
	fi
	for kind in "${order[@]}"; do
		bench_one "$kind" "$r"
	done
done
meta duration_s "$(elapsed "$START" "$EPOCHREALTIME")"
count_requests

mkdir -p "$(dirname "$RESULTS_JSON")"
python3 "$BENCH_SRC/report.py" --raw "$RAW" --meta "$META" --counts "$COUNTS" --json "$RESULTS_JSON"
STATUS=ok
