#!/usr/bin/env bash
# Runs Berth's tests.
#
#   scripts/test-all.sh           everything (what CI runs): the offline template checks;
#                                 formatting and lints; unit, conformance, event and protocol
#                                 tests, with the S3 and DynamoDB adapters against a real Garage
#                                 and DynamoDB Local; the end-to-end suite with real docker,
#                                 podman and skopeo against `berth serve`, once on embedded
#                                 storage and once on Garage + DynamoDB Local; the template
#                                 built by `sam build` and run under `sam local`; the Lambda
#                                 functions under `cargo lambda watch`.
#   scripts/test-all.sh --quick   the edit-test loop: formatting, lints, unit tests and the
#                                 protocol tests on embedded storage. Needs only cargo: no
#                                 services, no installs.
#
# Installs what it needs (idempotently, reusing cached installs), stops everything it started,
# by PID, and ends with a table of how long each step took.
#
# One debug build serves the lints, the tests, and the `berth` and gateway binaries of the
# end-to-end suites: clippy runs as the compiler of the workspace's own crates
# (RUSTC_WORKSPACE_WRAPPER, as `cargo clippy` itself does it), so the dependencies are
# compiled once. The functions are compiled once more, by `sam build` (cargo lambda, for
# Lambda's Linux), in the SAM CLI's debug mode, since these zips are never shipped; a user's
# `sam build` keeps the release profile. `sam build` and then the SAM suite run in the
# background while the tests and the end-to-end suites run; the Lambda suite runs the
# functions `sam build` made.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

mode=full
case ${1:-} in
    "") ;;
    --quick) mode=quick ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--quick]" >&2
        exit 2
        ;;
esac

step() { printf '\n==> %s\n' "$*"; }

# --- timing --------------------------------------------------------------------------------
# Every step is timed; the table is printed at the end, also when a step failed.
scratch=$(mktemp -d /tmp/berth-test-all.XXXXXX)
timings=$scratch/timings
: >"$timings"
run_started=$EPOCHREALTIME
# What the run prints is also kept, to add up the tests at the end.
output=$scratch/output
exec > >(tee "$output") 2>&1

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }'; }

# timed KIND NAME CMD...: runs CMD (a program or script, not a shell function: errexit does not
# apply inside a function whose status is tested) as the step NAME and records its wall time.
# KIND says what the time went on: install, setup, build, check or test.
timed() {
    local kind=$1 name=$2 started=$EPOCHREALTIME rc=0
    shift 2
    step "$name"
    "$@" || rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$name" "$(seconds_since "$run_started")" \
        "$(seconds_since "$started")" "$rc" >>"$timings"
    return "$rc"
}

# Steps that run beside others: each writes its output to its own log, shown when it ends.
declare -A job_pid=() job_log=()
# background NAME CMD...: starts CMD in the background, in a process group of its own (so that
# a failed run can stop all of it); CMD may be a shell function that runs timed steps.
background() {
    local name=$1
    shift
    job_log[$name]=$scratch/job-${#job_log[@]}.log
    set -m
    "$@" >"${job_log[$name]}" 2>&1 &
    job_pid[$name]=$!
    set +m
    printf '\n==> started in the background: %s (pid %s)\n' "$name" "${job_pid[$name]}"
}
# finish NAME: waits for the background step NAME, shows its output and returns its status.
finish() {
    local name=$1 rc=0
    wait "${job_pid[$name]}" || rc=$?
    unset "job_pid[$name]"
    printf '\n==> output of the background step: %s\n' "$name"
    cat "${job_log[$name]}"
    return "$rc"
}

print_timings() {
    local total
    total=$(seconds_since "$run_started")
    printf '\n==> timings (seconds of wall clock; steps run side by side overlap)\n'
    printf '%-8s %-66s %6s %6s\n' kind step "ended" took
    awk -F'\t' '{ printf "%-8s %-66s %6d %6d%s\n", $1, substr($2, 1, 66), $3, $4, ($5 == 0 ? "" : "  FAILED") }' \
        "$timings"
    awk -F'\t' '{ t[$1] += $4 } END { for (k in t) printf "sum of %s steps: %ds\n", k, t[k] }' "$timings" | sort
    printf 'whole run: %ss (%dm%02ds)\n' "$total" $((total / 60)) $((total % 60))
    # The closing line: cargo's "test result" lines and the suites' "N passed, M failed" lines
    # added up.
    awk '/^test result: / { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i - 1); if ($i == "failed;") f += $(i - 1) } }
        /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
        END { printf "tests: %d passed, %d failed\n", p, f }' "$output"
}

# --- quick: the edit-test loop -------------------------------------------------------------
# The workspace's crates compiled by clippy, every warning an error (CLIPPY_ARGS is how
# `cargo clippy` hands its arguments to clippy-driver). The same environment for the build
# and the run, or cargo would compile the workspace again.
with_clippy=(env "RUSTC_WORKSPACE_WRAPPER=$(rustc --print sysroot)/bin/clippy-driver"
    "CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")

if [[ $mode == quick ]]; then
    trap 'print_timings; rm -rf "$scratch"' EXIT
    timed check "cargo fmt --check" cargo fmt --all -- --check
    timed build "build the workspace and its tests, linted by clippy" \
        "${with_clippy[@]}" cargo test --workspace --all-features --all-targets --no-run
    timed test "cargo test (unit, conformance on the embedded stores, protocol tests)" \
        "${with_clippy[@]}" cargo test --workspace --all-features
    exit 0
fi

# --- everything ----------------------------------------------------------------------------
# A clean checkout builds once: incremental compilation data would only take disk space.
if [[ ${CI:-} == true ]]; then export CARGO_INCREMENTAL=0; fi
df -h "$root" | awk 'NR == 2 { print "disk: " $4 " free on " $6 " at the start" }'

services=$scratch/services
mkdir -p "$services"
cleanup() {
    local rc=$? name
    set +e
    for name in "${!job_pid[@]}"; do
        # Every process of the step is told to stop; a suite then stops what it started.
        kill -TERM -- "-${job_pid[$name]}" 2>/dev/null
        wait "${job_pid[$name]}" 2>/dev/null
        printf '\n==> stopped the background step: %s; its output:\n' "$name"
        cat "${job_log[$name]}"
    done
    scripts/services/garage.sh stop "$services/garage" >/dev/null 2>&1
    scripts/services/dynamodb-local.sh stop >/dev/null 2>&1
    scripts/services/moto.sh stop "$services/moto" >/dev/null 2>&1
    df -h "$root" | awk 'NR == 2 { print "disk: " $4 " free on " $6 " at the end" }'
    du -sh "$root/target" 2>/dev/null | awk '{ print "disk: " $1 " in target/" }'
    print_timings
    rm -rf "$scratch"
    exit "$rc"
}
trap cleanup EXIT

# --- prerequisites -------------------------------------------------------------------------
need_packages=()
for tool in dockerd:docker.io podman:podman skopeo:skopeo jq:jq curl:curl busybox:busybox-static ip:iproute2 \
    docker-registry:docker-registry; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_packages+=("${tool#*:}")
done
install_packages() {
    local sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "$@" >/dev/null
}
if ((${#need_packages[@]})); then
    export -f install_packages
    timed install "apt: ${need_packages[*]}" bash -c 'install_packages "$@"' _ "${need_packages[@]}"
fi

# cargo-lambda (with zig) builds the Lambda functions; the SAM CLI and cfn-lint check the
# template. All three come from PyPI.
if ! command -v cargo-lambda >/dev/null 2>&1 || ! command -v sam >/dev/null 2>&1 ||
    ! command -v cfn-lint >/dev/null 2>&1; then
    timed install "PyPI: cargo-lambda, the SAM CLI and cfn-lint" \
        python3 -m pip install --quiet --disable-pip-version-check cargo-lambda==1.9.2 aws-sam-cli cfn-lint
    PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
fi

# --- services: Garage (S3), DynamoDB Local and moto (SSM, SQS, KMS), on 127.0.0.1 ----------
timed install "Garage (cargo install, once)" scripts/services/garage.sh install
timed install "DynamoDB Local and moto (once)" \
    bash -c 'scripts/services/dynamodb-local.sh install && scripts/services/moto.sh install'
step "starting Garage, DynamoDB Local and moto"
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

# --- checks, builds and tests --------------------------------------------------------------
check_infra="infra/template.yaml: cfn-lint, sam validate --lint, template against the code"
background "$check_infra" timed check "$check_infra" scripts/check-infra.sh
timed check "cargo fmt --check" cargo fmt --all -- --check
timed build "build the workspace and its tests, linted by clippy (debug)" \
    "${with_clippy[@]}" cargo test --workspace --all-features --all-targets --no-run
finish "$check_infra"

# The functions for Lambda's Linux, built by `sam build`, then the template under `sam local`,
# in the background while the tests and the end-to-end suites run on the debug build. The
# SAM CLI's SAM_BUILD_MODE=debug builds them without --release: these zips are never shipped.
# The SAM suite has a Garage and a moto of its own, on its bridge.
sam_build="sam build (cargo lambda build, debug)"
sam_suite="the template under sam local: infra/events through sam local invoke; chunked push, docker pull, skopeo through sam local start-api"
berth_bin=$root/target/debug/berth
sam_build_then_suite() {
    timed build "$sam_build" env SAM_BUILD_MODE=debug tests/sam/run.sh build || return
    timed test "$sam_suite" env SAM_SKIP_BUILD=1 BERTH_BIN="$berth_bin" tests/sam/run.sh
}
background "$sam_build, then $sam_suite" sam_build_then_suite

timed test "cargo test (including the tests against Garage and DynamoDB Local)" \
    "${with_clippy[@]}" cargo test --workspace --all-features -- --include-ignored

timed test "end-to-end suite: docker, podman, skopeo against berth serve on embedded storage" \
    env BERTH_BIN="$berth_bin" tests/e2e/berth.sh

run_id=$(date +%s)-$$
timed test "end-to-end suite again, on Garage (blob GETs redirected to it) + DynamoDB Local" \
    env BERTH_ADMIN_PASSWORD="Admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    BERTH_BLOB_STORE="s3://$BERTH_TEST_S3_BUCKET/e2e-$run_id" \
    BERTH_METADATA="dynamodb://berth-e2e-$run_id" \
    BERTH_S3_PATH_STYLE=true \
    bash -c '"$1" init && BERTH_BIN="$1" tests/e2e/berth.sh' _ "$berth_bin"

# The upload front's image holds a static berth: another compile of it (for the target
# triple, with crt-static), which the Lambda suite puts in an image and runs.
timed build "a static berth for the upload front's image (debug)" \
    scripts/build-upload-front-image.sh --profile dev --binary-only
# The same cargo lambda commands as sam build's: they wait for its lock on target/, then find
# the functions built.
timed build "the functions for the Lambda suite (sam build's binaries)" \
    env LAMBDA_BUILD_MODE=debug tests/lambda/run.sh build
timed test "Lambda functions under cargo lambda watch, behind a test API gateway, on Garage + DynamoDB Local" \
    env LAMBDA_SKIP_BUILD=1 LAMBDA_BUILD_MODE=debug BERTH_BIN="$berth_bin" tests/lambda/run.sh

finish "$sam_build, then $sam_suite"
