#!/usr/bin/env bash
# Replication end to end, with real processes and real clients: the running `berth serve`
# (source A, auth on) replicates to a second `berth serve` (B, started here on embedded
# storage) and to CNCF Distribution (`/usr/bin/docker-registry`, started here), and pulls
# back from Distribution on a schedule.
#
# Usage: tests/e2e/replication.sh HOST:PORT ADMIN_PASSWORD [BERTH_BIN]
#
# HOST:PORT is A, with the user `admin` holding ADMIN_PASSWORD. BERTH_BIN (argument or
# environment; default target/release/berth, else target/debug/berth) runs B. Everything
# this script names on A is named after the run (endpoints, policies, projects) except
# library/repl, so it may run again on the same A. Ends with the line "N passed, M failed";
# exits 1 if M > 0.
#
# Scenarios (E2E_REPLICATION_SCENARIOS, a subset of: push distribution faults):
#   push          endpoint A → B, ping; an event-based push policy (library/**, tags v*,
#                 deletions too); a two-platform OCI index pushed to A as v1 and latest
#                 reaches B byte for byte (index, children, blobs), latest does not;
#                 docker pulls it from B; deleting it on A deletes it on B
#   distribution  a manual push to Distribution under mirror/ (same digest); a scheduled
#                 pull policy (every minute) brings it back into a project on A
#   faults        an endpoint where nothing listens: ping 400 naming the address, a run
#                 Failed after 3 attempts naming it; Distribution comes up there: a run
#                 succeeds, a third sends 0 bytes and the tag is there once; B with a wrong
#                 password: ping 400, authenticated false
#
# Environment: E2E_KEEP_TMP=1 keeps the scratch dir (B's data and log, Distribution's).
# BERTH_* variables meant for A (storage, public URL...) are not passed on to B.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOURCE=${1:?usage: $0 HOST:PORT ADMIN_PASSWORD [BERTH_BIN]}
ADMIN_PASSWORD=${2:?usage: $0 HOST:PORT ADMIN_PASSWORD [BERTH_BIN]}
BIN=${3:-${BERTH_BIN:-}}
SCENARIOS=${E2E_REPLICATION_SCENARIOS:-push distribution faults}
RUN=$(date +%s)$RANDOM
A_CREDS=admin:$ADMIN_PASSWORD
# B's admin password, made on B's first start (the password policy: upper, lower, digit).
B_PASSWORD=Berth-B-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
B_CREDS=admin:$B_PASSWORD
B_ADDR=""

MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_DOCKER_LIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
ACCEPT=(-H "Accept: $MT_OCI_INDEX" -H "Accept: $MT_OCI_MANIFEST" -H "Accept: $MT_DOCKER_LIST" -H "Accept: $MT_DOCKER_V2")
LIST=localhost/e2e/repl-multiarch:list # the podman manifest list, built once

# Limits, in seconds.
EVENT_WAIT=60     # an event-based copy or deletion reaching B
EXECUTION_WAIT=60 # a manual execution (no failing remote) ending
FAILING_WAIT=90   # an execution whose task fails 3 times (retried after 5 s, then 20 s)
SCHEDULE_WAIT=75  # a once-a-minute schedule firing

# --- helpers -------------------------------------------------------------------------------

sha256_of() { sha256sum | awk '{print "sha256:" $1}'; }
body() { cat "$E2E_TMP/body"; }

# api_on HOST:PORT CREDENTIALS METHOD PATH [JSON]: a management API call; prints the status,
# leaves the body in $E2E_TMP/body and the headers in $E2E_TMP/headers.
api_on() {
  local addr=$1 credentials=$2 method=$3 path=$4 json=${5:-}
  local args=(-u "$credentials" -H 'Content-Type: application/json')
  [[ -z $json ]] || args+=(--data "$json")
  curl -sS -X "$method" -o "$E2E_TMP/body" -D "$E2E_TMP/headers" -w '%{http_code}' \
    --max-time 60 "${args[@]}" "http://$addr/api/v2.0$path"
}

# api METHOD PATH [JSON]: the same on A as admin.
api() { api_on "$SOURCE" "$A_CREDS" "$@"; }

# create PATH JSON WHAT: POST on A, which must answer 201; sets CREATED_ID from the Location.
CREATED_ID=""
create() {
  local path=$1 json=$2 what=$3 status
  status=$(api POST "$path" "$json")
  [[ $status == 201 ]] || fail "create $what (POST $path → 201)" "status $status: $(body)"
  CREATED_ID=$(header "$E2E_TMP/headers" Location)
  CREATED_ID=${CREATED_ID##*/}
  [[ $CREATED_ID =~ ^[0-9]+$ ]] || fail "create $what: Location ends in an id" "Location: $(header "$E2E_TMP/headers" Location)"
  pass "created $what (id $CREATED_ID)"
}

# create_project NAME: a private project on A.
create_project() {
  local status
  status=$(api POST /projects "{\"project_name\":\"$1\",\"metadata\":{\"public\":\"false\"}}")
  assert_eq "project $1 created on A" 201 "$status"
}

# set_enabled POLICY true|false
set_enabled() {
  local status
  status=$(api PUT "/replication/policies/$1" "{\"enabled\":$2}")
  [[ $status == 200 ]] || log_warn "PUT /replication/policies/$1 enabled=$2: $status $(body)"
}

# ping_endpoint JSON: POST /registries/ping on A; prints the status (body in $E2E_TMP/body).
ping_endpoint() { api POST /registries/ping "$1"; }

# run_policy POLICY: POST /replication/executions; sets EXECUTION to the new execution's id.
EXECUTION=""
run_policy() {
  local status
  status=$(api POST /replication/executions "{\"policy_id\":$1}")
  [[ $status == 201 ]] || fail "start an execution of policy $1 (201)" "status $status: $(body)"
  EXECUTION=$(header "$E2E_TMP/headers" Location)
  EXECUTION=${EXECUTION##*/}
  log_info "policy $1: execution $EXECUTION started"
}

# wait_execution ID TIMEOUT: poll the execution until it is no longer InProgress; leaves its
# JSON in EXECUTION_JSON. Failing to end in time is a failed check.
EXECUTION_JSON=""
wait_execution() {
  local id=$1 timeout=$2 start=$SECONDS status
  while :; do
    status=$(api GET "/replication/executions/$id")
    [[ $status == 200 ]] || fail "GET execution $id answers 200" "status $status: $(body)"
    EXECUTION_JSON=$(body)
    [[ $(jq -r .status <<<"$EXECUTION_JSON") == InProgress ]] || break
    ((SECONDS - start < timeout)) ||
      fail "execution $id ends within ${timeout}s" "still running: $EXECUTION_JSON"
    sleep 0.5
  done
  log_info "execution $id ended after $((SECONDS - start))s: $(jq -c '{status, total, succeed, failed, trigger}' <<<"$EXECUTION_JSON")"
}

# tasks ID: the JSON list of an execution's tasks.
tasks() {
  local status
  status=$(api GET "/replication/executions/$1/tasks")
  [[ $status == 200 ]] || fail "GET the tasks of execution $1 answers 200" "status $status: $(body)"
  body
}

# task_log EXECUTION TASK: the task's log (text).
task_log() {
  local status
  status=$(api GET "/replication/executions/$1/tasks/$2/log")
  [[ $status == 200 ]] || fail "GET the log of task $2 answers 200" "status $status: $(body)"
  body
}

# wait_until DESC TIMEOUT CMD...: poll CMD every 0.5 s until it succeeds; one check.
wait_until() {
  local desc=$1 timeout=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start < timeout)) || fail "$desc" "not true after ${timeout}s: $*"
    sleep 0.5
  done
  pass "$desc (after $((SECONDS - start))s)"
}

# bearer HOST:PORT CREDENTIALS SCOPE: a bearer token from the registry's token service (the
# realm and service its /v2/ challenge names).
bearer() {
  local addr=$1 credentials=$2 scope=$3 challenge realm service
  challenge=$(curl -sS --max-time 30 -D - -o /dev/null "http://$addr/v2/" | grep -i '^www-authenticate:')
  realm=$(grep -io 'realm="[^"]*"' <<<"$challenge" | cut -d'"' -f2)
  service=$(grep -io 'service="[^"]*"' <<<"$challenge" | cut -d'"' -f2)
  curl -sS --max-time 30 -u "$credentials" --get --data-urlencode "service=$service" \
    --data-urlencode "scope=$scope" "$realm" | jq -er .token
}

# fetch METHOD HOST:PORT TOKEN PATH OUT: a /v2/ request (TOKEN may be empty: no auth), manifest
# media types accepted; prints the status (OUT.headers, OUT.body).
fetch() {
  local method=$1 addr=$2 token=$3 path=$4 out=$5 auth=()
  [[ -z $token ]] || auth=(-H "Authorization: Bearer $token")
  CURL_TIMEOUT=120 req "$method" "http://$addr/v2/$path" "$out" -L "${ACCEPT[@]}" "${auth[@]}"
}

# has_manifest / lacks_manifest HOST:PORT TOKEN REPO REFERENCE: HEAD answers 200 / 404.
has_manifest() { [[ $(fetch HEAD "$1" "$2" "$3/manifests/$4" "$E2E_TMP/probe") == 200 ]]; }
lacks_manifest() { [[ $(fetch HEAD "$1" "$2" "$3/manifests/$4" "$E2E_TMP/probe") == 404 ]]; }

# manifest_digest HOST:PORT TOKEN REPO REFERENCE: the Docker-Content-Digest of a HEAD.
manifest_digest() {
  fetch HEAD "$1" "$2" "$3/manifests/$4" "$E2E_TMP/probe" >/dev/null
  header "$E2E_TMP/probe.headers" Docker-Content-Digest
}

# start_peer PORT NAME: start_distribution from inside a scenario. A scenario runs in a
# subshell, whose exit does not run the script's cleanups: the PID is kept in a file that
# the script's own exit reads (stop_peers).
start_peer() {
  start_distribution "$1" "$2"
  echo "$DISTRIBUTION_PID" >>"$E2E_TMP/peers.pids"
}

stop_peers() {
  local pid
  [[ -s $E2E_TMP/peers.pids ]] || return 0
  while read -r pid; do stop_pid "$pid" docker-registry; done <"$E2E_TMP/peers.pids"
}

# push_index REF DIGESTFILE: the two-platform manifest list, pushed as an OCI index.
push_index() {
  run pm manifest push --all --format oci --tls-verify=false --digestfile "$2" "$LIST" "docker://$1"
}

# Build the linux/amd64 + linux/arm64 images and the manifest list (as run.sh's multiarch).
build_multiarch() {
  local dir=$E2E_TMP/images arch
  for arch in amd64 arm64; do
    mkdir -p "$dir/$arch/files"
    printf 'replication linux/%s run %s\n' "$arch" "$RUN" >"$dir/$arch/files/label.txt"
    head -c $((256 * 1024)) /dev/urandom >"$dir/$arch/files/blob.bin"
    printf 'FROM scratch\nCOPY files/label.txt /label.txt\nCOPY files/blob.bin /data/blob.bin\n' \
      >"$dir/$arch/Containerfile"
    # --no-cache: podman's layer cache ignores --platform.
    pm build -q --no-cache --format oci --platform "linux/$arch" \
      -t "localhost/e2e/repl-multiarch:$arch" "$dir/$arch" >/dev/null
  done
  pm manifest create "$LIST" >/dev/null
  pm manifest add "$LIST" containers-storage:localhost/e2e/repl-multiarch:amd64 >/dev/null
  pm manifest add "$LIST" containers-storage:localhost/e2e/repl-multiarch:arm64 >/dev/null
  log_info "built $LIST (linux/amd64, linux/arm64)"
}

# --- scenarios -----------------------------------------------------------------------------

scenario_push() {
  local dir=$E2E_TMP/push repo=library/repl endpoint policy index_digest status
  local ta tb child blob executions sent tags
  mkdir -p "$dir"

  create /registries "{\"name\":\"berth-b-$RUN\",\"url\":\"http://$B_ADDR\",\"type\":\"berth\",
    \"credential\":{\"type\":\"basic\",\"access_key\":\"admin\",\"access_secret\":\"$B_PASSWORD\"}}" \
    "registry endpoint → B (http://$B_ADDR, B's admin)"
  endpoint=$CREATED_ID
  status=$(ping_endpoint "{\"id\":$endpoint}")
  assert_eq "ping of endpoint B answers 200" 200 "$status"
  assert_eq "endpoint B is healthy" healthy "$(jq -r .status "$E2E_TMP/body")"

  create /replication/policies "{\"name\":\"to-b-$RUN\",\"dest_registry\":{\"id\":$endpoint},
    \"filters\":[{\"type\":\"name\",\"value\":\"library/**\"},{\"type\":\"tag\",\"value\":\"v*\"}],
    \"trigger\":{\"type\":\"event_based\"},\"replicate_deletion\":true,\"override\":true,\"enabled\":true}" \
    "event-based push policy library/** tags v* with deletions"
  policy=$CREATED_ID

  push_index "$SOURCE/$repo:v1" "$dir/digest"
  index_digest=$(cat "$dir/digest")
  push_index "$SOURCE/$repo:latest" "$dir/digest-latest"
  assert_eq "latest on A is the same index as v1" "$index_digest" "$(cat "$dir/digest-latest")"

  tb=$(bearer "$B_ADDR" "$B_CREDS" "repository:$repo:pull")
  ta=$(bearer "$SOURCE" "$A_CREDS" "repository:$repo:pull,delete")
  wait_until "B has $repo:v1 (event-based replication)" "$EVENT_WAIT" has_manifest "$B_ADDR" "$tb" "$repo" v1

  # The index: the same bytes on both sides.
  assert_eq "GET the index from A answers 200" 200 "$(fetch GET "$SOURCE" "$ta" "$repo/manifests/v1" "$dir/a-index")"
  assert_eq "GET the index from B answers 200" 200 "$(fetch GET "$B_ADDR" "$tb" "$repo/manifests/v1" "$dir/b-index")"
  assert_eq "A's Docker-Content-Digest is the pushed index digest" "$index_digest" \
    "$(header "$dir/a-index.headers" Docker-Content-Digest)"
  assert_eq "B's Docker-Content-Digest is the same" "$index_digest" \
    "$(header "$dir/b-index.headers" Docker-Content-Digest)"
  assert_eq "sha256 of B's index bytes is the index digest" "$index_digest" "$(sha256_of <"$dir/b-index.body")"
  assert_cmd "B serves byte-identical index bytes" cmp "$dir/a-index.body" "$dir/b-index.body"
  assert_eq "B serves an OCI image index" "$MT_OCI_INDEX" "$(header "$dir/b-index.headers" Content-Type)"
  assert_eq "skopeo inspect --raw on B gives the index digest" "$index_digest" \
    "$(sk inspect --tls-verify=false --raw "docker://$B_ADDR/$repo:v1" | sha256_of)"

  # Every child manifest and every blob, by digest.
  for child in $(jq -r '.manifests[].digest' "$dir/b-index.body"); do
    assert_eq "B serves child manifest $child (200)" 200 \
      "$(fetch GET "$B_ADDR" "$tb" "$repo/manifests/$child" "$dir/b-child")"
    assert_eq "child $child from B has its digest" "$child" "$(sha256_of <"$dir/b-child.body")"
    for blob in $(jq -r '.config.digest, .layers[].digest' "$dir/b-child.body"); do
      status=$(fetch GET "$B_ADDR" "$tb" "$repo/blobs/$blob" "$dir/b-blob")
      assert_eq "B serves blob $blob of $child with its digest" "$status $blob" \
        "$status $(sha256_of <"$dir/b-blob.body")"
    done
  done
  run sk copy --all --src-tls-verify=false "docker://$SOURCE/$repo:v1" "oci:$dir/from-a:v1"
  run sk copy --all --src-tls-verify=false "docker://$B_ADDR/$repo:v1" "oci:$dir/from-b:v1"
  assert_eq "skopeo copy --all from B: the index digest" "$index_digest" "$(jq -r '.manifests[0].digest' "$dir/from-b/index.json")"
  assert_cmd "skopeo copy --all from A and from B: identical manifests and blobs" \
    diff -r "$dir/from-a/blobs" "$dir/from-b/blobs"

  tags=$(sk list-tags --tls-verify=false "docker://$B_ADDR/$repo" | jq -r '.Tags[]' | sort | paste -sd' ')
  assert_eq "B has v1 and no latest (tag filter v*)" v1 "$tags"
  assert_cmd "B answers 404 for $repo:latest" lacks_manifest "$B_ADDR" "$tb" "$repo" latest

  # The execution that did it: event-based, one task, the v1 tag, bytes sent.
  status=$(api GET "/replication/executions?policy_id=$policy&page_size=100")
  assert_eq "list the policy's executions (200)" 200 "$status"
  executions=$(body)
  assert_eq "the policy has one execution (v1 only)" 1 "$(jq length <<<"$executions")"
  wait_execution "$(jq -r '.[0].id' <<<"$executions")" "$EXECUTION_WAIT"
  assert_eq "the execution succeeded" Succeed "$(jq -r .status <<<"$EXECUTION_JSON")"
  assert_eq "the execution was event-based" event_based "$(jq -r .trigger <<<"$EXECUTION_JSON")"
  tasks "$(jq -r .id <<<"$EXECUTION_JSON")" >"$dir/tasks.json"
  assert_eq "its task copied $repo:v1" "$repo:v1" "$(jq -r '.[0].dst_resource' "$dir/tasks.json")"
  sent=$(jq -r '.[0].bytes' "$dir/tasks.json")
  assert_match "its task sent the blobs (bytes > 0)" '^[1-9][0-9]*$' "$sent"
  log_info "bytes sent: $sent"

  # docker pulls it from B (the host's platform out of the index).
  run docker login -u admin --password-stdin "$B_ADDR" <<<"$B_PASSWORD"
  run_to "$dir/pull.log" docker pull "$B_ADDR/$repo:v1"
  assert_contains "docker pull from B reports the index digest" "$(cat "$dir/pull.log")" "Digest: $index_digest"
  assert_eq "the pulled image is for the docker host's architecture" \
    "$(docker version -f '{{.Server.Arch}}')" "$(docker image inspect -f '{{.Architecture}}' "$B_ADDR/$repo:v1")"
  run docker rmi "$B_ADDR/$repo:v1"

  # Deleting it on A deletes it on B (skopeo deletes by digest: v1 and latest go).
  run sk delete --tls-verify=false "docker://$SOURCE/$repo:v1"
  assert_cmd "A answers 404 for $repo:v1" lacks_manifest "$SOURCE" "$ta" "$repo" v1
  wait_until "B no longer has $repo:v1 (deletion replicated)" "$EVENT_WAIT" lacks_manifest "$B_ADDR" "$tb" "$repo" v1
  assert_cmd "B answers 404 for the index digest" lacks_manifest "$B_ADDR" "$tb" "$repo" "$index_digest"
  set_enabled "$policy" false
}

scenario_distribution() {
  local dir=$E2E_TMP/to-distribution project=repl$RUN pulled=pulled$RUN
  local endpoint policy pull index_digest status start execution dist
  mkdir -p "$dir"
  start_peer "" distribution-mirror
  dist=$DISTRIBUTION_ADDR

  create_project "$project"
  push_index "$SOURCE/$project/web:v2" "$dir/digest"
  index_digest=$(cat "$dir/digest")

  create /registries "{\"name\":\"distribution-$RUN\",\"url\":\"http://$dist\",\"type\":\"docker-registry\"}" \
    "registry endpoint → Distribution (http://$dist, no credentials)"
  endpoint=$CREATED_ID
  assert_eq "ping of endpoint Distribution answers 200" 200 "$(ping_endpoint "{\"id\":$endpoint}")"

  create /replication/policies "{\"name\":\"to-distribution-$RUN\",\"dest_registry\":{\"id\":$endpoint},
    \"dest_namespace\":\"mirror\",\"dest_namespace_replace_count\":1,
    \"filters\":[{\"type\":\"name\",\"value\":\"$project/web\"}],\"trigger\":{\"type\":\"manual\"}}" \
    "manual push policy $project/web → mirror/web"
  policy=$CREATED_ID
  run_policy "$policy"
  wait_execution "$EXECUTION" "$EXECUTION_WAIT"
  assert_eq "the manual execution succeeded" Succeed "$(jq -r .status <<<"$EXECUTION_JSON")"
  assert_eq "the manual execution copied one artifact" 1 "$(jq -r .total <<<"$EXECUTION_JSON")"

  assert_eq "skopeo inspect --raw on Distribution: mirror/web:v2 has the index digest" "$index_digest" \
    "$(sk inspect --tls-verify=false --raw "docker://$dist/mirror/web:v2" | sha256_of)"
  assert_eq "Distribution's Docker-Content-Digest for mirror/web:v2" "$index_digest" \
    "$(manifest_digest "$dist" "" mirror/web v2)"
  run sk copy --all --src-tls-verify=false "docker://$dist/mirror/web:v2" "oci:$dir/from-distribution:v2"
  assert_eq "skopeo copy --all from Distribution: the index digest, every child and blob" "$index_digest" \
    "$(jq -r '.manifests[0].digest' "$dir/from-distribution/index.json")"

  # Pull it back into another project of A, on a schedule (second 0 of every minute).
  create_project "$pulled"
  create /replication/policies "{\"name\":\"from-distribution-$RUN\",\"src_registry\":{\"id\":$endpoint},
    \"dest_namespace\":\"$pulled\",\"dest_namespace_replace_count\":1,
    \"filters\":[{\"type\":\"name\",\"value\":\"mirror/**\"}],
    \"trigger\":{\"type\":\"scheduled\",\"trigger_settings\":{\"cron\":\"0 * * * * *\"}}}" \
    "scheduled pull policy mirror/** → $pulled (cron 0 * * * * *)"
  pull=$CREATED_ID
  start=$SECONDS
  execution=""
  while [[ -z $execution ]]; do
    status=$(api GET "/replication/executions?policy_id=$pull")
    [[ $status == 200 ]] || fail "list the executions of policy $pull (200)" "status $status: $(body)"
    execution=$(jq -r 'first(.[].id) // empty' "$E2E_TMP/body")
    [[ -n $execution ]] && break
    ((SECONDS - start < SCHEDULE_WAIT)) || fail "the schedule fires within ${SCHEDULE_WAIT}s" "no execution of policy $pull"
    sleep 1
  done
  pass "the schedule fired (execution $execution after $((SECONDS - start))s)"
  wait_execution "$execution" "$EXECUTION_WAIT"
  set_enabled "$pull" false
  assert_eq "the scheduled execution succeeded" Succeed "$(jq -r .status <<<"$EXECUTION_JSON")"
  assert_eq "the execution was scheduled" scheduled "$(jq -r .trigger <<<"$EXECUTION_JSON")"
  assert_eq "$pulled/web:v2 is on A with the same digest" "$index_digest" \
    "$(manifest_digest "$SOURCE" "$(bearer "$SOURCE" "$A_CREDS" "repository:$pulled/web:pull")" "$pulled/web" v2)"
  assert_eq "skopeo inspect --raw on A: $pulled/web:v2 is the same index" "$index_digest" \
    "$(sk inspect --tls-verify=false --raw "docker://$SOURCE/$pulled/web:v2" | sha256_of)"
}

scenario_faults() {
  local dir=$E2E_TMP/faults project=faults$RUN port addr endpoint policy digest status
  local task error log sent tags wrong
  mkdir -p "$dir"
  port=$(free_port)
  addr=127.0.0.1:$port

  create_project "$project"
  run pm push --tls-verify=false --format oci --digestfile "$dir/digest" \
    localhost/e2e/repl-multiarch:amd64 "docker://$SOURCE/$project/late:v1"
  digest=$(cat "$dir/digest")

  create /registries "{\"name\":\"late-$RUN\",\"url\":\"http://$addr\",\"type\":\"docker-registry\"}" \
    "registry endpoint → http://$addr (nothing listens there)"
  endpoint=$CREATED_ID
  status=$(ping_endpoint "{\"id\":$endpoint}")
  assert_eq "ping of an endpoint where nothing listens answers 400" 400 "$status"
  assert_contains "the ping's message names $addr" "$(jq -r '.errors[0].message' "$E2E_TMP/body")" "$addr"
  assert_eq "the ping says: not reachable" false "$(jq -r '.errors[0].detail.reachable' "$E2E_TMP/body")"

  create /replication/policies "{\"name\":\"to-late-$RUN\",\"dest_registry\":{\"id\":$endpoint},
    \"filters\":[{\"type\":\"name\",\"value\":\"$project/late\"}],\"trigger\":{\"type\":\"manual\"}}" \
    "manual push policy $project/late → http://$addr"
  policy=$CREATED_ID
  run_policy "$policy"
  log_info "waiting for 3 attempts (retried after 5 s, then 20 s)"
  wait_execution "$EXECUTION" "$FAILING_WAIT"
  assert_eq "the execution failed" Failed "$(jq -r .status <<<"$EXECUTION_JSON")"
  assert_eq "one task failed" 1 "$(jq -r .failed <<<"$EXECUTION_JSON")"
  tasks "$EXECUTION" >"$dir/tasks-failed.json"
  task=$(jq -r '.[0].id' "$dir/tasks-failed.json")
  error=$(jq -r '.[0].error' "$dir/tasks-failed.json")
  assert_contains "the task's error names $addr" "$error" "$addr"
  assert_eq "the task was tried 3 times" 3 "$(jq -r '.[0].attempts' "$dir/tasks-failed.json")"
  log=$(task_log "$EXECUTION" "$task")
  assert_contains "the task log says Failed" "$log" "status: Failed"
  assert_contains "the task log gives the error" "$log" "$addr"

  # The remote comes up there: the next run copies it, once.
  start_peer "$port" distribution-late
  run_policy "$policy"
  wait_execution "$EXECUTION" "$EXECUTION_WAIT"
  assert_eq "the run after the remote came up succeeded" Succeed "$(jq -r .status <<<"$EXECUTION_JSON")"
  tasks "$EXECUTION" >"$dir/tasks-second.json"
  sent=$(jq -r '.[0].bytes' "$dir/tasks-second.json")
  assert_match "it sent the blobs (bytes > 0)" '^[1-9][0-9]*$' "$sent"
  assert_eq "Distribution has $project/late:v1 with the same digest" "$digest" \
    "$(manifest_digest "$addr" "" "$project/late" v1)"

  run_policy "$policy"
  wait_execution "$EXECUTION" "$EXECUTION_WAIT"
  assert_eq "a third run succeeded" Succeed "$(jq -r .status <<<"$EXECUTION_JSON")"
  tasks "$EXECUTION" >"$dir/tasks-third.json"
  assert_eq "the third run sent 0 bytes (nothing duplicated)" 0 "$(jq -r '.[0].bytes' "$dir/tasks-third.json")"
  log=$(task_log "$EXECUTION" "$(jq -r '.[0].id' "$dir/tasks-third.json")")
  assert_contains "its task log says: bytes sent: 0" "$log" "bytes sent: 0"
  tags=$(curl -sS --max-time 30 "http://$addr/v2/$project/late/tags/list" | jq -c .tags)
  assert_eq "Distribution's tag list has v1 once" '["v1"]' "$tags"

  # B with a wrong password: reachable, not authenticated.
  wrong=Wrong-$RUN
  create /registries "{\"name\":\"wrong-$RUN\",\"url\":\"http://$B_ADDR\",\"type\":\"berth\",
    \"credential\":{\"type\":\"basic\",\"access_key\":\"admin\",\"access_secret\":\"$wrong\"}}" \
    "registry endpoint → B with a wrong password"
  status=$(ping_endpoint "{\"id\":$CREATED_ID}")
  assert_eq "ping with wrong credentials answers 400" 400 "$status"
  assert_eq "the ping says: reachable" true "$(jq -r '.errors[0].detail.reachable' "$E2E_TMP/body")"
  assert_eq "the ping says: authenticated false" false "$(jq -r '.errors[0].detail.authenticated' "$E2E_TMP/body")"
  log_info "message: $(jq -r '.errors[0].message' "$E2E_TMP/body")"
  status=$(api GET "/registries/$CREATED_ID")
  assert_eq "the endpoint's secret is never answered" '*****' "$(jq -r .credential.access_secret "$E2E_TMP/body")"
  assert_not "the wrong password appears nowhere in the answer" grep -q "$wrong" "$E2E_TMP/body"
}

# --- main ----------------------------------------------------------------------------------

for scenario in $SCENARIOS; do
  declare -F "scenario_$scenario" >/dev/null || die "unknown scenario: $scenario"
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ -z $BIN ]]; then
  for BIN in "$root/target/release/berth" "$root/target/debug/berth"; do
    [[ -x $BIN ]] && break
  done
fi
[[ -x $BIN ]] || die "no berth binary at $BIN (build it, or give BERTH_BIN)"
require_cmds curl jq python3 skopeo podman docker dockerd sha256sum cmp /usr/bin/docker-registry
e2e_init
export TMPDIR=$E2E_TMP # podman build and friends default to /var/tmp
on_exit stop_peers

log_step "replication: source A http://$SOURCE (run $RUN, scratch $E2E_TMP)"
wait_for_http "http://$SOURCE/v2/" 30 || die "registry $SOURCE is not answering"

# B: embedded storage in its own data dir, its own admin password; none of A's settings.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^BERTH_' || true)
export BERTH_ADMIN_PASSWORD=$B_PASSWORD
start_berth "$BIN"
B_ADDR=$BERTH_ADDR
log_info "B: $BIN on $B_ADDR"

setup_podman
build_multiarch
export REGISTRY_AUTH_FILE=$E2E_TMP/auth.json # podman and skopeo; docker has its own
pm login --tls-verify=false -u admin --password-stdin "$SOURCE" <<<"$ADMIN_PASSWORD" >/dev/null ||
  die "podman login to A failed"
pm login --tls-verify=false -u admin --password-stdin "$B_ADDR" <<<"$B_PASSWORD" >/dev/null ||
  die "podman login to B failed"
if [[ " $SCENARIOS " == *" push "* ]]; then
  start_dockerd
fi

# shellcheck disable=SC2086 # one word per scenario
if ! run_scenarios $SCENARIOS; then
  show_log "berth B" "$E2E_TMP/berth/berth.log" 40
  false
fi
