# shellcheck shell=bash
# The upload front in the Lambda suite (sourced by tests/lambda/run.sh, after its own
# scenarios): `berth upload-front` as a process on the suite's Garage, DynamoDB Local and moto,
# the push function restarted with BERTH_UPLOAD_URL pointing at it, and stock clients pushing
# an image with a large layer through the gateway (API Gateway's 10 MiB cap) while the layer's
# bytes go to the front. The gateway logs each request's body size (in=N), which tells how
# many bytes of a push crossed it.
#
# Knobs: FRONT_LAYER_MIB     size of the random file in the images' layers, MiB (default 200)
#        FRONT_BENCH_MIB     when set, also the benchmark (bench_front): a blob of this many MiB
#                            pushed through the gateway and the front, and to `berth serve --open`
#                            on the same Garage and table, FRONT_BENCH_ROUNDS times (default 3);
#                            medians, their ratio and peak RSS are reported, never asserted
#        FRONT_IMAGE_PROFILE the Cargo profile of the image's binary (default dev)

FRONT_LAYER_MIB=${FRONT_LAYER_MIB:-200}
FRONT_PID_FILE=""

# exec_front: `berth upload-front` in place of the (background) shell that calls it, with the
# environment the template gives the front's task and the image's allocator setting.
exec_front() {
  local blob_store="s3://$BERTH_TEST_S3_BUCKET/$PREFIX" bin=$BERTH
  while read -r var; do unset "$var"; done < <(compgen -e | grep '^BERTH_' || true)
  export BERTH_BLOB_STORE=$blob_store
  export BERTH_METADATA="dynamodb://$TABLE"
  export BERTH_S3_PATH_STYLE=true
  export BERTH_TOKEN_KEYS_SSM=$KEYS_PATH
  export BERTH_LOG=info
  # The allocator setting of the front's image (infra/upload-front/Dockerfile).
  export "$(grep -o 'GLIBC_TUNABLES=[^ ]*' "$ROOT/infra/upload-front/Dockerfile")"
  exec "$bin" upload-front --listen "$FRONT_ADDR"
}

# start_front: the front on FRONT_ADDR (a free port the first time, the same one after a
# restart); its PID in $FRONT_PID_FILE, stopped at exit whichever process it is by then.
start_front() {
  local pid
  if [[ -z $FRONT_PID_FILE ]]; then
    FRONT_PID_FILE=$E2E_TMP/upload-front.pid
    FRONT_ADDR=127.0.0.1:$(free_port)
    FRONT_URL=http://$FRONT_ADDR
    # shellcheck disable=SC2016 # read when the run ends
    on_exit 'stop_pid "$(cat "$FRONT_PID_FILE")" upload-front'
  fi
  exec_front >>"$E2E_TMP/upload-front.log" 2>&1 &
  pid=$!
  echo "$pid" >"$FRONT_PID_FILE"
  wait_for_http "$FRONT_URL/health" 30 "$pid" || return 1
  log_info "upload front pid $pid on $FRONT_URL"
}

# restart_push_function [UPLOAD_URL]: the push function again, handing uploads to UPLOAD_URL
# (none: as deployed with UploadFront=none).
restart_push_function() {
  stop_pid "${FUNCTION_PID[registry-push]}" registry-push
  # shellcheck disable=SC2034 # read by exec_function (run.sh)
  PUSH_UPLOAD_URL=${1:-}
  start_function registry-push DELETE "/v2/lambda/probe/blobs/uploads/$(python3 -c 'import uuid; print(uuid.uuid4())')"
}

# gateway_bytes_since LINE: the request body bytes the gateway received after log line LINE,
# and how many requests that was: "BYTES REQUESTS".
gateway_bytes_since() {
  tail -n "+$(($1 + 1))" "$E2E_TMP/gateway.log" |
    awk '/ in=[0-9]+$/ { sub(/.* in=/, ""); bytes += $0; n++ } END { print bytes + 0, n + 0 }'
}

gateway_lines() { wc -l <"$E2E_TMP/gateway.log"; }

# assert_small_gateway_bodies LINE WHAT: after gateway log line LINE, during the WHAT, only
# small bodies (the config and the manifest, under 64 KiB) crossed the gateway.
assert_small_gateway_bodies() {
  local counted
  counted=$(gateway_bytes_since "$1")
  log_info "through the gateway during the $2: ${counted% *} body bytes in ${counted#* } requests"
  assert_match "... and only the config and the manifest crossed the gateway (under 64 KiB)" \
    '^[0-9]{1,4} |^[0-5][0-9]{4} |^6[0-4][0-9]{3} ' "$counted "
}

# make_docker_image REF SEED: a one-layer image in dockerd from local files (a random file of
# FRONT_LAYER_MIB MiB).
make_docker_image() {
  local dir=$E2E_TMP/front-image-$2
  mkdir -p "$dir"
  head -c $((FRONT_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$dir/random.bin"
  printf 'berth upload front test %s, run %s\n' "$2" "$RUN_ID" >"$dir/hello.txt"
  tar --owner=0 --group=0 -C "$dir" -c random.bin hello.txt |
    docker import -c 'CMD ["/hello.txt"]' - "$1" >/dev/null
  rm -r "$dir"
}

# front_received: the bytes the front's open connections have received so far.
front_received() {
  { ss -tinH state established "( sport = :${FRONT_ADDR##*:} )" | grep -o 'bytes_received:[0-9]*' || true; } |
    awk -F: '{ sum += $2 } END { print sum + 0 }'
}

# assert_front_pushed WHAT REPOSITORY: the front's event line of a blob of REPOSITORY, pushed by
# the admin.
assert_front_pushed() {
  local line
  line=$(grep 'berth::event' "$E2E_TMP/upload-front.log" | grep -F "subject=\"$2@" | tail -n 1 || true)
  assert_match "... and the front logged the blob $1 pushed, as the admin" \
    "event=\"blob_pushed\".*actor=\"$ADMIN\".*entry=\"upload-front\"" "$line"
}

# front_token REPO: a push token for REPO.
front_token() { token "repository:$1:pull,push"; }

# manifest_layer REF_PATH TOKEN: the first layer digest of a manifest in the registry.
manifest_layer() {
  curl -sS --max-time "$CURL_TIMEOUT" -H "Authorization: Bearer $2" \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json, $MT_OCI_MANIFEST" \
    "$GATEWAY_URL/v2/$1" | jq -r '.layers[0].digest'
}

# s3_blob_keys: the blob objects in the suite's prefix, one key per line.
s3_blob_keys() {
  python3 - "$BERTH_TEST_S3_BUCKET" "$PREFIX/blobs/" <<'PY'
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"],
                  region_name=os.environ.get("AWS_REGION", "garage"))
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1], Prefix=sys.argv[2])
for page in pages:
    for item in page.get("Contents", []):
        print(item["Key"])
PY
}

# --- scenarios -----------------------------------------------------------------------

scenario_front_routes() {
  local out=$E2E_TMP/front-routes status location repository=lambda/front-routes-$RUN_ID
  status=$(req GET "$FRONT_URL/health" "$out")
  assert_eq "the front answers GET /health with 200" 200 "$status"
  status=$(req GET "$FRONT_URL/v2/" "$out")
  assert_eq "the front refuses GET /v2/ with an OCI error" UNSUPPORTED "$(jq -r '.errors[0].code' "$out.body")"
  status=$(req PUT "$FRONT_URL/v2/$repository/manifests/v1" "$out" -H "Content-Type: $MT_OCI_MANIFEST" -d '{}')
  assert_eq "the front refuses a manifest PUT with an OCI error" UNSUPPORTED "$(jq -r '.errors[0].code' "$out.body")"

  TOKEN=$(front_token "$repository")
  status=$(areq POST "$GATEWAY_URL/v2/$repository/blobs/uploads/" "$out")
  assert_eq "POST through the gateway opens a session (202)" 202 "$status"
  location=$(header "$out.headers" location)
  assert_match "... whose Location is absolute, on the front, with a grant" \
    "^$FRONT_URL/v2/$repository/blobs/uploads/[0-9a-f-]+\\?grant=[A-Za-z0-9_.-]+\$" "$location"
  assert_eq "... and advertises no OCI-Chunk-Max-Length" "" "$(header "$out.headers" oci-chunk-max-length)"
}

scenario_front_grants() {
  local out=$E2E_TMP/front-grants status location other path grant tampered expired
  local repository=lambda/front-grants-$RUN_ID repository2=lambda/front-other-$RUN_ID
  TOKEN=$(front_token "$repository")
  areq POST "$GATEWAY_URL/v2/$repository/blobs/uploads/" "$out" >/dev/null
  location=$(header "$out.headers" location)
  path=${location%%\?*}
  grant=${location#*grant=}
  TOKEN=$(front_token "$repository2")
  areq POST "$GATEWAY_URL/v2/$repository2/blobs/uploads/" "$out" >/dev/null
  other=$(header "$out.headers" location)
  head -c $((1024 * 1024)) /dev/urandom >"$E2E_TMP/front-grants.bin"

  status=$(req PATCH "$path" "$out" --data-binary "@$E2E_TMP/front-grants.bin")
  assert_eq "a PATCH without a grant is refused with 401" 401 "$status"
  assert_eq "... and an OCI error UNAUTHORIZED" UNAUTHORIZED "$(jq -r '.errors[0].code' "$out.body")"

  # The last signature character changed: another signature.
  tampered=${grant%?}$([[ ${grant: -1} == A ]] && echo B || echo A)
  status=$(req PATCH "$path?grant=$tampered" "$out" --data-binary "@$E2E_TMP/front-grants.bin")
  assert_eq "a PATCH with a tampered grant is refused with 401" 401 "$status"
  assert_eq "... and an OCI error UNAUTHORIZED" UNAUTHORIZED "$(jq -r '.errors[0].code' "$out.body")"

  status=$(req PATCH "$path?${other#*\?}" "$out" --data-binary "@$E2E_TMP/front-grants.bin")
  assert_eq "a PATCH with another repository's grant is refused with 403" 403 "$status"
  assert_eq "... and an OCI error DENIED" DENIED "$(jq -r '.errors[0].code' "$out.body")"

  # Signed with the deployment's own key, but an hour past its time.
  expired=$(python3 - "$KEYS_PATH/upload" "$repository" "${path##*/}" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
import boto3
ssm = boto3.client("ssm", endpoint_url=os.environ["AWS_ENDPOINT_URL_SSM"],
                   region_name=os.environ.get("AWS_REGION", "us-east-1"))
key = base64.b64decode(ssm.get_parameter(Name=sys.argv[1], WithDecryption=True)["Parameter"]["Value"])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"aud": "berth-upload", "sub": sys.argv[2], "jti": sys.argv[3],
                       "act": "admin", "exp": int(time.time()) - 3600}).encode())
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
  )
  status=$(req PATCH "$path?grant=$expired" "$out" --data-binary "@$E2E_TMP/front-grants.bin")
  assert_eq "a PATCH with an expired grant is refused with 401" 401 "$status"
  assert_contains "... saying it expired" "$(jq -r '.errors[0].message' "$out.body")" "expired"

  status=$(req GET "$location" "$out")
  assert_eq "the session's status, with its grant, answers 204" 204 "$status"
  assert_eq "... and nothing was written by the refused requests" "0-0" "$(header "$out.headers" range)"
  assert_eq "... and the Location keeps the grant" "${location#"$FRONT_URL"}" "$(header "$out.headers" location)"

  # A client that sends the registry's token to the front too (containers/image, oras).
  status=$(areq PATCH "$location" "$out" --data-binary "@$E2E_TMP/front-grants.bin")
  assert_eq "a PATCH with the grant and an Authorization header is accepted (202)" 202 "$status"
  assert_eq "... holding the chunk" "0-1048575" "$(header "$out.headers" range)"
  status=$(req DELETE "$FRONT_URL$(header "$out.headers" location)" "$out")
  assert_eq "DELETE with the grant cancels the session (204)" 204 "$status"
}

# The monolithic POST-then-PUT of containerd, Docker 29 and oras, with curl: the whole blob
# in the PUT's body, to the front, with no Authorization header.
scenario_front_post_put() {
  local out=$E2E_TMP/front-put status location repository=lambda/front-put-$RUN_ID lines counted
  local blob=$E2E_TMP/front-put.bin digest
  head -c $((FRONT_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$blob"
  digest=$(sha256_file "$blob")
  TOKEN=$(front_token "$repository")
  lines=$(gateway_lines)
  areq POST "$GATEWAY_URL/v2/$repository/blobs/uploads/" "$out" >/dev/null
  location=$(header "$out.headers" location)
  status=$(CURL_TIMEOUT=$CLIENT_TIMEOUT req PUT "$(with_digest "$location" "$digest")" "$out" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$blob")
  assert_eq "PUT ?digest with the whole ${FRONT_LAYER_MIB} MiB blob on the front answers 201" 201 "$status"
  assert_eq "... with its digest" "$digest" "$(header "$out.headers" docker-content-digest)"
  counted=$(gateway_bytes_since "$lines")
  assert_eq "... and the gateway saw one request with no body (the POST)" "0 1" "$counted"
  status=$(areq HEAD "$GATEWAY_URL/v2/$repository/blobs/$digest" "$out")
  assert_eq "HEAD of the blob through the gateway answers 200" 200 "$status"
  assert_eq "... with its size" "$(size_of "$blob")" "$(header "$out.headers" content-length)"
  rm -f "$blob"
}

scenario_front_docker() {
  local ref=$GATEWAY/lambda/front-docker-$RUN_ID:v1 id lines log=$E2E_TMP/front-docker.log
  make_docker_image "$ref" docker
  id=$(docker image inspect -f '{{.Id}}' "$ref")
  assert_cmd "docker login through the gateway" \
    docker login -u "$ADMIN" --password-stdin "$GATEWAY" <<<"$ADMIN_PASSWORD"
  lines=$(gateway_lines)
  run_to "$log" timeout "$CLIENT_TIMEOUT" docker push "$ref"
  pass "docker push of a ${FRONT_LAYER_MIB} MiB layer through the gateway succeeds"
  assert_small_gateway_bodies "$lines" push
  assert_eq "... no PATCH went through the gateway" "" \
    "$(tail -n "+$((lines + 1))" "$E2E_TMP/gateway.log" | grep '^PATCH' || true)"
  assert_front_pushed docker "lambda/front-docker-$RUN_ID"
  docker rmi "$ref" >/dev/null
  run_to "$E2E_TMP/front-docker-pull.log" timeout "$CLIENT_TIMEOUT" docker pull "$ref"
  assert_eq "docker pull through the gateway gives the same image id" "$id" \
    "$(docker image inspect -f '{{.Id}}' "$ref")"
  docker save -o "$E2E_TMP/front-image.tar" "$ref"
}

scenario_front_skopeo() {
  [[ -s $E2E_TMP/front-image.tar ]] || fail "the docker scenario saved its image" "no $E2E_TMP/front-image.tar"
  local dest=$GATEWAY/lambda/front-skopeo-$RUN_ID:v1 lines dir=$E2E_TMP/front-skopeo
  lines=$(gateway_lines)
  run timeout "$CLIENT_TIMEOUT" skopeo --tmpdir "$E2E_TMP" copy --dest-tls-verify=false \
    --dest-creds "$ADMIN:$ADMIN_PASSWORD" "docker-archive:$E2E_TMP/front-image.tar" "docker://$dest"
  pass "skopeo copy of the image to the gateway succeeds"
  assert_small_gateway_bodies "$lines" copy
  assert_front_pushed skopeo "lambda/front-skopeo-$RUN_ID"
  run timeout "$CLIENT_TIMEOUT" skopeo --tmpdir "$E2E_TMP" copy --src-tls-verify=false \
    --src-creds "$ADMIN:$ADMIN_PASSWORD" "docker://$dest" "dir:$dir"
  local layer
  layer=$(jq -r '.layers[0].digest' "$dir/manifest.json")
  assert_eq "skopeo reads the layer back with its digest" "$layer" "$(sha256_file "$dir/${layer#sha256:}")"
  rm -rf "$dir"
}

scenario_front_podman() {
  local ref=$GATEWAY/lambda/front-podman-$RUN_ID:v1 lines dir=$E2E_TMP/front-podman
  setup_podman
  # A layer of its own, so that podman cannot mount one pushed before.
  mkdir -p "$dir"
  head -c $((FRONT_LAYER_MIB * 1024 * 1024)) /dev/urandom >"$dir/random.bin"
  tar --owner=0 --group=0 -C "$dir" -cf "$dir.tar" random.bin
  rm -r "$dir"
  run pm import "$dir.tar" "$ref"
  rm "$dir.tar"
  lines=$(gateway_lines)
  run timeout "$CLIENT_TIMEOUT" podman --root "$E2E_PODMAN_DIR/root" --runroot "$E2E_PODMAN_DIR/run" \
    --storage-driver vfs --tmpdir "$E2E_PODMAN_DIR/tmp" --events-backend none \
    push --tls-verify=false --creds "$ADMIN:$ADMIN_PASSWORD" "$ref"
  pass "podman push of a ${FRONT_LAYER_MIB} MiB layer through the gateway succeeds"
  assert_small_gateway_bodies "$lines" push
  assert_front_pushed podman "lambda/front-podman-$RUN_ID"
  run pm rmi "$ref"
}

# The front killed while docker streams a layer's PATCH, then started again: docker's own
# retry finishes the push, and the layer's content address never held a partial blob.
scenario_front_restart() {
  local ref=$GATEWAY/lambda/front-restart-$RUN_ID:v1 id pid received=0 push_pid
  local blobs_at_kill layer
  make_docker_image "$ref" restart
  id=$(docker image inspect -f '{{.Id}}' "$ref")
  pid=$(cat "$FRONT_PID_FILE")
  timeout "$CLIENT_TIMEOUT" docker push "$ref" >"$E2E_TMP/front-restart-push.log" 2>&1 &
  push_pid=$!
  # Until a connection to the front has received 40 MiB: the layer's PATCH is streaming.
  for _ in $(seq 1200); do
    received=$(front_received)
    ((received < 40 * 1024 * 1024)) || break
    sleep 0.05
  done
  ((received >= 40 * 1024 * 1024)) || fail "the front received the layer's PATCH" "its connections received $received bytes"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  pass "the front was killed after receiving $((received / 1024 / 1024)) MiB of the push"
  blobs_at_kill=$(s3_blob_keys)
  sleep 2
  start_front || fail "the front starts again on the same address"
  pass "the front started again on $FRONT_ADDR"
  if wait "$push_pid"; then
    pass "docker's retry completes the push"
  else
    fail "docker's retry completes the push" "$(tail -n 5 "$E2E_TMP/front-restart-push.log")"
  fi
  log_info "docker said: $(grep -ci retry "$E2E_TMP/front-restart-push.log" || true) retry line(s)"
  layer=$(manifest_layer "lambda/front-restart-$RUN_ID/manifests/v1" "$(front_token "lambda/front-restart-$RUN_ID")")
  assert_match "the pushed manifest names its layer" '^sha256:[0-9a-f]{64}$' "$layer"
  assert_eq "when the front was killed, the layer's content address held nothing" "" \
    "$(grep "${layer#sha256:}" <<<"$blobs_at_kill" || true)"
  docker rmi "$ref" >/dev/null
  run_to "$E2E_TMP/front-restart-pull.log" timeout "$CLIENT_TIMEOUT" docker pull "$ref"
  assert_eq "docker pull gives the same image id" "$id" "$(docker image inspect -f '{{.Id}}' "$ref")"
}

# The front's container image (infra/upload-front/Dockerfile), built offline in the suite's
# dockerd, serving a docker push as the deployed front would: `docker run` with the task's
# environment, on the host's network to reach the suite's services.
scenario_front_image() {
  local image container ref=$GATEWAY/lambda/front-image-$RUN_ID:v1 id started
  run_to "$E2E_TMP/front-image-build.log" "$ROOT/scripts/build-upload-front-image.sh" \
    --profile "${FRONT_IMAGE_PROFILE:-dev}" --tag "berth-upload-front:test-$RUN_ID"
  image=$(tail -n 1 "$E2E_TMP/front-image-build.log")
  pass "the upload front's image builds offline ($image)"
  assert_eq "... from scratch: one binary and the CA bundle" "[\"/berth\",\"upload-front\"]" \
    "$(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")"
  # In place of the front process, on its address: the push function sends uploads there.
  stop_pid "$(cat "$FRONT_PID_FILE")" upload-front
  container=$(docker run -d --network host \
    -e BERTH_LISTEN="$FRONT_ADDR" -e BERTH_BLOB_STORE="s3://$BERTH_TEST_S3_BUCKET/$PREFIX" \
    -e BERTH_METADATA="dynamodb://$TABLE" -e BERTH_S3_PATH_STYLE=true -e BERTH_TOKEN_KEYS_SSM="$KEYS_PATH" \
    -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_REGION -e AWS_ENDPOINT_URL_S3 \
    -e AWS_ENDPOINT_URL_DYNAMODB -e AWS_ENDPOINT_URL_SSM "$image")
  # shellcheck disable=SC2064 # this container, whenever the scenario ends
  trap "docker rm -f $container >/dev/null 2>&1 || true" EXIT
  started=$SECONDS
  until curl -sf --max-time 2 "$FRONT_URL/health" >/dev/null; do
    [[ $(docker inspect -f '{{.State.Running}}' "$container") == true ]] ||
      fail "the container serves /health" "$(docker logs "$container" 2>&1 | tail -n 5)"
    ((SECONDS - started < 30)) || fail "the container serves /health within 30 s"
    sleep 0.3
  done
  pass "docker run of the image serves /health"
  make_docker_image "$ref" image
  id=$(docker image inspect -f '{{.Id}}' "$ref")
  run_to "$E2E_TMP/front-image-push.log" timeout "$CLIENT_TIMEOUT" docker push "$ref"
  pass "docker push through the gateway to the containerised front succeeds"
  assert_contains "... and the container logged the blob pushed, as the admin" \
    "$(docker logs "$container" 2>&1 | grep "lambda/front-image-$RUN_ID" | grep '"event":"blob_pushed"' | tail -n 1)" \
    "\"actor\":\"$ADMIN\""
  docker rmi "$ref" >/dev/null
  run_to "$E2E_TMP/front-image-pull.log" timeout "$CLIENT_TIMEOUT" docker pull "$ref"
  assert_eq "docker pull gives the same image id" "$id" "$(docker image inspect -f '{{.Id}}' "$ref")"
}

# With UploadFront=none (no BERTH_UPLOAD_URL): uploads stay on the function, as before.
scenario_front_none() {
  local out=$E2E_TMP/front-none status location repository=lambda/front-none-$RUN_ID
  # shellcheck disable=SC2034 # areq's token
  TOKEN=$(front_token "$repository")
  status=$(areq POST "$GATEWAY_URL/v2/$repository/blobs/uploads/" "$out")
  location=$(header "$out.headers" location)
  assert_match "without BERTH_UPLOAD_URL the session stays on the registry" \
    "^/v2/$repository/blobs/uploads/[0-9a-f-]+\$" "$location"
  assert_eq "... advertising OCI-Chunk-Max-Length as before" 4194304 "$(header "$out.headers" oci-chunk-max-length)"
  status=$(head -c $((4 * 1024 * 1024 + 1)) /dev/zero | areq PATCH "$(url "$location")" "$out" \
    -H 'Content-Type: application/octet-stream' --data-binary @-)
  assert_eq "... and a body over it is refused with 413 as before" 413 "$status"
}

run_front_scenarios() {
  start_front || setup_failed "the upload front did not start"
  restart_push_function "$FRONT_URL"
  run_scenario "upload front: routes and handoff" scenario_front_routes
  run_scenario "upload front: grants" scenario_front_grants
  run_scenario "upload front: POST then PUT" scenario_front_post_put
  run_scenario "upload front: docker push" scenario_front_docker
  run_scenario "upload front: skopeo copy" scenario_front_skopeo
  run_scenario "upload front: podman push" scenario_front_podman
  # shellcheck disable=SC2034 # reported by run.sh
  FRONT_RSS_KIB=$(proc_kib "$(cat "$FRONT_PID_FILE")" VmHWM)
  run_scenario "upload front: killed mid-PATCH" scenario_front_restart
  FRONT_LAYER_MIB=20 run_scenario "upload front: the container image" scenario_front_image
  # The front process again: the image scenario stopped it (and the restart scenario's start
  # is lost with its subshell).
  if ! kill -0 "$(cat "$FRONT_PID_FILE")" 2>/dev/null; then
    start_front || setup_failed "the upload front did not start again"
  fi
  restart_push_function ""
  run_scenario "upload front: none" scenario_front_none
}

# --- benchmark (FRONT_BENCH_MIB set; reported, never asserted) -------------------------

# bench_push BASE_FOR_POST TOKEN FILE DIGEST: one blob pushed as docker does (POST, one
# streamed PATCH, PUT ?digest) starting at BASE_FOR_POST; prints the seconds it took.
bench_push() {
  local post=$1 token=$2 file=$3 digest=$4 out=$E2E_TMP/bench started location auth=()
  [[ -z $token ]] || auth=(-H "Authorization: Bearer $token")
  started=$(now_ms)
  req POST "$post" "$out" "${auth[@]}" >/dev/null
  location=$(header "$out.headers" location)
  [[ $location == http* ]] || location=${post%%/v2/*}$location
  [[ $(CURL_TIMEOUT=$CLIENT_TIMEOUT req PATCH "$location" "$out" "${auth[@]}" \
    -H 'Content-Type: application/octet-stream' -T "$file") == 202 ]] || die "bench: PATCH failed: $(cat "$out.body")"
  location=$(header "$out.headers" location)
  [[ $location == http* ]] || location=${post%%/v2/*}$location
  [[ $(req PUT "$(with_digest "$location" "$digest")" "$out" "${auth[@]}") == 201 ]] ||
    die "bench: PUT failed: $(cat "$out.body")"
  awk -v ms=$(($(now_ms) - started)) 'BEGIN { printf "%.2f\n", ms / 1000 }'
}

# median N...: the middle value.
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

bench_front() {
  local mib=$FRONT_BENCH_MIB rounds=${FRONT_BENCH_ROUNDS:-3} file=$E2E_TMP/bench.bin digest i
  local serve_pid serve_port front_times=() serve_times=() front_peak serve_peak
  log_step "benchmark: a ${mib} MiB blob through the gateway and the front, and to berth serve, on the same Garage"
  head -c $((mib * 1024 * 1024)) /dev/urandom >"$file"
  serve_port=$(free_port)
  local blob_store="s3://$BERTH_TEST_S3_BUCKET/$PREFIX-serve"
  (
    while read -r var; do unset "$var"; done < <(compgen -e | grep '^BERTH_' || true)
    exec "$BERTH" serve --open --listen "127.0.0.1:$serve_port" --data-dir "$E2E_TMP/bench-serve" \
      --blob-store "$blob_store" --metadata "dynamodb://$TABLE" --s3-path-style
  ) >"$E2E_TMP/bench-serve.log" 2>&1 &
  serve_pid=$!
  on_exit "stop_pid $serve_pid 'berth serve (benchmark)'"
  wait_for_http "http://127.0.0.1:$serve_port/v2/" 30 "$serve_pid" || die "bench: berth serve did not start"
  start_front_fresh
  for ((i = 1; i <= rounds; i++)); do
    # A different blob each round and side: nothing is already there.
    printf '%016d' "$i" | dd of="$file" bs=1 seek=0 conv=notrunc status=none
    digest=$(sha256_file "$file")
    TOKEN=$(front_token "lambda/bench-$RUN_ID")
    front_times+=("$(bench_push "$GATEWAY_URL/v2/lambda/bench-$RUN_ID/blobs/uploads/" "$TOKEN" "$file" "$digest")")
    printf '%016d' "$((i + 1000))" | dd of="$file" bs=1 seek=0 conv=notrunc status=none
    digest=$(sha256_file "$file")
    serve_times+=("$(bench_push "http://127.0.0.1:$serve_port/v2/lambda/bench-$RUN_ID/blobs/uploads/" "" "$file" "$digest")")
    log_info "round $i: gateway + front ${front_times[-1]} s, berth serve ${serve_times[-1]} s"
  done
  front_peak=$(proc_kib "$(cat "$FRONT_PID_FILE")" VmHWM)
  serve_peak=$(proc_kib "$serve_pid" VmHWM)
  log_info "median of $rounds: gateway + front $(median "${front_times[@]}") s, berth serve $(median "${serve_times[@]}") s, ratio $(awk -v a="$(median "${front_times[@]}")" -v b="$(median "${serve_times[@]}")" 'BEGIN { printf "%.2f", a / b }')"
  log_info "peak RSS (VmHWM): the front $front_peak KiB, berth serve $serve_peak KiB"
  log_info "requests through the gateway per layer: 1 (the POST); body bytes: 0"
  rm -f "$file"
}

# start_front_fresh: the front restarted, so that its VmHWM is the benchmark's alone.
start_front_fresh() {
  stop_pid "$(cat "$FRONT_PID_FILE")" upload-front
  start_front || die "bench: the front did not start"
  restart_push_function "$FRONT_URL"
}
