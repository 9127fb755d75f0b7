#!/usr/bin/env bash
# Authentication and authorization end to end, against a running `berth serve` with auth on:
# probes that must be refused (curl on the wire), `docker login` as a user, a push to a
# private project, `docker logout` and the pull refused, anonymous pull from a public
# project, `podman login` and `skopeo --creds`, a robot account pushing from a script, the
# repository and artifact API over images docker and skopeo pushed, garbage collection
# freeing a deleted image's layers while the image sharing its base still pulls, tag
# immutability rules refusing docker and skopeo pushes and deletions, a project's storage
# quota holding against docker pushes, one at a time and 20 at once, and a tag retention
# policy run dry and for real through the API.
#
# Usage: tests/e2e/auth.sh HOST:PORT ADMIN_PASSWORD
#
# The registry must be a fresh Berth with the user `admin` holding ADMIN_PASSWORD. Every
# account and project this script creates is named after the run, so it may run again on
# the same registry. Ends with the line "N passed, M failed"; exits 1 if M > 0.
#
# Environment: E2E_AUTH_SCENARIOS (subset of: probes docker podman robot artifacts gc
# immutable quota retention),
# E2E_KEEP_TMP=1. The gc scenario wants the registry's BERTH_GC_GRACE at 1s (berth.sh sets
# it).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGISTRY=${1:?usage: $0 HOST:PORT ADMIN_PASSWORD}
ADMIN_PASSWORD=${2:?usage: $0 HOST:PORT ADMIN_PASSWORD}
SCENARIOS=${E2E_AUTH_SCENARIOS:-probes docker podman robot artifacts gc immutable quota retention}
RUN=$(date +%s)$RANDOM
BASE=http://$REGISTRY
PRIVATE=private$RUN
PUBLIC=public$RUN
# Users' passwords follow the password policy: 8+ characters, upper, lower, digit.
ALICE=alice$RUN ALICE_PASSWORD=Alice-pw-$RUN
GUEST=guest$RUN GUEST_PASSWORD=Guest-pw-$RUN
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json

# --- wire helpers --------------------------------------------------------------------------

# http METHOD URL [CURL ARGS...]: the status code; the body is left in $E2E_TMP/body and the
# headers in $E2E_TMP/headers.
http() {
  local method=$1 url=$2
  shift 2
  curl -sS -X "$method" -o "$E2E_TMP/body" -D "$E2E_TMP/headers" -w '%{http_code}' \
    --max-time 60 "$@" "$url"
}

body() { cat "$E2E_TMP/body"; }
last_header() { header "$E2E_TMP/headers" "$1"; }

# api METHOD PATH CREDENTIALS [JSON]: a management API call; prints the status.
api() {
  local method=$1 path=$2 credentials=$3 json=${4:-}
  local args=(-u "$credentials" -H 'Content-Type: application/json')
  [[ -z $json ]] || args+=(--data "$json")
  http "$method" "$BASE/api/v2.0$path" "${args[@]}"
}

# token CREDENTIALS SCOPE...: a bearer token from the token service (CREDENTIALS may be
# empty for anonymous).
token() {
  local credentials=$1 query="service=berth" scope
  shift
  for scope in "$@"; do query+="&scope=$scope"; done
  local args=()
  [[ -z $credentials ]] || args+=(-u "$credentials")
  http GET "$BASE/service/token?$query" "${args[@]}" >/dev/null
  jq -r .token "$E2E_TMP/body"
}

# A tiny OCI image (config + one layer) pushed with curl and a bearer token, so that each
# probe sees exactly the status the registry answers.
make_blob() { printf '%s' "$1" >"$E2E_TMP/blob"; sha256sum "$E2E_TMP/blob" | awk '{print "sha256:" $1}'; }

# push_blob REPO TOKEN DIGEST: monolithic upload; prints the status of the POST.
push_blob() {
  local repo=$1 token=$2 digest=$3
  http POST "$BASE/v2/$repo/blobs/uploads/?digest=$digest" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/octet-stream' --data-binary "@$E2E_TMP/blob"
}

# push_manifest REPO TOKEN TAG: pushes a config-only manifest whose blob must exist.
push_manifest() {
  local repo=$1 token=$2 tag=$3 config size
  config=$(make_blob "{\"run\":\"$RUN\"}")
  size=$(stat -c %s "$E2E_TMP/blob")
  push_blob "$repo" "$token" "$config" >/dev/null
  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' \
    "$MT_OCI_MANIFEST" "$config" "$size" >"$E2E_TMP/manifest"
  http PUT "$BASE/v2/$repo/manifests/$tag" -H "Authorization: Bearer $token" \
    -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$E2E_TMP/manifest"
}

# --- set-up ----------------------------------------------------------------------------------

setup_accounts() {
  local status
  status=$(api POST /users "admin:$ADMIN_PASSWORD" \
    "{\"username\":\"$ALICE\",\"email\":\"$ALICE@example.com\",\"password\":\"$ALICE_PASSWORD\"}")
  [[ $status == 201 ]] || die "creating $ALICE: $status $(body)"
  status=$(api POST /users "admin:$ADMIN_PASSWORD" \
    "{\"username\":\"$GUEST\",\"password\":\"$GUEST_PASSWORD\"}")
  [[ $status == 201 ]] || die "creating $GUEST: $status $(body)"
  status=$(api POST /projects "admin:$ADMIN_PASSWORD" "{\"project_name\":\"$PRIVATE\",\"metadata\":{\"public\":\"false\"}}")
  [[ $status == 201 ]] || die "creating project $PRIVATE: $status $(body)"
  status=$(api POST /projects "admin:$ADMIN_PASSWORD" "{\"project_name\":\"$PUBLIC\",\"metadata\":{\"public\":\"true\"}}")
  [[ $status == 201 ]] || die "creating project $PUBLIC: $status $(body)"
  local project
  for project in "$PRIVATE" "$PUBLIC"; do
    status=$(api POST "/projects/$project/members" "admin:$ADMIN_PASSWORD" \
      "{\"role_id\":2,\"member_user\":{\"username\":\"$ALICE\"}}")
    [[ $status == 201 ]] || die "adding $ALICE to $project: $status $(body)"
    status=$(api POST "/projects/$project/members" "admin:$ADMIN_PASSWORD" \
      "{\"role_id\":3,\"member_user\":{\"username\":\"$GUEST\"}}")
    [[ $status == 201 ]] || die "adding $GUEST to $project: $status $(body)"
  done
  log_info "users $ALICE (developer) and $GUEST (guest) in projects $PRIVATE (private) and $PUBLIC (public)"
}

# --- scenarios -------------------------------------------------------------------------------

scenario_probes() {
  local status challenge anon alice_pull alice_push guest_all tampered digest unsigned

  status=$(http GET "$BASE/v2/")
  assert_eq "anonymous GET /v2/ is refused" 401 "$status"
  challenge=$(last_header www-authenticate)
  assert_contains "the challenge names the token realm" "$challenge" "Bearer realm=\"$BASE/service/token\""
  assert_contains "the challenge names the service" "$challenge" 'service="berth"'

  status=$(http GET "$BASE/v2/$PRIVATE/app/manifests/latest")
  assert_eq "anonymous manifest GET of a private project is refused" 401 "$status"
  assert_contains "the challenge asks for the repository's pull scope" "$(last_header www-authenticate)" \
    "scope=\"repository:$PRIVATE/app:pull\""
  assert_eq "the refusal is an OCI error body" UNAUTHORIZED "$(jq -r '.errors[0].code' "$E2E_TMP/body")"

  anon=$(token "" "repository:$PRIVATE/app:pull,push")
  assert_eq "an anonymous token for a private project grants nothing" "[]" "$(jq -c .access <<<"$(jwt_claims "$anon")")"
  digest=$(make_blob "anonymous $RUN")
  status=$(push_blob "$PRIVATE/app" "$anon" "$digest")
  assert_eq "anonymous push is refused" 401 "$status"
  assert_contains "with insufficient_scope" "$(last_header www-authenticate)" 'error="insufficient_scope"'
  status=$(http GET "$BASE/v2/$PRIVATE/app/tags/list" -H "Authorization: Bearer $anon")
  assert_eq "anonymous pull of a private project is refused" 401 "$status"

  anon=$(token "" "repository:$PUBLIC/app:pull,push")
  assert_eq "an anonymous token for a public project grants pull only" '["pull"]' \
    "$(jwt_claims "$anon" | jq -c '.access[0].actions')"
  status=$(push_blob "$PUBLIC/app" "$anon" "$digest")
  assert_eq "anonymous push to a public project is refused" 401 "$status"

  status=$(http GET "$BASE/service/token?service=berth&scope=repository:$PRIVATE/app:pull" -u "$ALICE:wrong-Password1")
  assert_eq "the token service refuses a wrong password" 401 "$status"

  alice_pull=$(token "$ALICE:$ALICE_PASSWORD" "repository:$PRIVATE/app:pull")
  status=$(push_blob "$PRIVATE/app" "$alice_pull" "$digest")
  assert_eq "a pull-only token cannot push" 401 "$status"
  alice_push=$(token "$ALICE:$ALICE_PASSWORD" "repository:$PRIVATE/app:pull,push")
  status=$(push_manifest "$PRIVATE/app" "$alice_push" v1)
  assert_eq "a developer's push token pushes" 201 "$status"
  status=$(http GET "$BASE/v2/$PRIVATE/app/manifests/v1" -H "Authorization: Bearer $alice_pull" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "a pull token pulls" 200 "$status"
  status=$(http GET "$BASE/v2/$PRIVATE/other/tags/list" -H "Authorization: Bearer $alice_push")
  assert_eq "a token for one repository is refused on another" 401 "$status"

  guest_all=$(token "$GUEST:$GUEST_PASSWORD" "repository:$PRIVATE/app:pull,push,delete")
  assert_eq "a guest is granted pull only" '["pull"]' "$(jwt_claims "$guest_all" | jq -c '.access[0].actions')"
  status=$(http DELETE "$BASE/v2/$PRIVATE/app/manifests/$(sha256sum "$E2E_TMP/manifest" | awk '{print "sha256:" $1}')" \
    -H "Authorization: Bearer $guest_all")
  assert_eq "a guest cannot delete" 401 "$status"
  alice_push=$(token "$ALICE:$ALICE_PASSWORD" "repository:$PRIVATE/app:delete")
  assert_eq "a developer is granted no delete" "[]" "$(jwt_claims "$alice_push" | jq -c '.access')"

  # One character well inside the signature changed (the last may hold only padding bits).
  tampered=$(python3 -c '
import sys
header, payload, signature = sys.argv[1].split(".")
i = len(signature) // 2
signature = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1:]
print(".".join([header, payload, signature]))' "$alice_pull")
  status=$(http GET "$BASE/v2/$PRIVATE/app/tags/list" -H "Authorization: Bearer $tampered")
  assert_eq "a token with a bad signature is refused" 401 "$status"
  # alg:none with the registry's own kid, so that it is the algorithm that is refused.
  unsigned=$(python3 -c '
import base64, json, sys
def enc(o): return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()
def dec(s): return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
header, payload, _ = sys.argv[1].split(".")
print(enc({"alg": "none", "typ": "JWT", "kid": dec(header)["kid"]}) + "." + payload + ".")' "$alice_pull")
  status=$(http GET "$BASE/v2/$PRIVATE/app/tags/list" -H "Authorization: Bearer $unsigned")
  assert_eq "an alg:none token is refused" 401 "$status"

  status=$(api POST /users "$ALICE:$ALICE_PASSWORD" '{"username":"mallory'"$RUN"'","password":"Mallory-pw-1"}')
  assert_eq "a non-admin cannot create users" 403 "$status"
  status=$(api GET /users "$ALICE:$ALICE_PASSWORD")
  assert_eq "a non-admin cannot list users" 403 "$status"
  status=$(api DELETE "/projects/$PRIVATE" "$GUEST:$GUEST_PASSWORD")
  assert_eq "a guest cannot delete the project" 403 "$status"
}

# jwt_claims TOKEN: the decoded claims of a JWT (no verification: that is the registry's job).
jwt_claims() {
  python3 -c '
import base64, sys
payload = sys.argv[1].split(".")[1]
print(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode())' "$1"
}

small_image() {
  local dir=$1 label=$2
  mkdir -p "$dir"
  printf '%s %s\n' "$label" "$RUN" >"$dir/label.txt"
  head -c 65536 /dev/urandom >"$dir/data.bin"
  printf 'FROM scratch\nCOPY label.txt /label.txt\nCOPY data.bin /data.bin\n' >"$dir/Dockerfile"
}

# sharing_image DIR FROM LABEL: an image whose data layer is FROM's (small_image) and whose
# label layer is its own.
sharing_image() {
  local dir=$1 from=$2 label=$3
  mkdir -p "$dir"
  cp "$from/data.bin" "$dir/data.bin"
  printf '%s %s\n' "$label" "$RUN" >"$dir/label.txt"
  printf 'FROM scratch\nCOPY label.txt /label.txt\nCOPY data.bin /data.bin\n' >"$dir/Dockerfile"
}

scenario_docker() {
  local dir=$E2E_TMP/docker private=$REGISTRY/$PRIVATE/app public=$REGISTRY/$PUBLIC/app id
  small_image "$dir" docker
  run docker build -q -t "$private:v1" "$dir"
  run docker tag "$private:v1" "$public:v1"
  id=$(docker image inspect -f '{{.Id}}' "$private:v1")

  assert_not "docker push without login is refused" docker push "$private:v1"
  assert_not "docker login with a wrong password fails" \
    docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"not-$ALICE_PASSWORD"
  assert_cmd "docker login as a user" docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"$ALICE_PASSWORD"
  assert_cmd "docker push to a private project" docker push "$private:v1"
  assert_cmd "docker push to a public project" docker push "$public:v1"
  run docker logout "$REGISTRY"
  run docker rmi "$private:v1" "$public:v1"

  run_to "$dir/refused.log" docker pull "$private:v1" || true
  assert_not "docker pull of the private image after logout is refused" docker image inspect "$private:v1"
  assert_match "docker says why" 'denied|unauthorized|authentication required' "$(cat "$dir/refused.log")"
  assert_cmd "anonymous docker pull from the public project" docker pull "$public:v1"
  assert_eq "the anonymous pull is the pushed image" "$id" "$(docker image inspect -f '{{.Id}}' "$public:v1")"
  run docker rmi "$public:v1"
  audited_push_pull_delete
}

# After the docker push (alice) and pull (anonymous) of $PUBLIC/app:v1 and its deletion (the
# admin), the audit log holds exactly those operations on it, each under who did it, and the
# refused docker login without its password.
audited_push_pull_delete() {
  local token digest status entries tries=0
  token=$(token "admin:$ADMIN_PASSWORD" "repository:$PUBLIC/app:pull,delete")
  # A HEAD (curl --head), which is not a pull.
  curl -sS --head --max-time 60 -o /dev/null -D "$E2E_TMP/headers" -H "Authorization: Bearer $token" \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
    -H "Accept: $MT_OCI_MANIFEST" "$BASE/v2/$PUBLIC/app/manifests/v1"
  digest=$(last_header docker-content-digest)
  status=$(http DELETE "$BASE/v2/$PUBLIC/app/manifests/$digest" -H "Authorization: Bearer $token")
  assert_eq "the admin deletes the pushed image (202)" 202 "$status"
  # Recorded in the background: wait for the deletion to show.
  while :; do
    api GET "/audit-logs?q=resource%3D~$PUBLIC/app&sort=op_time&page_size=100" "admin:$ADMIN_PASSWORD" >/dev/null
    entries=$(jq -c '[.[] | [.operation, .username, .resource]]' "$E2E_TMP/body")
    [[ $entries != *'"delete"'* && $((tries++)) -lt 50 ]] || break
    sleep 0.1
  done
  assert_eq "the audit log: alice's push first, the admin's delete last" \
    "[[\"create\",\"$ALICE\",\"$PUBLIC/app:v1\"],[\"delete\",\"admin\",\"$PUBLIC/app@$digest\"]]" \
    "$(jq -c '[first, last]' <<<"$entries")"
  assert_eq "... between them only pulls, every one anonymous (the HEAD is none)" \
    '[["pull","anonymous"]]' "$(jq -c '.[1:-1] | map(.[0:2]) | unique' <<<"$entries")"
  api GET "/audit-logs?q=operation%3Dlogin_failed,resource%3D$ALICE" "admin:$ADMIN_PASSWORD" >/dev/null
  assert_eq "the refused docker login is audited" true "$(jq 'length >= 1' "$E2E_TMP/body")"
  assert_not "... without the password" grep -q "not-$ALICE_PASSWORD" "$E2E_TMP/body"
}

scenario_podman() {
  local dir=$E2E_TMP/podman-img repo=$REGISTRY/$PRIVATE/podman digest
  export REGISTRY_AUTH_FILE=$E2E_TMP/auth.json
  small_image "$dir" podman
  run pm build -q --format oci -t "$repo:v1" "$dir"
  assert_not "podman push without login is refused" pm push --tls-verify=false "$repo:v1"
  assert_cmd "podman login as a user" pm login --tls-verify=false -u "$ALICE" -p "$ALICE_PASSWORD" "$REGISTRY"
  run pm push --tls-verify=false --digestfile "$dir/digest" "$repo:v1"
  digest=$(cat "$dir/digest")
  assert_match "podman push to a private project" '^sha256:[0-9a-f]{64}$' "$digest"
  run pm logout "$REGISTRY"
  assert_not "skopeo without credentials cannot inspect the private image" \
    sk inspect --tls-verify=false "docker://$repo:v1"
  assert_eq "skopeo --creds inspects it" "$digest" \
    "$(sk inspect --tls-verify=false --creds "$ALICE:$ALICE_PASSWORD" --format '{{.Digest}}' "docker://$repo:v1")"
  assert_not "skopeo --creds of a guest cannot push" \
    sk copy --dest-tls-verify=false --dest-creds "$GUEST:$GUEST_PASSWORD" \
    "containers-storage:[vfs@$E2E_PODMAN_DIR/root+$E2E_PODMAN_DIR/run]$repo:v1" "docker://$repo:guest"
  unset REGISTRY_AUTH_FILE
}

scenario_robot() {
  local dir=$E2E_TMP/robot status name secret repo=$REGISTRY/$PRIVATE/robot-pushed
  status=$(api POST /robots "admin:$ADMIN_PASSWORD" "{\"name\":\"ci\",\"description\":\"pushes from CI\",\"duration\":-1,\"level\":\"project\",\"permissions\":[{\"kind\":\"project\",\"namespace\":\"$PRIVATE\",\"access\":[{\"resource\":\"repository\",\"action\":\"pull\"},{\"resource\":\"repository\",\"action\":\"push\"}]}]}")
  assert_eq "an administrator creates a robot account" 201 "$status"
  name=$(jq -r .name "$E2E_TMP/body")
  secret=$(jq -r .secret "$E2E_TMP/body")
  assert_eq "the robot is named robot\$<project>+<name>" "robot\$$PRIVATE+ci" "$name"
  status=$(api GET "/robots/$(jq -rn --arg n "$name" '$n|@uri')" "admin:$ADMIN_PASSWORD")
  assert_eq "the robot can be read back" 200 "$status"
  assert_eq "its secret is never shown again" null "$(jq -r .secret "$E2E_TMP/body")"

  # The script a CI job would run: log in with the robot's secret from stdin, build, push.
  small_image "$dir" robot
  cat >"$dir/push.sh" <<'EOF'
#!/usr/bin/env bash
set -euo pipefail
printf '%s' "$ROBOT_SECRET" | docker login -u "$ROBOT_NAME" --password-stdin "$REGISTRY"
docker build -q -t "$IMAGE" "$BUILD_DIR"
docker push "$IMAGE"
docker logout "$REGISTRY"
EOF
  chmod +x "$dir/push.sh"
  assert_cmd "a robot account pushes from a script" \
    env ROBOT_NAME="$name" ROBOT_SECRET="$secret" REGISTRY="$REGISTRY" IMAGE="$repo:v1" BUILD_DIR="$dir" "$dir/push.sh"
  assert_cmd "the robot's image is in the registry" \
    sk inspect --tls-verify=false --creds "$ALICE:$ALICE_PASSWORD" "docker://$repo:v1"
  status=$(http GET "$BASE/service/token?service=berth&scope=repository:$PUBLIC/app:pull,push" -u "$name:$secret")
  assert_eq "the robot gets a token" 200 "$status"
  assert_eq "but no push outside its project" '["pull"]' \
    "$(jwt_claims "$(jq -r .token "$E2E_TMP/body")" | jq -c '[.access[].actions[]]')"

  status=$(api PUT "/robots/$(jq -rn --arg n "$name" '$n|@uri')" "admin:$ADMIN_PASSWORD" '{"disable":true}')
  assert_eq "the robot is disabled" 200 "$status"
  status=$(http GET "$BASE/service/token?service=berth&scope=repository:$PRIVATE/app:pull" -u "$name:$secret")
  assert_eq "a disabled robot gets no token" 401 "$status"
  assert_not "a disabled robot cannot docker login" \
    docker login -u "$name" --password-stdin "$REGISTRY" <<<"$secret"
}

# The size the API must give an image: its manifest, config and each distinct layer once.
image_size() {
  jq -r '[.config.size] + ([.layers[] | {digest, size}] | unique | map(.size)) | add' "$1" |
    awk -v manifest="$(size_of "$1")" '{ print $1 + manifest }'
}

# docker pushes two tags of one image and a second image sharing its base layer, skopeo
# copies one into a nested repository; the API then lists, sizes, tags and deletes them, each
# change allowed only to the roles Harbor allows it.
scenario_artifacts() {
  local dir=$E2E_TMP/artifacts shop=$REGISTRY/$PRIVATE/shop digest1 digest2 status alice admin guest
  alice="$ALICE:$ALICE_PASSWORD" admin="admin:$ADMIN_PASSWORD" guest="$GUEST:$GUEST_PASSWORD"
  small_image "$dir/one" one
  run docker build -q -t "$shop:v1" "$dir/one"
  sharing_image "$dir/two" "$dir/one" two
  run docker build -q -t "$shop:v2" "$dir/two"
  run docker tag "$shop:v1" "$shop:also"
  run docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"$ALICE_PASSWORD"
  for tag in v1 also v2; do run docker push -q "$shop:$tag"; done
  run docker logout "$REGISTRY"
  run sk copy --src-tls-verify=false --dest-tls-verify=false --src-creds "$alice" --dest-creds "$alice" \
    --format oci "docker://$shop:v1" "docker://$REGISTRY/$PRIVATE/nested/tool:v1"
  sk inspect --tls-verify=false --creds "$alice" --raw "docker://$shop:v1" >"$dir/v1.json"
  sk inspect --tls-verify=false --creds "$alice" --raw "docker://$shop:v2" >"$dir/v2.json"
  digest1=sha256:$(sha256sum "$dir/v1.json" | awk '{print $1}')
  digest2=sha256:$(sha256sum "$dir/v2.json" | awk '{print $1}')

  status=$(api GET "/projects/$PRIVATE/repositories?q=name%3D~shop&sort=name" "$guest")
  assert_eq "a guest lists the project's repositories" 200 "$status"
  assert_eq "... filtered by name, with their artifact counts" \
    "[[\"$PRIVATE/shop\",2]]" "$(jq -c '[.[] | [.name, .artifact_count]]' "$E2E_TMP/body")"
  status=$(api GET "/projects/$PRIVATE/repositories/nested%252Ftool" "$guest")
  assert_eq "a nested repository, its name encoded twice" "200 $PRIVATE/nested/tool" "$status $(jq -r .name "$E2E_TMP/body")"
  status=$(http GET "$BASE/api/v2.0/projects/$PRIVATE/repositories")
  assert_eq "anonymous callers do not see a private project's repositories" 404 "$status"

  status=$(api GET "/projects/$PRIVATE/repositories/shop/artifacts?page_size=1" "$guest")
  assert_eq "artifacts page by page" "200 1 2" "$status $(jq length "$E2E_TMP/body") $(last_header x-total-count)"
  status=$(api GET "/projects/$PRIVATE/repositories/shop/artifacts/v1" "$guest")
  assert_eq "an artifact by tag" "200 $digest1" "$status $(jq -r .digest "$E2E_TMP/body")"
  assert_eq "... with both its tags" '["also","v1"]' "$(jq -c '[.tags[].name] | sort' "$E2E_TMP/body")"
  assert_eq "... its size: manifest, config and each distinct layer once" \
    "$(image_size "$dir/v1.json")" "$(jq .size "$E2E_TMP/body")"
  assert_eq "... and its type" IMAGE "$(jq -r .type "$E2E_TMP/body")"
  status=$(api GET "/projects/$PRIVATE/repositories/shop/artifacts?q=tags%3Dv2" "$guest")
  assert_eq "artifacts filtered by tag" "$digest2" "$(jq -r '.[].digest' "$E2E_TMP/body")"

  status=$(api POST "/projects/$PRIVATE/repositories/shop/artifacts/$digest1/tags" "$guest" '{"name":"stable"}')
  assert_eq "a guest may not tag" 403 "$status"
  status=$(api POST "/projects/$PRIVATE/repositories/shop/artifacts/$digest1/tags" "$alice" '{"name":"stable"}')
  assert_eq "a developer tags an artifact" 201 "$status"
  assert_eq "... and the new tag pulls it" "$digest1" \
    "$(sk inspect --tls-verify=false --creds "$alice" --format '{{.Digest}}' "docker://$shop:stable")"
  status=$(api POST "/projects/$PRIVATE/repositories/shop/artifacts/v2/tags" "$alice" '{"name":"stable"}')
  assert_eq "a tag that exists is a conflict" 409 "$status"
  status=$(api DELETE "/projects/$PRIVATE/repositories/shop/artifacts/v1/tags/stable" "$alice")
  assert_eq "a developer may not delete a tag" 403 "$status"
  status=$(api DELETE "/projects/$PRIVATE/repositories/shop/artifacts/v1/tags/stable" "$admin")
  assert_eq "an admin deletes the tag" 200 "$status"
  status=$(api GET "/projects/$PRIVATE/repositories/shop/artifacts/$digest1/tags" "$guest")
  assert_eq "... the artifact keeps its other tags" '["also","v1"]' "$(jq -c '[.[].name]' "$E2E_TMP/body")"

  status=$(api DELETE "/projects/$PRIVATE/repositories/shop/artifacts/v2" "$alice")
  assert_eq "a developer may not delete an artifact" 403 "$status"
  status=$(api DELETE "/projects/$PRIVATE/repositories/shop/artifacts/v2" "$admin")
  assert_eq "an admin deletes an artifact" 200 "$status"
  assert_not "... which no longer pulls" \
    sk inspect --tls-verify=false --creds "$alice" "docker://$shop:v2"
  run docker login -u "$GUEST" --password-stdin "$REGISTRY" <<<"$GUEST_PASSWORD"
  run docker rmi "$shop:v1" "$shop:also"
  assert_cmd "... while the other image still pulls" docker pull -q "$shop:v1"
  run docker logout "$REGISTRY"

  status=$(api DELETE "/projects/$PRIVATE/repositories/nested%252Ftool" "$guest")
  assert_eq "a guest may not delete a repository" 403 "$status"
  status=$(api DELETE "/projects/$PRIVATE/repositories/nested%252Ftool" "$admin")
  assert_eq "an admin deletes a repository" 200 "$status"
  status=$(api GET "/projects/$PRIVATE/repositories/nested%252Ftool" "$admin")
  assert_eq "... which is gone" 404 "$status"
  assert_not "... with its images" \
    sk inspect --tls-verify=false --creds "$admin" "docker://$REGISTRY/$PRIVATE/nested/tool:v1"
  local tries=0
  # Recorded in the background: wait for the deletion to show.
  while api GET "/audit-logs?q=resource%3D~$PRIVATE/nested/tool,operation%3Ddelete" "$admin" >/dev/null &&
    [[ $(jq length "$E2E_TMP/body") == 0 && $((tries++)) -lt 50 ]]; do
    sleep 0.1
  done
  assert_eq "the repository's deletion is audited as its artifact's" \
    "[\"delete\",\"admin\"]" "$(jq -c 'map(select(.operation == "delete")) | first | [.operation, .username]' "$E2E_TMP/body")"
}

# gc_run PARAMETERS: starts a run as the admin and waits for its end; prints its id.
gc_run() {
  local status id tries=0
  status=$(api POST /system/gc/schedule "admin:$ADMIN_PASSWORD" \
    "{\"schedule\":{\"type\":\"Manual\"},\"parameters\":$1}")
  [[ $status == 201 ]] || die "starting garbage collection: $status $(body)"
  id=$(last_header location)
  id=${id##*/}
  while api GET "/system/gc/$id" "admin:$ADMIN_PASSWORD" >/dev/null &&
    [[ $(jq -r .job_status "$E2E_TMP/body") == Running && $((tries++)) -lt 300 ]]; do
    sleep 0.1
  done
  printf '%s' "$id"
}

# The blobs of the manifest in FILE (config and layers), one per line.
blobs_of() { jq -r '.config.digest, .layers[].digest' "$1" | sort -u; }

# docker pushes two images sharing a layer; the admin deletes one. A dry run and then a
# real run of garbage collection report the same, the deleted image's own blobs are gone,
# and the other image still pulls. Only system admins run it.
scenario_gc() {
  local dir=$E2E_TMP/gc repo=$REGISTRY/$PRIVATE/gc status dry real token digest gone=0 stored freed
  small_image "$dir/keep" keep
  sharing_image "$dir/drop" "$dir/keep" drop
  run docker build -q -t "$repo:keep" "$dir/keep"
  run docker build -q -t "$repo:drop" "$dir/drop"
  run docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"$ALICE_PASSWORD"
  run docker push -q "$repo:keep"
  run docker push -q "$repo:drop"
  sk inspect --tls-verify=false --creds "$ALICE:$ALICE_PASSWORD" --raw "docker://$repo:keep" >"$dir/keep.json"
  sk inspect --tls-verify=false --creds "$ALICE:$ALICE_PASSWORD" --raw "docker://$repo:drop" >"$dir/drop.json"
  comm -13 <(blobs_of "$dir/keep.json") <(blobs_of "$dir/drop.json") >"$dir/own"
  assert_eq "the image to delete has a config and a layer of its own" 2 "$(wc -l <"$dir/own")"
  status=$(api DELETE "/projects/$PRIVATE/repositories/gc/artifacts/drop" "admin:$ADMIN_PASSWORD")
  assert_eq "the admin deletes it" 200 "$status"
  sleep 1.5

  status=$(api POST /system/gc/schedule "$ALICE:$ALICE_PASSWORD" \
    '{"schedule":{"type":"Manual"},"parameters":{"dry_run":true}}')
  assert_eq "only system admins run garbage collection" 403 "$status"
  dry=$(gc_run '{"dry_run":true}')
  assert_eq "a dry run succeeds" Success "$(jq -r .job_status "$E2E_TMP/body")"
  dry=$(jq -r '.job_parameters | fromjson | [.purged_blobs, .freed_space] | @tsv' "$E2E_TMP/body")
  api GET /statistics "admin:$ADMIN_PASSWORD" >/dev/null
  stored=$(jq -r .total_storage_consumption "$E2E_TMP/body")
  real=$(gc_run '{"dry_run":false}')
  assert_eq "a real run succeeds" Success "$(jq -r .job_status "$E2E_TMP/body")"
  assert_eq "... and frees what the dry run said it would" "$dry" \
    "$(jq -r '.job_parameters | fromjson | [.purged_blobs, .freed_space] | @tsv' "$E2E_TMP/body")"
  freed=$(jq -r '.job_parameters | fromjson | .freed_space' "$E2E_TMP/body")
  api GET /statistics "admin:$ADMIN_PASSWORD" >/dev/null
  assert_eq "the registry's total storage shrinks by what it freed" "$((stored - freed))" \
    "$(jq -r .total_storage_consumption "$E2E_TMP/body")"
  status=$(api GET "/system/gc/$real/log" "admin:$ADMIN_PASSWORD")
  while read -r digest; do
    grep -q "blob $digest .*deleted" "$E2E_TMP/body" || gone=1
  done <"$dir/own"
  assert_eq "its log names the deleted image's own blobs" "200 0" "$status $gone"
  token=$(token "admin:$ADMIN_PASSWORD" "repository:$PRIVATE/gc:pull")
  status=$(curl -sS --head --max-time 60 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" \
    "$BASE/v2/$PRIVATE/gc/blobs/$(head -1 "$dir/own")")
  assert_eq "... which the registry no longer has" 404 "$status"
  run docker rmi "$repo:keep" "$repo:drop"
  assert_cmd "the image that shared its layer still pulls" docker pull -q "$repo:keep"
  run docker logout "$REGISTRY"

  status=$(api GET "/system/gc?page_size=1" "admin:$ADMIN_PASSWORD")
  assert_eq "runs are listed newest first" "200 $real" "$status $(jq -r '.[0].id' "$E2E_TMP/body")"
  status=$(api POST /system/gc/schedule "admin:$ADMIN_PASSWORD" \
    '{"schedule":{"type":"Daily"},"parameters":{"delete_untagged":true}}')
  api GET /system/gc/schedule "admin:$ADMIN_PASSWORD" >/dev/null
  assert_eq "a daily schedule is kept" "200 Daily 0 0 0 * * * true" \
    "$status $(jq -r '[.schedule.type, .schedule.cron, .parameters.delete_untagged] | join(" ")' "$E2E_TMP/body")"
  status=$(api PUT /system/gc/schedule "admin:$ADMIN_PASSWORD" '{"schedule":{"type":"None"}}')
  assert_eq "and removed" 200 "$status"
}

# usage_of FILE...: the bytes the manifests in FILEs hold, each distinct digest once: the
# manifests themselves, their configs and layers.
usage_of() {
  local file
  for file in "$@"; do
    jq -c --arg digest "sha256:$(sha256sum "$file" | awk '{print $1}')" --argjson size "$(size_of "$file")" \
      '[{digest: $digest, size: $size}, {digest: .config.digest, size: .config.size}]
        + [.layers[] | {digest, size}] | .[]' "$file"
  done | jq -s 'unique_by(.digest) | map(.size) | add // 0'
}

# quota_used PROJECT: the project's usage, from its summary.
quota_used() {
  api GET "/projects/$1/summary" "admin:$ADMIN_PASSWORD" >/dev/null
  jq -r .quota.used.storage "$E2E_TMP/body"
}

# The manifests of every tag of REPO (HOST/PROJECT/NAME) saved under DIR, one file each.
save_manifests() {
  local repo=$1 dir=$2 tag
  mkdir -p "$dir"
  for tag in $(sk list-tags --tls-verify=false --creds "admin:$ADMIN_PASSWORD" "docker://$repo" | jq -r '.Tags[]'); do
    sk inspect --tls-verify=false --creds "admin:$ADMIN_PASSWORD" --raw "docker://$repo:$tag" >"$dir/$tag.json"
  done
}

# A project with a storage limit: docker fills it, the push past it is refused with 403
# DENIED naming usage and limit and leaves nothing stored, while an image sharing its layers
# still fits; 20 concurrent pushes never take it past its limit; after deletions and garbage
# collection the usage is exactly what the remaining images hold.
scenario_quota() {
  local dir=$E2E_TMP/quota project=quota$RUN admin="admin:$ADMIN_PASSWORD" status used limit i stored
  local repo=$REGISTRY/quota$RUN/app pids=() pushed=0
  status=$(api POST /projects "$ALICE:$ALICE_PASSWORD" "{\"project_name\":\"mine$RUN\",\"storage_limit\":1048576}")
  assert_eq "only system admins set a storage limit" 403 "$status"
  status=$(api POST /projects "$admin" "{\"project_name\":\"$project\",\"storage_limit\":1048576}")
  assert_eq "an admin creates a project with a 1 MiB limit" 201 "$status"
  status=$(api POST "/projects/$project/members" "$admin" "{\"role_id\":2,\"member_user\":{\"username\":\"$ALICE\"}}")
  [[ $status == 201 ]] || die "adding $ALICE to $project: $status $(body)"
  status=$(api GET "/projects/$project/summary" "$admin")
  assert_eq "its summary shows the limit and nothing used" "200 1048576 0" \
    "$status $(jq -r '[.quota.hard.storage, .quota.used.storage] | join(" ")' "$E2E_TMP/body")"

  small_image "$dir/base" base
  sharing_image "$dir/same" "$dir/base" same
  small_image "$dir/big" big
  for image in base same big; do run docker build -q -t "$repo:$image" "$dir/$image"; done
  run docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"$ALICE_PASSWORD"
  run docker push -q "$repo:base"
  sk inspect --tls-verify=false --creds "$admin" --raw "docker://$repo:base" >"$dir/base.json"
  used=$(quota_used "$project")
  assert_eq "usage is the image's manifest, config and layers" "$(usage_of "$dir/base.json")" "$used"

  limit=$((used + 8192))
  status=$(api PUT "/projects/$project" "$ALICE:$ALICE_PASSWORD" "{\"storage_limit\":$limit}")
  assert_eq "a developer may not change the limit" 403 "$status"
  status=$(api PUT "/projects/$project" "$admin" "{\"storage_limit\":$limit}")
  assert_eq "the admin lowers it to the usage plus 8 KiB" 200 "$status"
  assert_cmd "an image sharing the stored 64 KiB layer fits" docker push -q "$repo:same"
  sk inspect --tls-verify=false --creds "$admin" --raw "docker://$repo:same" >"$dir/same.json"
  used=$(quota_used "$project")
  assert_eq "... and adds only what it does not share" "$(usage_of "$dir/base.json" "$dir/same.json")" "$used"

  # No room left: every blob of a new image is refused.
  limit=$used
  status=$(api PUT "/projects/$project" "$admin" "{\"storage_limit\":$limit}")
  assert_eq "the admin lowers the limit to the usage" 200 "$status"
  api GET /statistics "$admin" >/dev/null
  stored=$(jq -r .total_storage_consumption "$E2E_TMP/body")
  docker push "$repo:big" >"$dir/refused.log" 2>&1 && fail "the push past the limit is refused" "it succeeded"
  assert_contains "docker is told the quota is exceeded, with the usage" \
    "$(cat "$dir/refused.log")" "quota exceeded: project $project uses"
  assert_contains "... and the limit" "$(cat "$dir/refused.log")" "($limit bytes) storage limit"
  assert_eq "the refused push used nothing" "$used" "$(quota_used "$project")"
  assert_not "... stored no manifest" sk inspect --tls-verify=false --creds "$admin" "docker://$repo:big"
  api GET /statistics "$admin" >/dev/null
  assert_eq "... and no blob: the registry stores as many bytes as before" "$stored" \
    "$(jq -r .total_storage_consumption "$E2E_TMP/body")"
  local tries=0
  while api GET "/audit-logs?q=operation%3Dquota_exceed,resource%3D~$project/" "$admin" >/dev/null &&
    [[ $(jq length "$E2E_TMP/body") == 0 && $((tries++)) -lt 50 ]]; do
    sleep 0.1
  done
  assert_eq "the refusal is audited" "quota_exceed $ALICE" \
    "$(jq -r 'first | "\(.operation) \(.username)"' "$E2E_TMP/body")"

  # 20 images of 4 KiB each pushed at once, with room for about 5.
  used=$(quota_used "$project")
  limit=$((used + 5 * 5500))
  status=$(api PUT "/projects/$project" "$admin" "{\"storage_limit\":$limit}")
  [[ $status == 200 ]] || die "setting the limit: $status $(body)"
  for i in $(seq 1 20); do
    mkdir -p "$dir/race$i"
    printf 'race %s %s\n' "$i" "$RUN" >"$dir/race$i/label.txt"
    head -c 4096 /dev/urandom >"$dir/race$i/data.bin"
    printf 'FROM scratch\nCOPY label.txt /label.txt\nCOPY data.bin /data.bin\n' >"$dir/race$i/Dockerfile"
    run docker build -q -t "$REGISTRY/$project/race:r$i" "$dir/race$i"
  done
  for i in $(seq 1 20); do
    docker push -q "$REGISTRY/$project/race:r$i" >"$dir/race$i.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then pushed=$((pushed + 1)); fi
  done
  used=$(quota_used "$project")
  assert_eq "20 concurrent pushes end within the limit" yes "$( ((used <= limit)) && echo yes || echo "no: $used > $limit")"
  save_manifests "$REGISTRY/$project/race" "$dir/race"
  assert_eq "... the pushes that succeeded are the images stored" "$pushed" "$(find "$dir/race" -name '*.json' | wc -l)"
  assert_eq "... and the usage is exactly what is stored" \
    "$(usage_of "$dir/base.json" "$dir/same.json" "$dir"/race/*.json)" "$used"
  log_info "$pushed of 20 concurrent pushes fit"
  run docker logout "$REGISTRY"

  status=$(api DELETE "/projects/$project/repositories/app/artifacts/base" "$admin")
  assert_eq "the admin deletes an image" 200 "$status"
  local victim
  victim=$(find "$dir/race" -name '*.json' | sort | head -1)
  status=$(api DELETE "/projects/$project/repositories/race/artifacts/$(basename "$victim" .json)" "$admin")
  assert_eq "... and another" 200 "$status"
  rm "$victim"
  assert_eq "usage after deletions is what the remaining images hold" \
    "$(usage_of "$dir/same.json" "$dir"/race/*.json)" "$(quota_used "$project")"
  sleep 1.5
  gc_run '{"dry_run":false}' >/dev/null
  assert_eq "garbage collection runs" Success "$(jq -r .job_status "$E2E_TMP/body")"
  assert_eq "... and the usage stays what the remaining images hold" \
    "$(usage_of "$dir/same.json" "$dir"/race/*.json)" "$(quota_used "$project")"

  used=$(quota_used "$project")
  status=$(api GET "/quotas?reference_id=$project" "$admin")
  assert_eq "the admin lists quotas" "200 $project $limit $used" \
    "$status $(jq -r '.[0] | [.ref.name, .hard.storage, .used.storage] | join(" ")' "$E2E_TMP/body")"
  status=$(api GET /quotas "$ALICE:$ALICE_PASSWORD")
  assert_eq "... which a developer may not" 403 "$status"
}

# immutable_rule DISABLED: a rule in Harbor's shape making tags v* immutable, but not *-dev,
# in every repository.
immutable_rule() {
  printf '{"disabled":%s,"action":"immutable","template":"immutable_template","params":{},"tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"v*"},{"kind":"doublestar","decoration":"excludes","pattern":"*-dev"}],"scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"**"}]}}' "$1"
}

# docker pushes v1 and v1-dev; a rule makes v* but not *-dev immutable. docker and skopeo
# cannot move v1, which still pulls as first pushed; v1-dev moves; neither the v1 tag nor its
# artifact can be deleted, through the API or /v2; once the rule is disabled, v1 moves.
scenario_immutable() {
  local dir=$E2E_TMP/immutable repo=$REGISTRY/$PRIVATE/frozen status old id rule token new
  local admin="admin:$ADMIN_PASSWORD" alice="$ALICE:$ALICE_PASSWORD"
  local artifacts=/projects/$PRIVATE/repositories/frozen/artifacts
  small_image "$dir/one" one
  small_image "$dir/two" two
  run docker build -q -t "$repo:v1" "$dir/one"
  run docker tag "$repo:v1" "$repo:v1-dev"
  run docker build -q -t "$repo:two" "$dir/two"
  id=$(docker image inspect -f '{{.Id}}' "$repo:v1")
  run docker login -u "$ALICE" --password-stdin "$REGISTRY" <<<"$ALICE_PASSWORD"
  for tag in v1 v1-dev two; do run docker push -q "$repo:$tag"; done
  old=$(sk inspect --tls-verify=false --creds "$alice" --format '{{.Digest}}' "docker://$repo:v1")

  status=$(api POST "/projects/$PRIVATE/immutabletagrules" "$alice" "$(immutable_rule false)")
  assert_eq "a developer may not make immutability rules" 403 "$status"
  status=$(api POST "/projects/$PRIVATE/immutabletagrules" "$admin" \
    "$(immutable_rule false | sed 's/"kind":"doublestar","decoration":"matches"/"kind":"label","decoration":"with"/')")
  assert_eq "a selector of an unknown kind is refused" "400 true" \
    "$status $(jq '.errors[0].message | contains("\"label\"")' "$E2E_TMP/body")"
  status=$(api POST "/projects/$PRIVATE/immutabletagrules" "$admin" "$(immutable_rule false)")
  assert_eq "an admin makes tags v*, but not *-dev, immutable" 201 "$status"
  rule=$(last_header location)
  rule=${rule#/api/v2.0}
  status=$(api GET "/projects/$PRIVATE/immutabletagrules" "$admin")
  assert_eq "the rule is listed in Harbor's shape" "200 1 v*,*-dev **" \
    "$status $(last_header x-total-count) $(jq -r '.[0] | [([.tag_selectors[].pattern] | join(",")), .scope_selectors.repository[0].pattern] | join(" ")' "$E2E_TMP/body")"

  run docker tag "$repo:two" "$repo:v1"
  run_to "$dir/push.log" docker push "$repo:v1" || true
  assert_match "docker push of another image as v1 is refused, and docker says why" \
    'configured as immutable' "$(cat "$dir/push.log")"
  run_to "$dir/copy.log" sk copy --src-tls-verify=false --dest-tls-verify=false --src-creds "$alice" \
    --dest-creds "$alice" "docker://$repo:two" "docker://$repo:v1" || true
  assert_match "skopeo copy onto v1 is refused too, and says why" \
    'configured as immutable' "$(cat "$dir/copy.log")"
  assert_eq "v1 still names the first image" "$old" \
    "$(sk inspect --tls-verify=false --creds "$alice" --format '{{.Digest}}' "docker://$repo:v1")"
  run docker rmi "$repo:v1"
  assert_cmd "docker pulls v1" docker pull -q "$repo:v1"
  assert_eq "... the image first pushed" "$id" "$(docker image inspect -f '{{.Id}}' "$repo:v1")"
  assert_cmd "docker pushes the same image as v1 again" docker push -q "$repo:v1"
  run docker tag "$repo:two" "$repo:v1-dev"
  assert_cmd "v1-dev, which the rule excludes, is overwritten" docker push -q "$repo:v1-dev"
  assert_ne "... and names the other image now" "$old" \
    "$(sk inspect --tls-verify=false --creds "$alice" --format '{{.Digest}}' "docker://$repo:v1-dev")"
  status=$(api POST "$artifacts/$old/tags" "$alice" '{"name":"v1.0"}')
  assert_eq "a new tag the rule selects is added through the API" 201 "$status"

  status=$(api DELETE "$artifacts/v1/tags/v1" "$admin")
  assert_eq "the API does not delete the v1 tag" "412 PRECONDITION" "$status $(jq -r '.errors[0].code' "$E2E_TMP/body")"
  status=$(api DELETE "$artifacts/$old" "$admin")
  assert_eq "... nor the artifact v1 is on" 412 "$status"
  status=$(api DELETE "/projects/$PRIVATE/repositories/frozen" "$admin")
  assert_eq "... nor its repository" 412 "$status"
  token=$(token "$admin" "repository:$PRIVATE/frozen:pull,delete")
  status=$(http DELETE "$BASE/v2/$PRIVATE/frozen/manifests/v1" -H "Authorization: Bearer $token")
  assert_eq "DELETE /v2/.../manifests/v1 is refused" 412 "$status"
  status=$(http DELETE "$BASE/v2/$PRIVATE/frozen/manifests/$old" -H "Authorization: Bearer $token")
  assert_eq "... and by its digest" 412 "$status"
  assert_match "... naming the tag and the rule" 'frozen:v1 .*rule 1 .*"v\*"' \
    "$(jq -r '.errors[0].message' "$E2E_TMP/body")"

  status=$(api PUT "$rule" "$admin" "$(immutable_rule true)")
  assert_eq "the admin disables the rule" 200 "$status"
  run docker tag "$repo:two" "$repo:v1"
  assert_cmd "now docker moves v1" docker push -q "$repo:v1"
  new=$(sk inspect --tls-verify=false --creds "$alice" --format '{{.Digest}}' "docker://$repo:v1")
  assert_ne "... to the other image" "$old" "$new"
  status=$(api DELETE "$artifacts/v1/tags/v1" "$admin")
  assert_eq "... and the API deletes the tag" 200 "$status"
  status=$(api DELETE "$rule" "$admin")
  assert_eq "the admin deletes the rule" 200 "$status"
  run docker logout "$REGISTRY"
}

# retention_run POLICY DRY_RUN CREDENTIALS: starts a run of the policy and waits for its end;
# prints the execution's id.
retention_run() {
  local policy=$1 dry_run=$2 credentials=$3 status id tries=0
  status=$(api POST "/retentions/$policy/executions" "$credentials" "{\"dry_run\":$dry_run}")
  [[ $status == 201 ]] || die "starting retention policy $policy: $status $(body)"
  id=$(last_header location)
  id=${id##*/}
  while api GET "/retentions/$policy/executions" "$credentials" >/dev/null &&
    [[ $(jq -r ".[] | select(.id == $id) | .status" "$E2E_TMP/body") == Running && $((tries++)) -lt 300 ]]; do
    sleep 0.1
  done
  printf '%s' "$id"
}

# A developer keeps the two newest v* tags and every keep-* tag of a repository of five
# artifacts pushed one after another: a dry run reports the two to delete and deletes
# nothing, the real run deletes exactly them. Guests may not touch the policy.
scenario_retention() {
  local repo=$PRIVATE/ret token status tag config size policy dry real tries=0 developer guest admin
  developer="$ALICE:$ALICE_PASSWORD" guest="$GUEST:$GUEST_PASSWORD" admin="admin:$ADMIN_PASSWORD"
  token=$(token "$developer" "repository:$repo:pull,push")
  for tag in v1 v2 keep-me v3 v4; do
    config=$(make_blob "{\"run\":\"$RUN\",\"tag\":\"$tag\"}")
    size=$(stat -c %s "$E2E_TMP/blob")
    push_blob "$repo" "$token" "$config" >/dev/null
    printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' \
      "$MT_OCI_MANIFEST" "$config" "$size" >"$E2E_TMP/manifest"
    status=$(http PUT "$BASE/v2/$repo/manifests/$tag" -H "Authorization: Bearer $token" \
      -H "Content-Type: $MT_OCI_MANIFEST" --data-binary "@$E2E_TMP/manifest")
    [[ $status == 201 ]] || die "pushing $repo:$tag: $status $(body)"
  done
  # Push times are counted in the background: wait until all five are.
  while api GET "/projects/$PRIVATE/repositories/ret/artifacts" "$developer" >/dev/null &&
    [[ $(jq '[.[] | select(.push_time != null)] | length' "$E2E_TMP/body") != 5 && $((tries++)) -lt 100 ]]; do
    sleep 0.1
  done

  # The rules cover the repository ret alone: the other scenarios' repositories share the
  # project and stay as they are.
  local rules='[{"disabled":false,"action":"retain","template":"latestPushedK","params":{"latestPushedK":2},
    "tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"v*","extras":"{\"untagged\":false}"}],
    "scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"ret"}]}},
   {"disabled":false,"action":"retain","template":"always","params":{},
    "tag_selectors":[{"kind":"doublestar","decoration":"matches","pattern":"keep-*"}],
    "scope_selectors":{"repository":[{"kind":"doublestar","decoration":"repoMatches","pattern":"ret"}]}}]'
  local body="{\"algorithm\":\"or\",\"rules\":$rules,\"trigger\":{\"kind\":\"Schedule\",\"settings\":{\"cron\":\"\"}},\"scope\":{\"level\":\"project\",\"ref\":\"$PRIVATE\"}}"
  status=$(api GET /retentions/metadatas "$guest")
  assert_eq "the rule templates are Harbor's" \
    "200 latestPushedK,latestPulledN,nDaysSinceLastPush,nDaysSinceLastPull,always" \
    "$status $(jq -r '[.templates[].rule_template] | join(",")' "$E2E_TMP/body")"
  status=$(api POST /retentions "$guest" "$body")
  assert_eq "a guest may not create a retention policy" 403 "$status"
  status=$(api POST /retentions "$developer" "${body/latestPushedK\":2/latestPushedK\":\"two\"}")
  assert_eq "a policy with a bad parameter is refused" "400" "$status"
  status=$(api POST /retentions "$developer" "$body")
  assert_eq "a developer creates the project's policy" 201 "$status"
  policy=$(last_header location)
  policy=${policy##*/}
  status=$(api GET "/projects/$PRIVATE" "$developer")
  assert_eq "the project names its policy" "$policy" "$(jq -r .metadata.retention_id "$E2E_TMP/body")"
  status=$(api GET "/retentions/$policy" "$guest")
  assert_eq "a guest may not read it" 403 "$status"

  dry=$(retention_run "$policy" true "$developer")
  status=$(api GET "/retentions/$policy/executions/$dry/tasks" "$developer")
  assert_eq "a dry run makes a task for the repository" "200 $repo 5 3 Success" \
    "$status $(jq -r '.[0] | [.repository, .total, .retained, .status] | join(" ")' "$E2E_TMP/body")"
  local task
  task=$(jq -r '.[0].id' "$E2E_TMP/body")
  api GET "/retentions/$policy/executions/$dry/tasks/$task" "$developer" >/dev/null
  assert_eq "... whose log names the two it would delete" "v1 v2" \
    "$(grep 'DEL (dry run' "$E2E_TMP/body" | sed -E 's/.*\[(.*)\].*/\1/' | sort | xargs)"
  status=$(http GET "$BASE/v2/$repo/manifests/v1" -H "Authorization: Bearer $token" -H "Accept: $MT_OCI_MANIFEST")
  assert_eq "... and deletes nothing" 200 "$status"

  real=$(retention_run "$policy" false "$developer")
  status=$(api GET "/retentions/$policy/executions" "$developer")
  assert_eq "runs are listed newest first, by hand" "200 $real,$dry Success,Success false,true MANUAL" \
    "$status $(jq -r '[.[].id] | join(",")' "$E2E_TMP/body") $(jq -r '[.[].status] | join(",")' "$E2E_TMP/body") $(jq -r '[.[].dry_run] | join(",")' "$E2E_TMP/body") $(jq -r '.[0].trigger' "$E2E_TMP/body")"
  token=$(token "$developer" "repository:$repo:pull")
  http GET "$BASE/v2/$repo/tags/list" -H "Authorization: Bearer $token" >/dev/null
  assert_eq "the real run keeps exactly the rules' tags" "keep-me v3 v4" "$(jq -r '.tags | sort | join(" ")' "$E2E_TMP/body")"

  status=$(api PUT "/retentions/$policy" "$developer" "${body/\"cron\":\"\"/\"cron\":\"0 0 3 * * *\"}")
  api GET "/retentions/$policy" "$developer" >/dev/null
  assert_eq "the policy takes a daily schedule" "200 0 0 3 * * *" "$status $(jq -r .trigger.settings.cron "$E2E_TMP/body")"
  status=$(api DELETE "/retentions/$policy" "$admin")
  assert_eq "a system admin deletes it" 200 "$status"
  status=$(api GET "/retentions/$policy" "$admin")
  assert_eq "... and it is gone" 404 "$status"
}

# --- main ------------------------------------------------------------------------------------

for scenario in $SCENARIOS; do
  declare -F "scenario_$scenario" >/dev/null || die "unknown scenario: $scenario"
done
require_cmds curl jq python3 skopeo podman docker dockerd sha256sum
e2e_init
export TMPDIR=$E2E_TMP

log_step "auth against http://$REGISTRY (run $RUN, scratch $E2E_TMP)"
wait_for_http "$BASE/v2/" 30 || die "registry $REGISTRY is not answering"
setup_accounts
setup_podman
if [[ " $SCENARIOS " =~ " "(docker|robot|artifacts|gc|immutable|quota)" " ]]; then
  start_dockerd
fi

# shellcheck disable=SC2086 # one word per scenario
run_scenarios $SCENARIOS
