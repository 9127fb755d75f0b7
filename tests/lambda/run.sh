#!/usr/bin/env bash
# The functions as Lambda runs them: built with `cargo lambda build`, started as `bootstrap`
# processes against the Lambda runtime emulator (`cargo lambda watch --only-lambda-apis`),
# behind lambda-gateway (tests/src/bin/lambda-gateway.rs, routing like the API Gateway of
# infra/template.yaml), on Garage (S3), DynamoDB Local and moto (standing in for SSM
# Parameter Store, which holds the token keys). Through the gateway, with token auth on:
# challenges and refusals, `docker login`, a private project made through the management
# API, a chunked push of an image with a 50 MiB layer (curl, every chunk within the
# advertised OCI-Chunk-Max-Length), then `docker pull` and `skopeo copy` of it (blob GETs
# answered 307 and followed to Garage), the tag listing, and a key rotation: the restarted
# token function signs with the new key and the warm registry functions accept it. Then
# replication as AWS runs it: the events function (invoked with `cargo lambda invoke`, as
# Lambda's event sources would) on a queue, dead-letter queue and KMS key in moto, policies
# made through the token function's replication API, and the pushed image copied to CNCF
# Distribution (/usr/bin/docker-registry) from a stream record of its tag and the queued job.
# Then the upload front (tests/lambda/upload-front.sh): `berth upload-front` as a process, the
# push function handing uploads to it, docker, podman, skopeo and curl pushing 200 MiB layers
# past the gateway's cap, refused grants, the front killed mid-push, and its container image.
#
# Usage: tests/lambda/run.sh
#        tests/lambda/run.sh build   only build the functions (then run with LAMBDA_SKIP_BUILD=1)
#
# Environment, as scripts/test-all.sh exports it from scripts/services/{garage,dynamodb-local}.sh:
#   AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL_S3
#   AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SSM AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_KMS
#   BERTH_TEST_S3_BUCKET
# (AWS_ENDPOINT_URL_SSM, _SQS and _KMS from scripts/services/moto.sh)
# Knobs:
#   LAMBDA_LAYER_MIB   size of the random file in the image's layer, MiB (default 50)
#   LAMBDA_SKIP_BUILD=1  use the function binaries and gateway already built
#   LAMBDA_BUILD_MODE  release (default) or debug: the profile of the functions' build
#   LAMBDA_FRONT_SCENARIOS=0  skip the upload front's scenarios (and its container image)
#   BERTH_BIN          berth, for `berth init` (default target/release/berth, else target/debug/berth)
#   E2E_KEEP_TMP=1     keep the scratch directory (function, emulator and gateway logs)
#
# Prints one line per check and ends with "N passed, M failed"; exits non-zero on any
# failure. Every process it starts is stopped by PID when it exits. The table and the S3
# prefix it creates are left to the services' own clean-up (DynamoDB Local keeps tables in
# memory; test-all.sh removes Garage's directory).
set -euo pipefail

# shellcheck source=../e2e/lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
# shellcheck source=upload-front.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/upload-front.sh"

ROOT=$(cd "$E2E_DIR/../.." && pwd)
LAYER_MIB=${LAMBDA_LAYER_MIB:-50}
# release (as deployed) or debug (as `SAM_BUILD_MODE=debug sam build` builds them).
BUILD_MODE=${LAMBDA_BUILD_MODE:-release}
[[ $BUILD_MODE == release || $BUILD_MODE == debug ]] || die "LAMBDA_BUILD_MODE is release or debug, not $BUILD_MODE"
RUN_ID=$(date +%s)-$$-$RANDOM
FUNCTIONS=(registry-pull registry-push token)
# No route: started apart from FUNCTIONS and invoked through the emulator's Invoke API.
EVENTS_FUNCTION=events
GC_FUNCTION=gc
DISTRIBUTION=/usr/bin/docker-registry
ADMIN="admin"
# Made up for the run: upper, lower case and digits, as the password policy wants.
ADMIN_PASSWORD="Lambda-$RANDOM$RANDOM-Test"
PROJECT=lambda
# Generous for a small machine, but every wait has an end.
CURL_TIMEOUT=60
CLIENT_TIMEOUT=600

MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_CONFIG=application/vnd.oci.image.config.v1+json
MT_OCI_LAYER=application/vnd.oci.image.layer.v1.tar+gzip

# --- helpers -------------------------------------------------------------------

sha256_file() { sha256sum "$1" | awk '{print "sha256:" $1}'; }

# url PATH_OR_URL: a Location made absolute against the gateway.
url() { if [[ $1 == http://* || $1 == https://* ]]; then echo "$1"; else echo "$GATEWAY_URL$1"; fi; }

# token SCOPE [USER:PASSWORD]: a bearer token from the token function for SCOPE (empty: none),
# as the admin unless credentials are given.
token() {
  local scope=$1 credentials=${2:-$ADMIN:$ADMIN_PASSWORD} query="service=berth"
  [[ -z $scope ]] || query+="&scope=$scope"
  curl -sS --max-time "$CURL_TIMEOUT" -u "$credentials" "$GATEWAY_URL/service/token?$query" | jq -r .token
}

# jwt_part N TOKEN: the decoded JSON of part N of a JWT (0 header, 1 claims).
jwt_part() {
  python3 -c 'import base64, sys; p = sys.argv[2].split(".")[int(sys.argv[1])]; print(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode())' "$1" "$2"
}

# areq METHOD URL OUT [CURL ARGS...]: req with the run's bearer token ($TOKEN).
areq() {
  local method=$1 url=$2 out=$3
  shift 3
  req "$method" "$url" "$out" -H "Authorization: Bearer $TOKEN" "$@"
}



# proc_kib PID FIELD: a /proc/PID/status memory field (VmRSS, VmHWM) in KiB.
proc_kib() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

wait_for_port() {
  local port=$1 pid=$3 deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

show_logs() {
  local fn
  show_log emulator "$E2E_TMP/emulator.log"
  show_log gateway "$E2E_TMP/gateway.log"
  for fn in "${FUNCTIONS[@]}" "$EVENTS_FUNCTION"; do show_log "$fn" "$E2E_TMP/$fn.log"; done
}

setup_failed() {
  show_logs
  die "$@"
}

# --- build -------------------------------------------------------------------------

# The functions as `sam build` builds them (each on its own, with its own features), so that
# after one of the two the other finds them built.
build_functions() {
  local mode=() fn
  [[ $BUILD_MODE == debug ]] || mode=(--release)
  log_step "building the functions (cargo lambda build ${mode[*]})"
  (
    cd "$ROOT"
    for fn in "${FUNCTIONS[@]}" "$EVENTS_FUNCTION" "$GC_FUNCTION"; do
      run cargo lambda build "${mode[@]}" --bin "$fn"
    done
  )
}

build() {
  build_functions
  log_step "building the gateway"
  (cd "$ROOT" && run cargo build -p berth-tests --bin lambda-gateway)
}

# --- processes -----------------------------------------------------------------

EMULATOR_PID=""
GATEWAY_PID=""
declare -A FUNCTION_PID=() FIRST_ANSWER_MS=()

start_emulator() {
  local port
  port=$(free_port)
  EMULATOR_URL=http://127.0.0.1:$port
  # From the workspace root: the emulator only accepts function names that are binaries of
  # the workspace. It starts no function itself (--only-lambda-apis); each function process
  # polls its own runtime API under /.rt/<name>/.
  (cd "$ROOT" && exec cargo lambda watch --only-lambda-apis --ignore-changes -A 127.0.0.1 -P "$port") \
    >"$E2E_TMP/emulator.log" 2>&1 &
  EMULATOR_PID=$!
  on_exit "stop_pid $EMULATOR_PID 'cargo lambda watch'"
  wait_for_port "$port" 60 "$EMULATOR_PID" || setup_failed "the Lambda emulator did not start"
  log_info "cargo lambda watch pid $EMULATOR_PID on $EMULATOR_URL"
}

start_gateway() {
  local port
  port=$(free_port)
  GATEWAY=127.0.0.1:$port
  GATEWAY_URL=http://$GATEWAY
  "$TARGET_DIR/debug/lambda-gateway" --listen "$GATEWAY" --emulator "$EMULATOR_URL" \
    2>"$E2E_TMP/gateway.log" &
  GATEWAY_PID=$!
  on_exit "stop_pid $GATEWAY_PID lambda-gateway"
  wait_for_port "$port" 30 "$GATEWAY_PID" || setup_failed "lambda-gateway did not start"
  log_info "lambda-gateway pid $GATEWAY_PID on $GATEWAY_URL"
}

# exec_function NAME: NAME's bootstrap in place of the (background) shell that calls it, with
# the environment Lambda would give it.
exec_function() {
  local name=$1 blob_store="s3://$BERTH_TEST_S3_BUCKET/$PREFIX"
  # Only the function environment contract, whatever the caller has exported.
  while read -r var; do unset "$var"; done < <(compgen -e | grep '^BERTH_' || true)
  export BERTH_BLOB_STORE=$blob_store
  export BERTH_METADATA="dynamodb://$TABLE"
  export BERTH_S3_PATH_STYLE=true
  export BERTH_S3_PRESIGN_EXPIRY=1200s
  export BERTH_CHUNK_MIN_LENGTH=1048576
  export BERTH_CHUNK_MAX_LENGTH=4194304
  export BERTH_LOG=info
  export BERTH_TOKEN_KEYS_SSM=$KEYS_PATH
  [[ $name != registry-push || -z ${PUSH_UPLOAD_URL:-} ]] || export BERTH_UPLOAD_URL=$PUSH_UPLOAD_URL
  replication_environment "$name"
  # Garbage collection spares nothing for its grace (the runs the token function starts), and
  # the gc function works one step of two candidates per invocation: a run takes several.
  export BERTH_GC_GRACE=0s
  # Tag retention likewise: one repository per invocation.
  [[ $name != "$GC_FUNCTION" ]] || export BERTH_GC_STEPS=1 BERTH_GC_STEP_SIZE=2 BERTH_RETENTION_STEPS=1
  export AWS_LAMBDA_RUNTIME_API="$EMULATOR_URL/.rt/$name"
  export AWS_LAMBDA_FUNCTION_NAME=$name
  export AWS_LAMBDA_FUNCTION_VERSION="\$LATEST"
  export AWS_LAMBDA_FUNCTION_MEMORY_SIZE=512
  exec "$TARGET_DIR/lambda/$name/bootstrap"
}

# start_function NAME PROBE_METHOD PROBE_PATH: starts NAME's bootstrap with the environment
# Lambda would give it, sends it its first request through the gateway right away (the
# emulator holds it until the function polls) and records how long the answer took.
start_function() {
  local name=$1 method=$2 path=$3 pid started status
  started=$(now_ms)
  exec_function "$name" >"$E2E_TMP/$name.log" 2>&1 &
  pid=$!
  FUNCTION_PID[$name]=$pid
  on_exit "stop_pid $pid $name"
  status=$(req "$method" "$GATEWAY_URL$path" "$E2E_TMP/probe-$name" || true)
  FIRST_ANSWER_MS[$name]=$(($(now_ms) - started))
  kill -0 "$pid" 2>/dev/null || setup_failed "$name exited at start"
  [[ $status =~ ^[2-4][0-9][0-9]$ && $status != 413 ]] ||
    setup_failed "$name gave no answer to its first request ($method $path: ${status:-none})"
  log_info "$name pid $pid: first answer ($method $path, $status) ${FIRST_ANSWER_MS[$name]} ms after start"
}

# replication_environment NAME: the replication variables the template gives NAME (the token
# and events functions), in a function's subshell.
replication_environment() {
  [[ $1 == token || $1 == "$EVENTS_FUNCTION" ]] || return 0
  export BERTH_REPLICATION_QUEUE_URL=$QUEUE_URL
  export BERTH_REPLICATION_KMS_KEY=$KMS_KEY
  [[ $1 != token ]] || export BERTH_REPLICATION_DLQ_URL=$DLQ_URL
}

# A replication queue with its dead-letter queue (redrive after 5 receives, as the template
# has it) and a KMS key, in moto, through boto3 (which moto's server brings along).
make_replication_resources() {
  local made
  made=$(python3 - "$RUN_ID" <<'PY'
import json, os, sys

import boto3

run = sys.argv[1]
# boto3 reads AWS_DEFAULT_REGION only; the functions use AWS_REGION (Garage's).
region = os.environ.get("AWS_REGION", "us-east-1")
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"], region_name=region)
kms = boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL_KMS"], region_name=region)
dlq = sqs.create_queue(QueueName=f"berth-lambda-{run}-dlq")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
redrive = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
queue = sqs.create_queue(QueueName=f"berth-lambda-{run}", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
key = kms.create_key(Description="berth lambda test replication credentials")["KeyMetadata"]["KeyId"]
print(queue, dlq, key)
PY
  ) || setup_failed "could not make the replication queues and key in moto"
  read -r QUEUE_URL DLQ_URL KMS_KEY <<<"$made"
  log_info "replication queue $QUEUE_URL, dead letters $DLQ_URL, KMS key $KMS_KEY"
}

# A function without a route (events, gc; events by default): its bootstrap, polling the
# emulator like the others; its first invocation is the scenario's.
start_events_function() {
  local name=${1:-$EVENTS_FUNCTION} pid
  exec_function "$name" >"$E2E_TMP/$name.log" 2>&1 &
  pid=$!
  FUNCTION_PID[$name]=$pid
  on_exit "stop_pid $pid $name"
  sleep 1
  kill -0 "$pid" 2>/dev/null || setup_failed "$name exited at start"
  log_info "$name pid $pid"
}

# invoke_events EVENT_FILE [FUNCTION]: the events function's (or FUNCTION's) answer to the
# event, as Lambda's event sources invoke it (`cargo lambda invoke` through the emulator's
# Invoke API).
invoke_events() {
  (cd "$ROOT" && timeout "$CLIENT_TIMEOUT" cargo lambda invoke "${2:-$EVENTS_FUNCTION}" \
    --invoke-address 127.0.0.1 --invoke-port "${EMULATOR_URL##*:}" --data-file "$1" --output-format json)
}

# --- the image ---------------------------------------------------------------------

# A docker-loadable OCI image built from local files: one gzip layer holding a random file
# of LAYER_MIB MiB and a text file, its config (diff_ids from the uncompressed tar) and its
# manifest. Names and digests go to $IMAGE/vars for the scenarios.
make_image() {
  local dir=$IMAGE arch diff_id
  mkdir -p "$dir/rootfs/data"
  head -c $((LAYER_MIB * 1024 * 1024)) /dev/urandom >"$dir/rootfs/data/random.bin"
  printf 'berth lambda test, run %s\n' "$RUN_ID" >"$dir/rootfs/hello.txt"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$dir/rootfs" -cf "$dir/layer.tar" .
  diff_id=$(sha256_file "$dir/layer.tar")
  gzip -1 -n -c "$dir/layer.tar" >"$dir/layer.tar.gz"
  rm "$dir/layer.tar"
  case $(uname -m) in
    aarch64 | arm64) arch=arm64 ;;
    *) arch=amd64 ;;
  esac
  jq -cjn --arg arch "$arch" --arg diff_id "$diff_id" '{
      architecture: $arch, os: "linux",
      config: {Env: ["PATH=/"], Cmd: ["/hello.txt"]},
      rootfs: {type: "layers", diff_ids: [$diff_id]},
      history: [{created: "1970-01-01T00:00:00Z", created_by: "tests/lambda/run.sh"}]
    }' >"$dir/config.json"
  jq -cjn \
    --arg mt "$MT_OCI_MANIFEST" \
    --arg cmt "$MT_OCI_CONFIG" --arg cd "$(sha256_file "$dir/config.json")" --argjson cs "$(size_of "$dir/config.json")" \
    --arg lmt "$MT_OCI_LAYER" --arg ld "$(sha256_file "$dir/layer.tar.gz")" --argjson ls "$(size_of "$dir/layer.tar.gz")" \
    '{schemaVersion: 2, mediaType: $mt,
      config: {mediaType: $cmt, digest: $cd, size: $cs},
      layers: [{mediaType: $lmt, digest: $ld, size: $ls}]}' >"$dir/manifest.json"
  cat >"$dir/vars" <<EOF
REPO=lambda/app-$RUN_ID
TAG=v1
TAG2=v2
LAYER_DIGEST=$(sha256_file "$dir/layer.tar.gz")
LAYER_SIZE=$(size_of "$dir/layer.tar.gz")
CONFIG_DIGEST=$(sha256_file "$dir/config.json")
MANIFEST_DIGEST=$(sha256_file "$dir/manifest.json")
HELLO="$(cat "$dir/rootfs/hello.txt")"
EOF
  rm -r "$dir/rootfs"
  log_info "layer: $(size_of "$dir/layer.tar.gz") bytes, $(sha256_file "$dir/layer.tar.gz")"
}

# --- scenarios -----------------------------------------------------------------

scenario_gateway() {
  local out=$E2E_TMP/gateway-check status
  status=$(areq GET "$GATEWAY_URL/v2/" "$out")
  assert_eq "GET /v2/ through the gateway answers 200" 200 "$status"
  assert_eq "GET /v2/ carries Docker-Distribution-API-Version" registry/2.0 \
    "$(header "$out.headers" docker-distribution-api-version)"

  status=$(req GET "$GATEWAY_URL/" "$out")
  assert_eq "GET / has no route (404)" 404 "$status"
  assert_eq "an unrouted request gets API Gateway's body" '{"message":"Not Found"}' "$(cat "$out.body")"
  assert_eq "POST /v2/ has no route (404)" 404 "$(req POST "$GATEWAY_URL/v2/" "$out")"

  head -c $((10 * 1024 * 1024 + 1)) /dev/zero >"$E2E_TMP/over-10mib.bin"
  status=$(req PATCH "$GATEWAY_URL/v2/lambda/any/blobs/uploads/none" "$out" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$E2E_TMP/over-10mib.bin")
  assert_eq "a body over API Gateway's 10 MiB is refused with 413" 413 "$status"
  assert_eq "... with API Gateway's body" '{"message":"Request Entity Too Large"}' "$(cat "$out.body")"

  # Straight to the emulator, past the gateway's routing: the pull function refuses writes.
  status=$(req POST "$EMULATOR_URL/lambda-url/registry-pull/v2/lambda/any/blobs/uploads/" "$out")
  assert_eq "registry-pull answers a push endpoint with 405" 405 "$status"
  assert_eq "... and the OCI code UNSUPPORTED" UNSUPPORTED "$(jq -r '.errors[0].code' "$out.body")"
}

scenario_push() {
  # shellcheck source=/dev/null
  source "$IMAGE/vars"
  local out=$E2E_TMP/push status location min max offset len end chunks=0 short=0 got
  local layer=$IMAGE/layer.tar.gz

  status=$(areq POST "$GATEWAY_URL/v2/$REPO/blobs/uploads/" "$out")
  assert_eq "POST starts an upload session (202)" 202 "$status"
  location=$(header "$out.headers" location)
  min=$(header "$out.headers" oci-chunk-min-length)
  max=$(header "$out.headers" oci-chunk-max-length)
  assert_match "POST advertises OCI-Chunk-Min-Length" '^[0-9]+$' "$min"
  assert_match "POST advertises OCI-Chunk-Max-Length" '^[0-9]+$' "$max"
  assert_eq "Docker-Upload-UUID names the session in Location" "${location##*/}" \
    "$(header "$out.headers" docker-upload-uuid)"
  log_info "chunk lengths: min $min, max $max; layer $LAYER_SIZE bytes"

  offset=0
  while ((offset < LAYER_SIZE)); do
    len=$((LAYER_SIZE - offset < max ? LAYER_SIZE - offset : max))
    end=$((offset + len - 1))
    status=$(dd if="$layer" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$len" status=none |
      areq PATCH "$(url "$location")" "$out" -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $offset-$end" --data-binary @-)
    [[ $status == 202 ]] || fail "PATCH of bytes $offset-$end answers 202" "status $status: $(cat "$out.body")"
    got=$(header "$out.headers" range)
    [[ $got == "0-$end" ]] || fail "PATCH of bytes $offset-$end acknowledges Range 0-$end" "Range: $got"
    location=$(header "$out.headers" location)
    ((len >= min || offset + len == LAYER_SIZE)) || short=$((short + 1))
    chunks=$((chunks + 1))
    offset=$((end + 1))

    if ((chunks == 1)); then
      # The first chunk again: the session is past it, so its offset no longer fits.
      status=$(head -c "$len" "$layer" | areq PATCH "$(url "$location")" "$out" \
        -H 'Content-Type: application/octet-stream' -H "Content-Range: 0-$end" --data-binary @-)
      assert_eq "a chunk at a stale offset is refused with 416" 416 "$status"
      assert_eq "... whose Range says what the session holds" "0-$end" "$(header "$out.headers" range)"
    fi
  done
  pass "the layer went in $chunks PATCH chunks of at most OCI-Chunk-Max-Length ($max) bytes"
  assert_eq "no chunk but the last is under OCI-Chunk-Min-Length" 0 "$short"

  status=$(areq PUT "$(url "$(with_digest "$location" "$LAYER_DIGEST")")" "$out")
  assert_eq "PUT ?digest closes the chunked upload (201)" 201 "$status"
  assert_eq "... with Docker-Content-Digest of the layer" "$LAYER_DIGEST" "$(header "$out.headers" docker-content-digest)"

  status=$(areq HEAD "$GATEWAY_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out")
  assert_eq "HEAD of the layer answers 200" 200 "$status"
  assert_eq "... with its size as Content-Length" "$LAYER_SIZE" "$(header "$out.headers" content-length)"

  status=$(areq GET "$GATEWAY_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out")
  assert_eq "GET of the layer answers 307" 307 "$status"
  location=$(header "$out.headers" location)
  assert_contains "... to a presigned URL on Garage" "$location" "${AWS_ENDPOINT_URL_S3#http://}/"
  curl -sS --max-time "$CURL_TIMEOUT" -o "$E2E_TMP/layer-from-s3" "$location"
  assert_eq "the presigned URL serves the pushed layer bytes" "$LAYER_DIGEST" "$(sha256_file "$E2E_TMP/layer-from-s3")"
  rm -f "$E2E_TMP/layer-from-s3"

  # One byte over the limit, on its own session.
  status=$(areq POST "$GATEWAY_URL/v2/$REPO/blobs/uploads/" "$out")
  location=$(header "$out.headers" location)
  status=$(head -c $((max + 1)) /dev/urandom | areq PATCH "$(url "$location")" "$out" \
    -H 'Content-Type: application/octet-stream' -H "Content-Range: 0-$max" --data-binary @-)
  assert_eq "a chunk of OCI-Chunk-Max-Length + 1 bytes is refused with 413" 413 "$status"
  assert_match "... with an OCI error" '^[A-Z_]+$' "$(jq -r '.errors[0].code' "$out.body" 2>/dev/null || true)"
  assert_contains "... naming the limit" "$(cat "$out.body")" "$max"
  log_info "the refusal: $(cat "$out.body")"
  areq DELETE "$(url "$location")" "$out" >/dev/null || true

  # The config, in one PUT that carries the whole blob.
  status=$(areq POST "$GATEWAY_URL/v2/$REPO/blobs/uploads/" "$out")
  location=$(with_digest "$(header "$out.headers" location)" "$CONFIG_DIGEST")
  status=$(areq PUT "$(url "$location")" "$out" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$IMAGE/config.json")
  assert_eq "the config is pushed with POST + PUT ?digest and a body (201)" 201 "$status"

  status=$(areq PUT "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$out" -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary "@$IMAGE/manifest.json")
  assert_eq "the manifest PUT by tag answers 201" 201 "$status"
  assert_eq "... with the manifest's digest" "$MANIFEST_DIGEST" "$(header "$out.headers" docker-content-digest)"

  status=$(areq GET "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$out" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "GET of the manifest by tag answers 200" 200 "$status"
  assert_eq "... with the pushed bytes" "$MANIFEST_DIGEST" "$(sha256_file "$out.body")"
  assert_eq "... and their media type" "$MT_OCI_MANIFEST" "$(header "$out.headers" content-type)"
  : >"$IMAGE/pushed"
}

pushed_image() {
  [[ -e $IMAGE/pushed ]] || fail "the image was pushed" "the push scenario did not finish"
  # shellcheck source=/dev/null
  source "$IMAGE/vars"
}

scenario_docker() {
  pushed_image
  local ref=$GATEWAY/$REPO:$TAG log=$E2E_TMP/docker-pull.log container
  docker logout "$GATEWAY" >/dev/null 2>&1 || true
  run_to "$E2E_TMP/docker-anonymous.log" timeout "$CLIENT_TIMEOUT" docker pull "$ref" || true
  assert_eq "an anonymous docker pull from the private project is refused" "" \
    "$(docker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)"
  assert_cmd "docker login through the gateway as the admin" \
    docker login -u "$ADMIN" --password-stdin "$GATEWAY" <<<"$ADMIN_PASSWORD"
  run_to "$log" timeout "$CLIENT_TIMEOUT" docker pull "$ref"
  assert_contains "docker pull reports the manifest digest" "$(cat "$log")" "Digest: $MANIFEST_DIGEST"
  assert_eq "the pulled image's id is the config digest" "$CONFIG_DIGEST" \
    "$(docker image inspect -f '{{.Id}}' "$ref")"
  container=$(docker create "$ref")
  assert_eq "the layer's files are in the image" "$HELLO" \
    "$(docker cp "$container:/hello.txt" - | tar -xO)"
  docker rm "$container" >/dev/null
  assert_match "docker's layer GET was answered 307 by registry-pull" \
    "GET /v2/$REPO/blobs/$LAYER_DIGEST -> registry-pull 307" "$(cat "$E2E_TMP/gateway.log")"
  assert_eq "no blob bytes went through the gateway" "" \
    "$(grep -E "^GET /v2/$REPO/blobs/sha256:[0-9a-f]+ -> registry-pull 200" "$E2E_TMP/gateway.log" || true)"
}

scenario_skopeo() {
  pushed_image
  local dir=$E2E_TMP/skopeo-dir
  run timeout "$CLIENT_TIMEOUT" skopeo --tmpdir "$E2E_TMP" copy --src-tls-verify=false \
    --src-creds "$ADMIN:$ADMIN_PASSWORD" "docker://$GATEWAY/$REPO:$TAG" "dir:$dir"
  assert_eq "skopeo's copy of the layer has the pushed digest" "$LAYER_DIGEST" \
    "$(sha256_file "$dir/${LAYER_DIGEST#sha256:}")"
  assert_eq "skopeo's copy of the config has the pushed digest" "$CONFIG_DIGEST" \
    "$(sha256_file "$dir/${CONFIG_DIGEST#sha256:}")"
  assert_eq "skopeo kept the manifest bytes" "$MANIFEST_DIGEST" "$(sha256_file "$dir/manifest.json")"
}

scenario_tags() {
  pushed_image
  local out=$E2E_TMP/tags status next
  status=$(areq PUT "$GATEWAY_URL/v2/$REPO/manifests/$TAG2" "$out" -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary "@$IMAGE/manifest.json")
  assert_eq "the manifest PUT under a second tag answers 201" 201 "$status"

  status=$(areq GET "$GATEWAY_URL/v2/$REPO/tags/list" "$out")
  assert_eq "GET tags/list answers 200" 200 "$status"
  assert_eq "... naming the repository" "$REPO" "$(jq -r .name "$out.body")"
  assert_eq "... with both tags" "$TAG $TAG2" "$(jq -r '.tags | join(" ")' "$out.body")"

  status=$(areq GET "$GATEWAY_URL/v2/$REPO/tags/list?n=1" "$out")
  assert_eq "GET tags/list?n=1 gives the first tag" "$TAG" "$(jq -r '.tags | join(" ")' "$out.body")"
  next=$(header "$out.headers" link | sed -nE 's/^<([^>]*)>.*rel="?next"?.*/\1/p')
  assert_match "... and a Link to the next page" '^/v2/' "$next"
  areq GET "$(url "$next")" "$out" >/dev/null
  assert_eq "the next page gives the second tag" "$TAG2" "$(jq -r '.tags | join(" ")' "$out.body")"

  assert_eq "skopeo list-tags sees both tags" "$TAG $TAG2" \
    "$(timeout "$CLIENT_TIMEOUT" skopeo list-tags --tls-verify=false --creds "$ADMIN:$ADMIN_PASSWORD" "docker://$GATEWAY/$REPO" | jq -r '.Tags | sort | join(" ")')"
}

scenario_auth() {
  local out=$E2E_TMP/auth status challenge pull_token
  status=$(req GET "$GATEWAY_URL/v2/" "$out")
  assert_eq "GET /v2/ without a token answers 401" 401 "$status"
  challenge=$(header "$out.headers" www-authenticate)
  assert_eq "... with a challenge naming the token function behind the gateway" \
    "Bearer realm=\"http://$GATEWAY/service/token\",service=\"berth\"" "$challenge"
  assert_eq "... and the OCI code UNAUTHORIZED" UNAUTHORIZED "$(jq -r '.errors[0].code' "$out.body")"

  status=$(req POST "$GATEWAY_URL/v2/$PROJECT/anything/blobs/uploads/" "$out")
  assert_eq "an anonymous push is refused (401)" 401 "$status"
  assert_contains "... with the scope to ask for" "$(header "$out.headers" www-authenticate)" \
    "scope=\"repository:$PROJECT/anything:pull,push\""

  status=$(req GET "$GATEWAY_URL/service/token?service=berth" "$out" -u "$ADMIN:wrong-$ADMIN_PASSWORD")
  assert_eq "the token function refuses a wrong password (401)" 401 "$status"
  status=$(req GET "$GATEWAY_URL/service/token?service=berth&scope=repository:$PROJECT/app:pull" "$out")
  assert_eq "an anonymous token request is answered (200)" 200 "$status"
  assert_eq "... with a token granting nothing in the private project" "[]" \
    "$(jwt_part 1 "$(jq -r .token "$out.body")" | jq -c '.access // []')"

  pull_token=$(token "repository:$PROJECT/app:pull")
  status=$(req POST "$GATEWAY_URL/v2/$PROJECT/app/blobs/uploads/" "$out" -H "Authorization: Bearer $pull_token")
  assert_eq "a pull-only token cannot push (401)" 401 "$status"
  assert_contains "... insufficient_scope" "$(header "$out.headers" www-authenticate)" 'error="insufficient_scope"'

  status=$(req GET "$GATEWAY_URL/api/v2.0/projects/$PROJECT" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the management API answers through the gateway" 200 "$status"
  assert_eq "... the project is private" false "$(jq -r '.metadata.public' "$out.body")"
}

# A rotation as an operator does it: `berth rotate-key` in Parameter Store, the token function
# restarted (a new instance, as after a redeploy or a cold start; in the main shell, which
# stops it at exit); the registry functions stay warm.
rotate_keys() {
  run "$BERTH" rotate-key --token-keys-ssm "$KEYS_PATH"
  stop_pid "${FUNCTION_PID[token]}" token
  start_function token GET "/service/token?service=berth"
}

# After rotate_keys: the new key signs, and the warm registry functions accept its tokens and
# the old key's.
scenario_rotation() {
  pushed_image
  local out=$E2E_TMP/rotation status old_kid new_kid new_token
  old_kid=$(jwt_part 0 "$TOKEN" | jq -r .kid)
  new_token=$(token "repository:$REPO:pull")
  new_kid=$(jwt_part 0 "$new_token" | jq -r .kid)
  assert_ne "the restarted token function signs with a new key" "$old_kid" "$new_kid"
  status=$(req GET "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$out" -H "Authorization: Bearer $new_token" \
    -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "the warm registry-pull accepts the new key's token (200)" 200 "$status"
  assert_contains "... having reloaded the public keys" "$(cat "$E2E_TMP/registry-pull.log")" \
    "reloaded the token verification keys"
  status=$(areq GET "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$out" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "the old key's token still verifies (200)" 200 "$status"
}

# Replication of the pushed image to CNCF Distribution, the way the deployed stack runs it:
# endpoint and policy through the token function's replication API (the credential sealed
# with KMS), the tag's stream record to the events function, which queues a task on SQS, the
# queued message back to the events function, which copies the image.
scenario_replication() {
  pushed_image
  local out=$E2E_TMP/replication status port endpoint policy answer event dist_dir dist_pid execution
  [[ -x $DISTRIBUTION ]] || fail "docker-registry is installed" "no $DISTRIBUTION (apt-get install docker-registry)"
  port=$(free_port)
  dist_dir=$E2E_TMP/distribution
  mkdir -p "$dist_dir"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$dist_dir/storage" "$port" >"$dist_dir/config.yml"
  "$DISTRIBUTION" serve "$dist_dir/config.yml" >"$dist_dir/log" 2>&1 &
  dist_pid=$!
  # The scenario runs in a subshell of its own, whose end (passed or failed) stops it: an
  # on_exit registered here would be lost with the subshell.
  # shellcheck disable=SC2064 # the PID is known now
  trap "stop_pid $dist_pid docker-registry" EXIT
  wait_for_port "$port" 30 "$dist_pid" || fail "docker-registry starts" "$(cat "$dist_dir/log")"

  status=$(req POST "$GATEWAY_URL/api/v2.0/registries" "$out" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d "{\"name\":\"distribution\",\"url\":\"http://127.0.0.1:$port\",
      \"type\":\"docker-registry\",\"credential\":{\"type\":\"basic\",\"access_key\":\"robot\",\"access_secret\":\"sealed-by-kms\"}}")
  assert_eq "the token function's replication API makes an endpoint (201)" 201 "$status"
  endpoint=$(header "$out.headers" location)
  endpoint=${endpoint##*/}
  status=$(req POST "$GATEWAY_URL/api/v2.0/replication/policies" "$out" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d "{\"name\":\"to-distribution\",\"dest_registry\":{\"id\":$endpoint},
      \"filters\":[{\"type\":\"name\",\"value\":\"lambda/**\"}],\"trigger\":{\"type\":\"event_based\"},\"enabled\":true}")
  assert_eq "... and an event-based policy (201)" 201 "$status"
  policy=$(header "$out.headers" location)
  policy=${policy##*/}

  event=$E2E_TMP/stream-event.json
  jq --arg pk "REPO#$REPO" --arg sk "TAG#$TAG" --arg digest "$MANIFEST_DIGEST" '
      .Records[0].dynamodb.Keys = {PK: {S: $pk}, SK: {S: $sk}}
      | .Records[0].dynamodb.NewImage.PK.S = $pk | .Records[0].dynamodb.NewImage.SK.S = $sk
      | .Records[0].dynamodb.NewImage.digest.S = $digest' \
    "$ROOT/infra/events/replication/stream-tag-pushed.json" >"$event"
  answer=$(invoke_events "$event") || fail "the events function takes a stream batch" "$answer"
  assert_eq "the stream record of the pushed tag is handled" '{"batchItemFailures":[]}' "$(jq -c . <<<"$answer")"

  # The queued job, as Lambda's SQS event source would receive and hand it over.
  event=$E2E_TMP/queue-event.json
  python3 - "$QUEUE_URL" "$ROOT/infra/events/replication/queue-plan.json" >"$event" <<'PY' ||
import json, os, sys

import boto3

region = os.environ.get("AWS_REGION", "us-east-1")
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"], region_name=region)
messages = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
if len(messages) != 1:
    sys.exit(f"expected one queued job, found {len(messages)}")
with open(sys.argv[2]) as sample:
    event = json.load(sample)
event["Records"][0].update(messageId=messages[0]["MessageId"], body=messages[0]["Body"],
                           receiptHandle=messages[0]["ReceiptHandle"])
print(json.dumps(event))
PY
    fail "one replication task was queued" "$(cat "$event")"
  assert_eq "the queued job is a task" task "$(jq -r '.Records[0].body | fromjson | .job' "$event")"
  answer=$(invoke_events "$event") || fail "the events function takes an SQS batch" "$answer"
  assert_eq "the task ran" '{"batchItemFailures":[]}' "$(jq -c . <<<"$answer")"
  status=$(req HEAD "http://127.0.0.1:$port/v2/$REPO/manifests/$TAG" "$out" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "the image is on Distribution (200)" 200 "$status"
  assert_eq "... with the pushed digest" "$MANIFEST_DIGEST" "$(header "$out.headers" docker-content-digest)"
  status=$(req GET "$GATEWAY_URL/api/v2.0/replication/executions?policy_id=$policy" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the execution is listed (200)" 200 "$status"
  assert_eq "... and succeeded (Harbor's \"Succeed\")" Succeed "$(jq -r '.[0].status' "$out.body")"
  execution=$(jq -r '.[0].id' "$out.body")
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?q=operation%3Dreplicate" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the events function recorded the run's end in the audit log" \
    "replication to-distribution execution $execution replication" \
    "$(jq -r '.[0] | "\(.resource_type) \(.resource) \(.username)"' "$out.body")"

  answer=$(invoke_events "$ROOT/infra/events/replication/schedule.json") || fail "the events function takes a schedule" "$answer"
  assert_eq "a schedule with no scheduled policy starts nothing" '{"started":[]}' "$(jq -c . <<<"$answer")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/replication/deadletters" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the dead letters are read from the dead-letter queue (200)" 200 "$status"
  assert_eq "... and there are none" 0 "$(jq 'length' "$out.body")"
  if answer=$(invoke_events "$ROOT/infra/events/pull-ping.json" 2>&1); then
    fail "an API Gateway event is refused by the events function" "$answer"
  else
    pass "an API Gateway event is refused by the events function"
  fi
}

# awslogs_event LOG OUT: the berth::event lines of function log LOG (and nothing else of it) as
# the events function receives them from a CloudWatch Logs subscription filter: gzipped JSON
# in base64 under awslogs.data. Prints how many event lines and manifest pulls it holds.
awslogs_event() {
  python3 - "$1" "$2" <<'PY'
import base64, gzip, json, sys

lines = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    # What the template's filter pattern { $.target = "berth::event" } lets through.
    if isinstance(record, dict) and record.get("target") == "berth::event":
        lines.append(line.rstrip("\n"))
batch = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/lambda/berth",
         "logStream": "2026/12/07/[$LATEST]0", "subscriptionFilters": ["berth-event-lines"],
         "logEvents": [{"id": str(i), "timestamp": 0, "message": m} for i, m in enumerate(lines)]}
data = base64.b64encode(gzip.compress(json.dumps(batch).encode())).decode()
json.dump({"awslogs": {"data": data}}, open(sys.argv[2], "w"))
pulls = sum(1 for m in lines if json.loads(m).get("event") == "manifest_pulled")
print(len(lines), pulls)
PY
}

# The audit log and pull counts as AWS keeps them: the functions' event lines, delivered to the
# events function as a CloudWatch Logs subscription would, become audit entries and counts that
# the token function answers; a pull wrote nothing on its way. Delivered twice, each is
# recorded once.
scenario_audit() {
  pushed_image
  local out=$E2E_TMP/audit status fn lines pulls answer pull_lines pull_count total
  # The token function was restarted by the key rotation, with a new log: refuse a sign-in
  # in this one.
  status=$(req GET "$GATEWAY_URL/service/token?service=berth" "$out" -u "$ADMIN:wrong-$ADMIN_PASSWORD")
  assert_eq "a wrong password is refused (401)" 401 "$status"
  for _ in 1 2; do
    status=$(areq GET "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$out" -H "Accept: $MT_OCI_MANIFEST")
    assert_eq "a manifest GET through the gateway (200)" 200 "$status"
  done
  for fn in registry-pull registry-push token; do
    read -r lines pulls < <(awslogs_event "$E2E_TMP/$fn.log" "$E2E_TMP/awslogs-$fn.json")
    [[ $fn != registry-pull ]] || { pull_lines=$lines pull_count=$pulls; }
    answer=$(invoke_events "$E2E_TMP/awslogs-$fn.json") || fail "the events function takes $fn's log lines" "$answer"
    assert_eq "the events function reads every event line of $fn ($lines)" "$lines" "$(jq -r .events <<<"$answer")"
  done
  ((pull_count >= 2)) || fail "the pull function logged its pulls" "$pull_lines event lines, $pull_count pulls"
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?q=operation%3Dpull,resource%3D~$REPO&page_size=100" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the token function lists the audit log (200)" 200 "$status"
  assert_eq "every logged manifest pull is one audit entry" "$pull_count" "$(header "$out.headers" x-total-count)"
  assert_eq "... each under the account that pulled" "[\"$ADMIN\"]" "$(jq -c '[.[].username] | unique' "$out.body")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/projects/$PROJECT/repositories/${REPO#"$PROJECT"/}" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the token function answers the repository's counters (200)" 200 "$status"
  assert_eq "... every logged pull counted once" "$pull_count" "$(jq -r .pull_count "$out.body")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?q=operation%3Dcreate,resource%3D$REPO:$TAG" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the push of $REPO:$TAG is in the audit log" true "$(jq 'length >= 1' "$out.body")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?q=operation%3Dlogin_failed" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and the refused sign-in, naming the account" "$ADMIN" "$(jq -r '.[0].resource' "$out.body")"
  assert_not "... without its password" grep -q "wrong-$ADMIN_PASSWORD" "$out.body"
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?page_size=1" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  total=$(header "$out.headers" x-total-count)
  answer=$(invoke_events "$E2E_TMP/awslogs-registry-pull.json") || fail "the events function takes a delivery again" "$answer"
  status=$(req GET "$GATEWAY_URL/api/v2.0/audit-logs?page_size=1" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "a batch delivered again adds no audit entry" "$total" "$(header "$out.headers" x-total-count)"
  status=$(req GET "$GATEWAY_URL/api/v2.0/statistics" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the token function counts projects and repositories (200)" 200 "$status"
  assert_eq "... the private project's repositories among them" true "$(jq '.private_repo_count >= 1' "$out.body")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/projects/$PROJECT/repositories/${REPO#"$PROJECT"/}" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and no pull" "$pull_count" "$(jq -r .pull_count "$out.body")"
}

# Webhook policies in the table, through the token function: made, listed, refused when the
# name is taken, deleted.
scenario_webhook_policies() {
  local out=$E2E_TMP/webhooks status id policies=$GATEWAY_URL/api/v2.0/projects/$PROJECT/webhook/policies
  local body='{"name":"ci","event_types":["PUSH_ARTIFACT"],"targets":[{"type":"http","address":"https://ci.example/hook","auth_header":"Bearer hook-secret"}]}'
  status=$(req POST "$policies" "$out" -u "$ADMIN:$ADMIN_PASSWORD" -H 'Content-Type: application/json' -d "$body")
  assert_eq "the token function makes a webhook policy (201)" 201 "$status"
  id=$(jq -r .id "$out.body")
  assert_not "... and never answers its auth header" grep -q hook-secret "$out.body"
  status=$(req POST "$policies" "$out" -u "$ADMIN:$ADMIN_PASSWORD" -H 'Content-Type: application/json' -d "$body")
  assert_eq "a second policy of that name is refused (409)" 409 "$status"
  status=$(req GET "$policies" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... the project's policies are listed (200)" '["ci"]' "$(jq -c '[.[].name]' "$out.body")"
  status=$(req DELETE "$policies/$id" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and deleted (200)" 200 "$status"
  status=$(req GET "$policies/$id" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and gone (404)" 404 "$status"
}

# webhook_receiver DIR PORT: a receiver on loopback that writes each POST to DIR (path,
# headers, body) and answers 200 on /ok and 500 elsewhere.
webhook_receiver() {
  mkdir -p "$1"
  exec python3 - "$1" "$2" <<'PY'
import http.server, json, os, sys

directory, port = sys.argv[1], int(sys.argv[2])

class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        name = os.path.join(directory, f"{len(os.listdir(directory)):03}.json")
        with open(name, "w") as out:
            json.dump({"path": self.path,
                       "headers": {name.lower(): value for name, value in self.headers.items()},
                       "body": json.loads(body)}, out)
        self.send_response(200 if self.path == "/ok" else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
PY
}

# queued_deliveries COUNT PREFIX [SECONDS]: receives the queue's messages until COUNT webhook
# deliveries are taken or SECONDS (default 40) have passed, deleting what it receives
# (replication's jobs were run already); each delivery is written as the SQS event Lambda
# would hand the events function, PREFIX-N.json. Prints how many.
queued_deliveries() {
  python3 - "$QUEUE_URL" "$ROOT/infra/events/replication/queue-plan.json" "$1" "$2" "${3:-40}" <<'PY'
import json, os, sys, time

import boto3

queue, sample, wanted, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
seconds = int(sys.argv[5])
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
                   region_name=os.environ.get("AWS_REGION", "us-east-1"))
taken, deadline = 0, time.monotonic() + seconds
while taken < wanted and time.monotonic() < deadline:
    for message in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=2).get("Messages", []):
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        if "webhook" not in json.loads(message["Body"]):
            continue
        with open(sample) as template:
            event = json.load(template)
        event["Records"][0].update(messageId=message["MessageId"], body=message["Body"],
                                   receiptHandle=message["ReceiptHandle"])
        with open(f"{prefix}-{taken}.json", "w") as out:
            json.dump(event, out)
        taken += 1
print(taken)
PY
}

# Webhooks as AWS delivers them: the push's event line, delivered to the events function as
# a CloudWatch Logs subscription would, queues one delivery per target; each attempt is one
# queue message the events function takes. A receiver answering 500 gets every attempt, each
# queued again with its pause as a delay, then a recorded failure.
scenario_webhook_deliveries() {
  pushed_image
  local out=$E2E_TMP/deliveries received=$E2E_TMP/received port receiver status ok failing answer taken attempt name message id
  local policies=$GATEWAY_URL/api/v2.0/projects/$PROJECT/webhook/policies
  port=$(free_port)
  webhook_receiver "$received" "$port" >"$received.log" 2>&1 &
  receiver=$!
  # The scenario's subshell stops it when it ends.
  # shellcheck disable=SC2064 # the PID is known now
  trap "stop_pid $receiver webhook-receiver" EXIT
  wait_for_port "$port" 30 "$receiver" || fail "the webhook receiver starts" "$(cat "$received.log")"
  for name in ok failing; do
    status=$(req POST "$policies" "$out" -u "$ADMIN:$ADMIN_PASSWORD" -H 'Content-Type: application/json' \
      -d "{\"name\":\"$name\",\"event_types\":[\"PUSH_ARTIFACT\"],\"targets\":[{\"type\":\"http\",\"address\":\"http://127.0.0.1:$port/$name\",\"auth_header\":\"Bearer $name-secret\"}]}")
    assert_eq "a webhook policy to the receiver's /$name (201)" 201 "$status"
    printf -v "$name" '%s' "$(jq -r .id "$out.body")"
  done
  # The push of $REPO:$TAG, as its one event line.
  python3 - "$E2E_TMP/registry-push.log" "$REPO:$TAG@" >"$E2E_TMP/push-line.log" <<'PY'
import json, sys

last = None
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        record = json.loads(line)
    except ValueError:
        continue
    if isinstance(record, dict) and record.get("target") == "berth::event" \
            and record.get("event") == "manifest_pushed" and record.get("subject", "").startswith(sys.argv[2]):
        last = line
print(last or "", end="")
PY
  awslogs_event "$E2E_TMP/push-line.log" "$E2E_TMP/awslogs-push.json" >/dev/null
  answer=$(invoke_events "$E2E_TMP/awslogs-push.json") || fail "the events function takes the push's line" "$answer"
  assert_eq "the push's line queues one delivery per policy" 2 "$(jq -r .webhook_deliveries <<<"$answer")"
  taken=$(queued_deliveries 2 "$E2E_TMP/delivery")
  assert_eq "... two webhook messages on the queue" 2 "$taken"
  for message in "$E2E_TMP"/delivery-[01].json; do
    answer=$(invoke_events "$message") || fail "the events function takes a delivery" "$answer"
    assert_eq "... and attempts it" '{"batchItemFailures":[]}' "$(jq -c . <<<"$answer")"
  done
  assert_eq "the receiver got the push at /ok" 1 "$(jq -s '[.[] | select(.path == "/ok")] | length' "$received"/*.json)"
  assert_eq "... as Harbor's PUSH_ARTIFACT" PUSH_ARTIFACT "$(jq -rs '[.[] | select(.path == "/ok")][0].body.type' "$received"/*.json)"
  assert_eq "... of the pushed repository" "$REPO" "$(jq -rs '[.[] | select(.path == "/ok")][0].body.event_data.repository.repo_full_name' "$received"/*.json)"
  assert_eq "... with the policy's auth header" "Bearer ok-secret" "$(jq -rs '[.[] | select(.path == "/ok")][0].headers.authorization' "$received"/*.json)"
  status=$(req GET "$policies/$ok/executions" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the delivery is listed (200)" 200 "$status"
  assert_eq "... as a success with the receiver's 200" "Success 200" "$(jq -r '.[0] | "\(.status) \(.extra_attrs.http_code)"' "$out.body")"
  assert_not "... never answering the auth header" grep -q ok-secret "$out.body"
  for attempt in 2 3 4; do
    taken=$(queued_deliveries 1 "$E2E_TMP/retry")
    assert_eq "the failed attempt is queued again (attempt $attempt)" "1 $attempt" "$taken $(jq -r '.Records[0].body | fromjson | .webhook.attempt' "$E2E_TMP/retry-0.json")"
    answer=$(invoke_events "$E2E_TMP/retry-0.json") || fail "the events function takes attempt $attempt" "$answer"
  done
  assert_eq "the failing receiver got every attempt" 4 "$(jq -s '[.[] | select(.path == "/failing")] | length' "$received"/*.json)"
  status=$(req GET "$policies/$failing/executions" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and the delivery is recorded as failed after 4 attempts with the 500" "Error 4 500" \
    "$(jq -r '.[0] | "\(.status) \(.extra_attrs.attempts) \(.extra_attrs.http_code)"' "$out.body")"
  assert_eq "... and nothing more is queued" 0 "$(queued_deliveries 1 "$E2E_TMP/none" 3 2>/dev/null || echo error)"
  for id in "$ok" "$failing"; do
    req DELETE "$policies/$id" "$out" -u "$ADMIN:$ADMIN_PASSWORD" >/dev/null
  done
}

# --- measurements --------------------------------------------------------------

# Memory of each function process: VmRSS now, VmHWM (peak) so far.
# s3_key_count KEY: how many objects the test bucket holds under KEY (0 or 1).
s3_key_count() {
  python3 - "$BERTH_TEST_S3_BUCKET" "$1" <<'PY'
import os, sys

import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
                  region_name=os.environ.get("AWS_REGION", "garage"))
print(s3.list_objects_v2(Bucket=sys.argv[1], Prefix=sys.argv[2]).get("KeyCount", 0))
PY
}

# Garbage collection as AWS runs it: five blobs uploaded and never referenced, a run started
# through the token function's API, then the gc function invoked as its schedule would, one
# step of two candidates each time, until the run ends; the blobs are gone from the bucket,
# the pushed image still pulls.
scenario_gc() {
  local out=$E2E_TMP/gc repo=$PROJECT/gc-$RUN_ID status id answer invocations=0 digest gone=0
  local token n
  token=$(token "repository:$repo:pull,push")
  mkdir -p "$out"
  for n in 1 2 3 4 5; do
    printf 'garbage %s %s' "$n" "$RUN_ID" >"$out/blob-$n"
    digest=$(sha256_file "$out/blob-$n")
    echo "$digest" >>"$out/digests"
    status=$(req POST "$GATEWAY_URL/v2/$repo/blobs/uploads/?digest=$digest" "$out/upload" \
      -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' \
      --data-binary "@$out/blob-$n")
    [[ $status == 201 ]] || fail "blob $n is uploaded" "$status $(cat "$out/upload.body")"
  done
  status=$(req POST "$GATEWAY_URL/api/v2.0/system/gc/schedule" "$out/start" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d '{"schedule":{"type":"Manual"},"parameters":{"dry_run":false}}')
  assert_eq "the token function starts a garbage collection run" 201 "$status"
  id=$(header "$out/start.headers" location)
  id=${id##*/}
  while ((invocations < 60)); do
    answer=$(invoke_events "$ROOT/infra/events/gc/tick.json" "$GC_FUNCTION") ||
      fail "the gc function takes its schedule's event" "$answer"
    invocations=$((invocations + 1))
    [[ $(jq -r .running <<<"$answer") == true ]] || break
  done
  assert_match "the run takes several invocations of one step each ($invocations)" '^([3-9]|[1-5][0-9])$' "$invocations"
  status=$(req GET "$GATEWAY_URL/api/v2.0/system/gc/$id" "$out/run" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the run ended well" "200 Success" "$status $(jq -r .job_status "$out/run.body")"
  req GET "$GATEWAY_URL/api/v2.0/system/gc/$id/log" "$out/log" -u "$ADMIN:$ADMIN_PASSWORD" >/dev/null
  while read -r digest; do
    grep -q "blob $digest .*deleted" "$out/log.body" || gone=1
    [[ $(s3_key_count "$PREFIX/blobs/sha256/${digest:7:2}/${digest#sha256:}") == 0 ]] || gone=1
  done <"$out/digests"
  assert_eq "its log names the five blobs, which are gone from the bucket" 0 "$gone"
  if [[ -e $IMAGE/pushed ]]; then
    # shellcheck source=/dev/null
    source "$IMAGE/vars"
    status=$(areq GET "$GATEWAY_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out/layer")
    assert_match "the pushed image's layer is still served" '^(200|307)$' "$status"
  fi
}

# A project with a storage limit through the token function: a blob past it is refused by
# the push function, naming usage and limit, and uses nothing; with no limit an image is
# stored and its manifest and config counted once.
scenario_quota() {
  local out=$E2E_TMP/quota project=quota$RUN_ID status token config digest expected
  mkdir -p "$out"
  status=$(req POST "$GATEWAY_URL/api/v2.0/projects" "$out/create" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d "{\"project_name\":\"$project\",\"storage_limit\":1}")
  assert_eq "the token function creates a project with a 1-byte storage limit" 201 "$status"
  token=$(token "repository:$project/app:pull,push")
  config=$out/config.json
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"quota":"%s"}' \
    "$RUN_ID" >"$config"
  digest=$(sha256_file "$config")
  status=$(req POST "$GATEWAY_URL/v2/$project/app/blobs/uploads/?digest=$digest" "$out/refused" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' --data-binary "@$config")
  assert_eq "the push function refuses a blob past the limit" "403 DENIED" \
    "$status $(jq -r '.errors[0].code' "$out/refused.body")"
  assert_contains "... naming the usage and the limit" "$(jq -r '.errors[0].message' "$out/refused.body")" \
    "quota exceeded: project $project uses 0 bytes of its 1 bytes storage limit"
  status=$(req GET "$GATEWAY_URL/api/v2.0/projects/$project/summary" "$out/summary" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "... and it used nothing" "200 0" "$status $(jq .quota.used.storage "$out/summary.body")"
  status=$(req PUT "$GATEWAY_URL/api/v2.0/projects/$project" "$out/update" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d '{"storage_limit":-1}')
  assert_eq "the admin removes the limit" 200 "$status"
  status=$(req POST "$GATEWAY_URL/v2/$project/app/blobs/uploads/?digest=$digest" "$out/upload" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' --data-binary "@$config")
  assert_eq "the blob is stored" 201 "$status"
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' \
    "$MT_OCI_MANIFEST" "$digest" "$(stat -c %s "$config")" >"$out/manifest.json"
  status=$(req PUT "$GATEWAY_URL/v2/$project/app/manifests/v1" "$out/put" -H "Authorization: Bearer $token" \
    -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$out/manifest.json")
  assert_eq "... and so is its manifest" 201 "$status"
  expected=$(($(stat -c %s "$out/manifest.json") + $(stat -c %s "$config")))
  req GET "$GATEWAY_URL/api/v2.0/projects/$project/summary" "$out/summary" -u "$ADMIN:$ADMIN_PASSWORD" >/dev/null
  assert_eq "the project uses the manifest and its config" "$expected" \
    "$(jq .quota.used.storage "$out/summary.body")"
}

# Tag retention as AWS runs it: two repositories of artifacts tagged keep-* and tmp-*, a
# policy keeping keep-* made and run through the token function's API, then the gc function
# invoked by a running execution's stream record and by its schedule, one repository each
# time, until the run ends: the tmp-* artifacts are gone, the keep-* ones pull.
scenario_retention() {
  local out=$E2E_TMP/retention status policy id answer invocations=0 repo tag token config size
  local project=retention-$RUN_ID
  mkdir -p "$out"
  status=$(req POST "$GATEWAY_URL/api/v2.0/projects" "$out/project" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d "{\"project_name\":\"$project\",\"metadata\":{\"public\":\"false\"}}")
  assert_eq "a project for retention" 201 "$status"
  for repo in a b; do
    token=$(token "repository:$project/$repo:pull,push")
    for tag in keep-1 tmp-1 tmp-2; do
      printf '{"repo":"%s","tag":"%s","run":"%s"}' "$repo" "$tag" "$RUN_ID" >"$out/config"
      config=$(sha256_file "$out/config")
      size=$(size_of "$out/config")
      req POST "$GATEWAY_URL/v2/$project/$repo/blobs/uploads/?digest=$config" "$out/upload" \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/octet-stream' \
        --data-binary "@$out/config" >/dev/null
      printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%s},"layers":[]}' \
        "$MT_OCI_MANIFEST" "$MT_OCI_CONFIG" "$config" "$size" >"$out/manifest"
      status=$(req PUT "$GATEWAY_URL/v2/$project/$repo/manifests/$tag" "$out/put" \
        -H "Authorization: Bearer $token" -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$out/manifest")
      [[ $status == 201 ]] || fail "$project/$repo:$tag is pushed" "$status $(cat "$out/put.body")"
    done
  done
  status=$(req POST "$GATEWAY_URL/api/v2.0/retentions" "$out/policy" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d "{\"algorithm\":\"or\",\"rules\":[{\"action\":\"retain\",\"template\":\"always\",\"params\":{},
      \"tag_selectors\":[{\"kind\":\"doublestar\",\"decoration\":\"matches\",\"pattern\":\"keep-*\"}],
      \"scope_selectors\":{\"repository\":[{\"kind\":\"doublestar\",\"decoration\":\"repoMatches\",\"pattern\":\"**\"}]}}],
      \"trigger\":{\"kind\":\"Schedule\",\"settings\":{\"cron\":\"\"}},\"scope\":{\"level\":\"project\",\"ref\":\"$project\"}}")
  assert_eq "the token function creates the project's retention policy" 201 "$status"
  policy=$(header "$out/policy.headers" location)
  policy=${policy##*/}
  status=$(req POST "$GATEWAY_URL/api/v2.0/retentions/$policy/executions" "$out/start" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' -d '{"dry_run":false}')
  assert_eq "... and starts a run" 201 "$status"
  id=$(header "$out/start.headers" location)
  id=${id##*/}
  # The first invocation as the running execution's stream record, the others as the tick.
  answer=$(invoke_events "$ROOT/infra/events/gc/stream-retention-running.json" "$GC_FUNCTION") ||
    fail "the gc function takes a running execution's stream record" "$answer"
  invocations=1
  while [[ $(jq -r .retention_running <<<"$answer") == true ]] && ((invocations < 30)); do
    answer=$(invoke_events "$ROOT/infra/events/gc/tick.json" "$GC_FUNCTION") ||
      fail "the gc function takes its schedule's event" "$answer"
    invocations=$((invocations + 1))
  done
  assert_match "the run takes an invocation per repository ($invocations)" '^[3-9]$' "$invocations"
  status=$(req GET "$GATEWAY_URL/api/v2.0/retentions/$policy/executions" "$out/runs" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "the run ended well" "200 Success MANUAL" \
    "$status $(jq -r ".[] | select(.id == $id) | [.status, .trigger] | join(\" \")" "$out/runs.body")"
  status=$(req GET "$GATEWAY_URL/api/v2.0/retentions/$policy/executions/$id/tasks" "$out/tasks" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "a task per repository, with its counts" "200 $project/a 3 1,$project/b 3 1" \
    "$status $(jq -r '[.[] | "\(.repository) \(.total) \(.retained)"] | join(",")' "$out/tasks.body")"
  for repo in a b; do
    token=$(token "repository:$project/$repo:pull")
    req GET "$GATEWAY_URL/v2/$project/$repo/tags/list" "$out/tags-$repo" -H "Authorization: Bearer $token" >/dev/null
    assert_eq "$project/$repo keeps its keep-* artifact only" keep-1 "$(jq -r '.tags | join(",")' "$out/tags-$repo.body")"
  done
}

memory_line() {
  local fn line=""
  for fn in "${FUNCTIONS[@]}"; do
    line+="$fn VmRSS $(proc_kib "${FUNCTION_PID[$fn]}" VmRSS) KiB, VmHWM $(proc_kib "${FUNCTION_PID[$fn]}" VmHWM) KiB; "
  done
  echo "${line%; }"
}

# --- main --------------------------------------------------------------------------

if [[ ${1:-} == build ]]; then
  require_cmds cargo
  build_functions
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [build]"
require_cmds cargo curl jq python3 docker dockerd skopeo podman ss sha256sum tar gzip dd timeout
for var in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL_S3 AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_SSM AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_KMS BERTH_TEST_S3_BUCKET; do
  [[ -n ${!var:-} ]] || die "$var is not set: start Garage, DynamoDB Local and moto (scripts/services/) and export what they print"
done
cargo lambda --version >/dev/null 2>&1 || die "cargo lambda is missing (pip install cargo-lambda)"
BERTH=${BERTH_BIN:-}
if [[ -z $BERTH ]]; then
  for BERTH in "$ROOT/target/release/berth" "$ROOT/target/debug/berth"; do [[ -x $BERTH ]] && break; done
fi
[[ -x $BERTH ]] || die "no berth binary at $BERTH (build it or set BERTH_BIN)"
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)

[[ ${LAMBDA_SKIP_BUILD:-0} == 1 ]] || build
for fn in "${FUNCTIONS[@]}" "$EVENTS_FUNCTION" "$GC_FUNCTION"; do
  [[ -x $TARGET_DIR/lambda/$fn/bootstrap ]] || die "no $TARGET_DIR/lambda/$fn/bootstrap (cargo lambda build)"
done
[[ -x $TARGET_DIR/debug/lambda-gateway ]] || die "no $TARGET_DIR/debug/lambda-gateway (cargo build -p berth-tests)"

e2e_init
export TMPDIR=$E2E_TMP
IMAGE=$E2E_TMP/image
TABLE=berth-lambda-$RUN_ID
PREFIX=lambda-$RUN_ID
KEYS_PATH=/berth/lambda-$RUN_ID/token-keys

log_step "Lambda functions under cargo lambda watch (run $RUN_ID, scratch $E2E_TMP)"
BERTH_ADMIN_PASSWORD=$ADMIN_PASSWORD run "$BERTH" init --data-dir "$E2E_TMP/berth-data" \
  --blob-store "s3://$BERTH_TEST_S3_BUCKET/$PREFIX" --metadata "dynamodb://$TABLE" --s3-path-style \
  --token-keys-ssm "$KEYS_PATH" --token-keys-kms-key alias/berth-lambda-test
make_replication_resources
start_emulator
start_gateway
start_function token GET "/service/token?service=berth"
start_function registry-pull GET /v2/
start_function registry-push DELETE "/v2/lambda/probe/blobs/uploads/$(python3 -c 'import uuid; print(uuid.uuid4())')"
status=$(req POST "$GATEWAY_URL/api/v2.0/projects" "$E2E_TMP/project" -u "$ADMIN:$ADMIN_PASSWORD" \
  -H 'Content-Type: application/json' -d "{\"project_name\":\"$PROJECT\",\"metadata\":{\"public\":\"false\"}}")
[[ $status == 201 ]] || setup_failed "creating the project $PROJECT: $status $(cat "$E2E_TMP/project.body")"
TOKEN=$(token "repository:lambda/app-$RUN_ID:pull,push,delete")
[[ -n $TOKEN && $TOKEN != null ]] || setup_failed "no token from the token function"
MEMORY_AFTER_START=$(memory_line)
log_info "generating the image (${LAYER_MIB} MiB of random data)"
make_image
start_dockerd

start=$SECONDS
run_scenario gateway scenario_gateway
run_scenario "token auth" scenario_auth
run_scenario "chunked push" scenario_push
if [[ -e $IMAGE/pushed ]]; then
  # shellcheck source=/dev/null
  source "$IMAGE/vars"
  areq GET "$GATEWAY_URL/v2/$REPO/manifests/$TAG" "$E2E_TMP/measure" -H "Accept: $MT_OCI_MANIFEST" >/dev/null || true
fi
MEMORY_AFTER_PUSH=$(memory_line)
run_scenario "docker pull" scenario_docker
run_scenario "skopeo copy" scenario_skopeo
run_scenario "tag listing" scenario_tags
run_scenario "storage quota through the token and push functions" scenario_quota
rotate_keys
run_scenario "key rotation" scenario_rotation
start_events_function
run_scenario "replication through the events function" scenario_replication
run_scenario "the audit log through the events function" scenario_audit
run_scenario "webhook policies through the token function" scenario_webhook_policies
run_scenario "webhook deliveries through the events function and the queue" scenario_webhook_deliveries
start_events_function "$GC_FUNCTION"
run_scenario "garbage collection through the gc function, in steps" scenario_gc
run_scenario "tag retention through the gc function, a repository an invocation" scenario_retention
[[ ${LAMBDA_FRONT_SCENARIOS:-1} == 0 ]] || run_front_scenarios
[[ -z ${FRONT_BENCH_MIB:-} ]] || bench_front
log_step "finished in $((SECONDS - start))s"

log_step "measurements ($BUILD_MODE builds, not asserted)"
for fn in "${FUNCTIONS[@]}"; do
  log_info "$fn: first answer ${FIRST_ANSWER_MS[$fn]} ms after its process started"
done
log_info "after the first requests: $MEMORY_AFTER_START"
log_info "after the push and a manifest GET: $MEMORY_AFTER_PUSH"
log_info "at the end: $(memory_line)"
log_info "upload front: peak RSS (VmHWM) ${FRONT_RSS_KIB:-?} KiB over the POST-then-PUT, docker, skopeo and podman pushes of ${FRONT_LAYER_MIB} MiB layers"

if ! e2e_report; then
  show_logs
  exit 1
fi
