#!/usr/bin/env bash
# Runs every Berth test: the offline template checks; formatting and lints; unit, conformance,
# event and protocol tests, with the S3 and DynamoDB adapters against a real Garage and
# DynamoDB Local; the end-to-end suite with real docker, podman and skopeo against `berth
# serve`, once on embedded storage and once on Garage + DynamoDB Local; the Lambda functions
# under `cargo lambda watch`; and the SAM template under `sam local`. Installs what it needs
# (idempotently, reusing cached installs) and stops everything it started, by PID.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

# A clean checkout builds once: incremental compilation data would only take disk space.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=0; fi
df -h "$root" | awk 'NR == 2 { print "disk: " $4 " free on " $6 " at the start" }'

# --- prerequisites -------------------------------------------------------------------------
need_packages=()
for tool in dockerd:docker.io podman:podman skopeo:skopeo jq:jq curl:curl busybox:busybox-static ip:iproute2 \
    docker-registry:docker-registry; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_packages+=("${tool#*:}")
done
if ((${#need_packages[@]})); then
    step "installing ${need_packages[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# cargo-lambda (with zig) builds the Lambda functions; the SAM CLI and cfn-lint check the
# template. All three come from PyPI.
if ! command -v cargo-lambda >/dev/null 2>&1 || ! command -v sam >/dev/null 2>&1 ||
    ! command -v cfn-lint >/dev/null 2>&1; then
    step "installing cargo-lambda, the SAM CLI and cfn-lint (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2 aws-sam-cli cfn-lint
    PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
fi

# --- services: Garage (S3), DynamoDB Local and moto (SSM, SQS, KMS), on 127.0.0.1 ----------
services=$(mktemp -d /tmp/berth-services.XXXXXX)
cleanup() {
    scripts/services/garage.sh stop "$services/garage" >/dev/null 2>&1 || true
    scripts/services/dynamodb-local.sh stop >/dev/null 2>&1 || true
    scripts/services/moto.sh stop "$services/moto" >/dev/null 2>&1 || true
    rm -rf "$services"
    df -h "$root" | awk 'NR == 2 { print "disk: " $4 " free on " $6 " at the end" }'
    du -sh "$root/target" 2>/dev/null | awk '{ print "disk: " $1 " in target/" }'
}
trap cleanup EXIT

step "installing and starting Garage, DynamoDB Local and moto"
scripts/services/garage.sh install
# DynamoDB Local runs from its cached install (~/.cache/berth) and keeps tables in memory only.
# It accepts any credentials; Garage's, exported last, are the ones in force.
eval "$(scripts/services/dynamodb-local.sh start)"
eval "$(scripts/services/garage.sh start "$services/garage")"
# The S3 outage test stops and restarts this node.
export BERTH_TEST_GARAGE_DIR="$services/garage"
# moto stands in for SSM Parameter Store (the token signing keys), and for SQS and KMS
# (replication's queues and credential key); it exports only AWS_ENDPOINT_URL_SSM,
# AWS_ENDPOINT_URL_SQS and AWS_ENDPOINT_URL_KMS and accepts Garage's credentials and region.
eval "$(scripts/services/moto.sh start "$services/moto")"

# --- infrastructure: the SAM template, offline ---------------------------------------------
step "infra/template.yaml: cfn-lint, sam validate --lint, template against the code"
scripts/check-infra.sh

# --- Rust: format, lints, unit/conformance/protocol tests ----------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (including the tests against Garage and DynamoDB Local)"
cargo test --workspace --all-features -- --include-ignored

# --- end to end with real clients ----------------------------------------------------------
step "building berth (release)"
cargo build --release -p berth

step "end-to-end suite: docker, podman, skopeo against berth serve on embedded storage"
BERTH_BIN="$root/target/release/berth" tests/e2e/berth.sh

step "end-to-end suite again, on Garage (blob GETs redirected to it) + DynamoDB Local"
run_id=$(date +%s)-$$
BERTH_ADMIN_PASSWORD=Admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n') \
    BERTH_BLOB_STORE="s3://$BERTH_TEST_S3_BUCKET/e2e-$run_id" \
    BERTH_METADATA="dynamodb://berth-e2e-$run_id" \
    BERTH_S3_PATH_STYLE=true \
    bash -c 'target/release/berth init && BERTH_BIN="$1" tests/e2e/berth.sh' _ "$root/target/release/berth"

step "Lambda functions (cargo lambda build) under cargo lambda watch, behind a test API gateway, on Garage + DynamoDB Local"
BERTH_BIN="$root/target/release/berth" tests/lambda/run.sh

step "the template under sam local: infra/events through sam local invoke; chunked push, docker pull, skopeo through sam local start-api; on Garage + DynamoDB Local"
BERTH_BIN="$root/target/release/berth" tests/sam/run.sh
