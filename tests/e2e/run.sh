#!/usr/bin/env bash
# End-to-end tests of an OCI distribution registry with real clients
# (docker, podman, skopeo). The registry must already be running and be
# reachable over plain HTTP on loopback.
#
# Usage: tests/e2e/run.sh HOST:PORT          e.g. tests/e2e/run.sh 127.0.0.1:5001
#
# Environment:
#   E2E_SCENARIOS  space-separated subset of: ping docker podman skopeo multiarch
#   E2E_BIG_MIB    size of the big docker layer in MiB (default 100)
#   E2E_KEEP_TMP=1 keep the scratch directory
#   E2E_USERNAME, E2E_PASSWORD
#                  log docker, podman and skopeo in first (a registry with token auth);
#                  the repositories are under e2e/, a project the account may push to
#
# Ends with the line "N passed, M failed"; exits 1 if M > 0.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGISTRY=${1:?usage: $0 HOST:PORT}
SCENARIOS=${E2E_SCENARIOS:-ping docker podman skopeo multiarch}
BIG_MIB=${E2E_BIG_MIB:-100}
RUN_ID=$(date +%s)-$$-$RANDOM # makes every run's images unique

MT_DOCKER_V2=application/vnd.docker.distribution.manifest.v2+json
MT_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_OCI_INDEX=application/vnd.oci.image.index.v1+json
MT_OCI_CONFIG=application/vnd.oci.image.config.v1+json

# --- small helpers -----------------------------------------------------------

sha256_of() { sha256sum | awk '{print "sha256:" $1}'; }

# Raw manifest as the registry serves it (skopeo sends the usual Accept list).
raw_manifest() { sk inspect --tls-verify=false --raw "docker://$1"; }

# Digest of the single image referenced by an OCI layout directory.
layout_digest() { jq -r '.manifests[0].digest' "$1/index.json"; }

# random_file FILE BYTES: BYTES of random data.
random_file() { head -c "$2" /dev/urandom >"$1"; }

# small_context DIR LABEL KIB: a FROM scratch context with two COPY layers,
# a text file naming LABEL and this run, and KIB KiB of random data.
small_context() {
  local dir=$1 label=$2 kib=$3
  mkdir -p "$dir/files"
  printf '%s run %s\n' "$label" "$RUN_ID" >"$dir/files/label.txt"
  random_file "$dir/files/blob.bin" $((kib * 1024))
  printf 'FROM scratch\nCOPY files/label.txt /label.txt\nCOPY files/blob.bin /data/blob.bin\n' \
    >"$dir/Containerfile"
}

# --- scenarios ---------------------------------------------------------------

scenario_ping() {
  local headers realm service token
  headers=$(curl -sS -D - -o /dev/null "http://$REGISTRY/v2/")
  assert_match "GET /v2/ sends Docker-Distribution-API-Version: registry/2.0" \
    '[Dd]ocker-[Dd]istribution-[Aa][Pp][Ii]-[Vv]ersion: *registry/2\.0' "$headers"
  if [[ -z ${E2E_USERNAME:-} ]]; then
    assert_match "GET /v2/ answers 200" '^HTTP/[0-9.]+ 200' "$headers"
    return
  fi
  # Token auth, as the clients do it: the challenge names the token service, which hands out
  # a bearer token for the account's Basic credentials.
  assert_match "GET /v2/ without a token answers 401" '^HTTP/[0-9.]+ 401' "$headers"
  realm=$(grep -io 'realm="[^"]*"' <<<"$headers" | cut -d'"' -f2)
  service=$(grep -io 'service="[^"]*"' <<<"$headers" | cut -d'"' -f2)
  assert_match "the challenge names a token realm" '^https?://' "$realm"
  token=$(curl -sS -u "$E2E_USERNAME:$E2E_PASSWORD" "$realm?service=$service" | jq -r .token)
  headers=$(curl -sS -D - -o /dev/null -H "Authorization: Bearer $token" "http://$REGISTRY/v2/")
  assert_match "GET /v2/ with the account's token answers 200" '^HTTP/[0-9.]+ 200' "$headers"
}

scenario_docker() {
  local dir=$E2E_TMP/docker repo=$REGISTRY/e2e/docker-app
  local derived=$REGISTRY/e2e/docker-derived
  local id digest digest_again id2 digest2 shared
  mkdir -p "$dir/ctx/etc" "$dir/ctx/app" "$dir/ctx2"

  log_info "generating ${BIG_MIB} MiB of random data"
  random_file "$dir/ctx/big.bin" $((BIG_MIB * 1024 * 1024))
  printf 'NAME=berth-e2e\nRUN=%s\n' "$RUN_ID" >"$dir/ctx/etc/os-release"
  printf 'hello from run %s\n' "$RUN_ID" >"$dir/ctx/app/hello.txt"
  random_file "$dir/ctx/app/small.bin" 65536
  cat >"$dir/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY big.bin /data/big.bin
COPY etc/ /etc/
COPY app/ /app/
EOF

  run docker build -q -t "$repo:v1" "$dir/ctx"
  id=$(docker image inspect -f '{{.Id}}' "$repo:v1")
  assert_eq "built image has three layers" 3 \
    "$(docker image inspect -f '{{len .RootFS.Layers}}' "$repo:v1")"

  run_to "$dir/push1.log" docker push "$repo:v1"
  digest=$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$dir/push1.log" | cut -d' ' -f2)
  assert_match "docker push reports a manifest digest" '^sha256:[0-9a-f]{64}$' "$digest"
  assert_eq "docker push uploaded all three layers" 3 "$(grep -c ': Pushed' "$dir/push1.log" || true)"
  raw_manifest "$repo:v1" >"$dir/manifest-v1.json"
  assert_eq "registry serves the pushed manifest bytes (digest)" "$digest" "$(sha256_of <"$dir/manifest-v1.json")"
  assert_eq "docker pushed a Docker schema 2 manifest" "$MT_DOCKER_V2" "$(jq -r .mediaType "$dir/manifest-v1.json")"

  run docker rmi "$repo:v1"
  run docker image prune -af
  assert_eq "no images left in the local docker store" "" "$(docker image ls -aq)"
  assert_eq "no layers left in the local docker store" 0 \
    "$(find "$E2E_TMP/dockerd/data/vfs/dir" -mindepth 1 -maxdepth 1 | wc -l)"

  run_to "$dir/pull1.log" docker pull "$repo:v1"
  assert_eq "docker pull downloaded three layers" 3 "$(grep -c 'Pull complete' "$dir/pull1.log" || true)"
  assert_contains "docker pull reports the pushed digest" "$(cat "$dir/pull1.log")" "Digest: $digest"
  assert_eq "pulled image id equals the built one" "$id" "$(docker image inspect -f '{{.Id}}' "$repo:v1")"

  # Same image under a second tag of the same repository: nothing to upload.
  run docker tag "$repo:v1" "$repo:v1-again"
  run_to "$dir/push2.log" docker push "$repo:v1-again"
  shared=$(grep -cE 'Layer already exists|Mounted from' "$dir/push2.log" || true)
  assert_eq "re-tag push skips all three layers" 3 "$shared"
  digest_again=$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$dir/push2.log" | cut -d' ' -f2)
  assert_eq "re-tag push yields the same manifest digest" "$digest" "$digest_again"

  # A second build on top of the pulled image, pushed to another repository:
  # the three base layers must be skipped or cross-repository mounted.
  printf 'extra layer, run %s\n' "$RUN_ID" >"$dir/ctx2/extra.txt"
  printf 'FROM %s\nCOPY extra.txt /app/extra.txt\n' "$repo:v1" >"$dir/ctx2/Dockerfile"
  run docker build -q -t "$derived:v1" "$dir/ctx2"
  id2=$(docker image inspect -f '{{.Id}}' "$derived:v1")
  run_to "$dir/push3.log" docker push "$derived:v1"
  shared=$(grep -cE 'Layer already exists|Mounted from' "$dir/push3.log" || true)
  assert_eq "derived push skips or mounts the three shared layers" 3 "$shared"
  assert_eq "derived push uploads only the new layer" 1 "$(grep -c ': Pushed' "$dir/push3.log" || true)"
  log_info "mounted: $(grep -c 'Mounted from' "$dir/push3.log" || true), already existing: $(grep -c 'Layer already exists' "$dir/push3.log" || true)"
  digest2=$(grep -oE 'digest: sha256:[0-9a-f]{64}' "$dir/push3.log" | cut -d' ' -f2)

  # Pull the derived image back by digest; the base layers are still local.
  run docker rmi "$derived:v1"
  run_to "$dir/pull2.log" docker pull "$derived@$digest2"
  assert_eq "pull by digest reuses the three local base layers" 3 \
    "$(grep -c 'Already exists' "$dir/pull2.log" || true)"
  assert_eq "derived image id survives the round trip" "$id2" \
    "$(docker image inspect -f '{{.Id}}' "$derived@$digest2")"
}

scenario_podman() {
  local dir=$E2E_TMP/podman-app repo=$REGISTRY/e2e/podman-app id digest digest_v2s2
  small_context "$dir/ctx" podman 2048

  run pm build -q --format oci -t "$repo:v1" "$dir/ctx"
  id=$(pm image inspect --format '{{.Id}}' "$repo:v1")

  run pm push --tls-verify=false --format oci --digestfile "$dir/digest" "$repo:v1"
  digest=$(cat "$dir/digest")
  raw_manifest "$repo:v1" >"$dir/manifest.json"
  assert_eq "registry serves the manifest podman pushed" "$digest" "$(sha256_of <"$dir/manifest.json")"
  assert_eq "podman pushed an OCI image manifest" "$MT_OCI_MANIFEST" "$(jq -r .mediaType "$dir/manifest.json")"
  assert_eq "OCI manifest references an OCI config" "$MT_OCI_CONFIG" "$(jq -r .config.mediaType "$dir/manifest.json")"

  # The same image converted to Docker schema 2 under a second tag.
  run pm push --tls-verify=false --format v2s2 --digestfile "$dir/digest-v2s2" "$repo:v1" "docker://$repo:v1-docker"
  digest_v2s2=$(cat "$dir/digest-v2s2")
  assert_ne "v2s2 push yields a different manifest" "$digest" "$digest_v2s2"
  assert_eq "v2s2 tag serves a Docker schema 2 manifest" "$MT_DOCKER_V2" \
    "$(raw_manifest "$repo:v1-docker" | jq -r .mediaType)"

  run pm rmi "$repo:v1"
  assert_not "image is gone from local podman storage" pm image exists "$repo:v1"

  run pm pull --tls-verify=false "$repo:v1"
  assert_eq "pulled image id equals the built one" "$id" "$(pm image inspect --format '{{.Id}}' "$repo:v1")"
  assert_eq "pulled image digest equals the pushed one" "$digest" "$(pm image inspect --format '{{.Digest}}' "$repo:v1")"
}

scenario_skopeo() {
  local dir=$E2E_TMP/skopeo repo=$REGISTRY/e2e/skopeo digest tags
  small_context "$dir/ctx" skopeo 512

  # An OCI layout directory made locally: build with podman, export with podman.
  run pm build -q --format oci -t localhost/e2e/skopeo-src:v1 "$dir/ctx"
  run pm push localhost/e2e/skopeo-src:v1 "oci:$dir/src:v1"
  digest=$(layout_digest "$dir/src")
  log_info "local OCI layout digest: $digest"

  run sk copy --dest-tls-verify=false "oci:$dir/src:v1" "docker://$repo:v1"
  assert_eq "skopeo inspect reports the local digest" "$digest" \
    "$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$repo:v1")"
  assert_eq "registry stores an OCI manifest" "$MT_OCI_MANIFEST" "$(raw_manifest "$repo:v1" | jq -r .mediaType)"

  # Registry-to-registry copy to a second tag (all blobs already there).
  run sk copy --src-tls-verify=false --dest-tls-verify=false "docker://$repo:v1" "docker://$repo:v2"
  tags=$(sk list-tags --tls-verify=false "docker://$repo" | jq -r '.Tags[]' | sort | paste -sd' ')
  assert_eq "list-tags returns v1 and v2" "v1 v2" "$tags"
  assert_eq "v2 has the same digest as v1" "$digest" \
    "$(sk inspect --tls-verify=false --format '{{.Digest}}' "docker://$repo:v2")"

  run sk copy --src-tls-verify=false "docker://$repo:v1" "oci:$dir/back:v1"
  assert_eq "copied-back layout has the same manifest digest" "$digest" "$(layout_digest "$dir/back")"
  assert_cmd "copied-back blobs are identical" diff -r "$dir/src/blobs" "$dir/back/blobs"
}

scenario_multiarch() {
  local dir=$E2E_TMP/multiarch repo=$REGISTRY/e2e/multiarch list=localhost/e2e/multiarch:list
  local arch index_digest child platforms
  for arch in amd64 arm64; do
    small_context "$dir/ctx-$arch" "linux/$arch" 256
    # --no-cache: podman's layer cache ignores --platform.
    run pm build -q --no-cache --format oci --platform "linux/$arch" -t "localhost/e2e/multiarch:$arch" "$dir/ctx-$arch"
    assert_eq "local $arch image has architecture $arch" "$arch" \
      "$(pm image inspect --format '{{.Architecture}}' "localhost/e2e/multiarch:$arch")"
  done
  run pm manifest create "$list"
  run pm manifest add "$list" containers-storage:localhost/e2e/multiarch:amd64
  run pm manifest add "$list" containers-storage:localhost/e2e/multiarch:arm64

  run pm manifest push --all --format oci --tls-verify=false --digestfile "$dir/digest" "$list" "docker://$repo:v1"
  index_digest=$(cat "$dir/digest")
  raw_manifest "$repo:v1" >"$dir/index.json"
  assert_eq "registry serves the index podman pushed" "$index_digest" "$(sha256_of <"$dir/index.json")"
  assert_eq "pushed list is an OCI image index" "$MT_OCI_INDEX" "$(jq -r .mediaType "$dir/index.json")"
  platforms=$(jq -r '.manifests[].platform | .os + "/" + .architecture' "$dir/index.json" | sort | paste -sd' ')
  assert_eq "index lists both platforms" "linux/amd64 linux/arm64" "$platforms"
  assert_eq "arm64 is resolved through the index" arm64 \
    "$(sk --override-arch arm64 --override-os linux inspect --tls-verify=false --format '{{.Architecture}}' "docker://$repo:v1")"

  run sk copy --all --src-tls-verify=false "docker://$repo:v1" "oci:$dir/back:v1"
  assert_eq "copied-back index digest is identical" "$index_digest" "$(layout_digest "$dir/back")"
  for child in $(jq -r '.manifests[].digest' "$dir/index.json"); do
    assert_cmd "platform manifest $child came back" test -s "$dir/back/blobs/sha256/${child#sha256:}"
    assert_eq "platform manifest $child is served by digest" "$child" \
      "$(raw_manifest "$repo@$child" | sha256_of)"
  done

  # Push the copied-back layout with skopeo to a new repository: same index.
  run sk copy --all --dest-tls-verify=false "oci:$dir/back:v1" "docker://$REGISTRY/e2e/multiarch-copy:v1"
  assert_eq "skopeo copy --all preserves the index digest" "$index_digest" \
    "$(raw_manifest "$REGISTRY/e2e/multiarch-copy:v1" | sha256_of)"
}

# --- main --------------------------------------------------------------------

for scenario in $SCENARIOS; do
  declare -F "scenario_$scenario" >/dev/null || die "unknown scenario: $scenario"
done
require_cmds curl jq python3 skopeo podman docker dockerd sha256sum
e2e_init
export TMPDIR=$E2E_TMP # podman build and friends default to /var/tmp

log_step "registry under test: http://$REGISTRY (run $RUN_ID, scratch $E2E_TMP)"
wait_for_http "http://$REGISTRY/v2/" 30 || die "registry $REGISTRY is not answering"
setup_podman
if [[ " $SCENARIOS " == *" docker "* ]]; then
  start_dockerd
fi
if [[ -n ${E2E_USERNAME:-} ]]; then
  # podman and skopeo share this file; docker keeps its own under DOCKER_CONFIG.
  export REGISTRY_AUTH_FILE=$E2E_TMP/auth.json
  pm login --tls-verify=false -u "$E2E_USERNAME" --password-stdin "$REGISTRY" <<<"$E2E_PASSWORD" >/dev/null ||
    die "podman login as $E2E_USERNAME failed"
  if [[ -n $DOCKERD_PID ]]; then
    docker login -u "$E2E_USERNAME" --password-stdin "$REGISTRY" <<<"$E2E_PASSWORD" >/dev/null ||
      die "docker login as $E2E_USERNAME failed"
  fi
  log_info "logged in as $E2E_USERNAME"
fi

# shellcheck disable=SC2086 # one word per scenario
run_scenarios $SCENARIOS
