#!/usr/bin/env bash
# Run a Berth binary (`berth serve --listen 127.0.0.1:PORT --data-dir DIR`) on a
# free loopback port with a fresh data dir and auth on (the admin password chosen here),
# then run the e2e suite against it, logged in, the auth suite and the replication suite.
#
# Usage (same modes as distribution.sh):
#   tests/e2e/berth.sh                     run tests/e2e/run.sh, tests/e2e/auth.sh, then
#                                          tests/e2e/replication.sh
#   tests/e2e/berth.sh serve               start it and wait (Ctrl-C stops it)
#   tests/e2e/berth.sh CMD [ARGS]          run CMD with REGISTRY=host:port, E2E_USERNAME and
#                                          E2E_PASSWORD (the admin's)
#
# Environment:
#   BERTH_ADMIN_PASSWORD  the admin's password, if storage was initialised with one
#   BERTH_BIN      the binary (default: target/release/berth, else target/debug/berth)
#   E2E_KEEP_TMP=1 keep the scratch directory (data dir and berth.log)
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$E2E_DIR/../.." && pwd)
bin=${BERTH_BIN:-}
if [[ -z $bin ]]; then
  for bin in "$root/target/release/berth" "$root/target/debug/berth"; do
    [[ -x $bin ]] && break
  done
fi
[[ -x $bin ]] || die "no berth binary at $bin (build it or set BERTH_BIN)"

require_cmds curl jq python3
e2e_init
# The first start (or an earlier `berth init`) makes the admin with this password.
BERTH_ADMIN_PASSWORD=${BERTH_ADMIN_PASSWORD:-Admin-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export BERTH_ADMIN_PASSWORD
# Garbage collection (auth.sh's gc scenario) spares blobs touched in the last second only.
export BERTH_GC_GRACE=${BERTH_GC_GRACE:-1s}
start_berth "$bin"
# The suite pushes under e2e/: a private project the admin creates.
status=$(curl -sS -o "$E2E_TMP/project.json" -w '%{http_code}' -u "admin:$BERTH_ADMIN_PASSWORD" \
  -H 'Content-Type: application/json' --data '{"project_name":"e2e","metadata":{"public":"false"}}' \
  "http://$BERTH_ADDR/api/v2.0/projects")
[[ $status == 201 ]] || die "creating the project e2e: $status $(cat "$E2E_TMP/project.json")"
export E2E_USERNAME=admin E2E_PASSWORD=$BERTH_ADMIN_PASSWORD
if (($# == 0)); then
  rc=0
  with_registry "$BERTH_ADDR" "$BERTH_PID" || rc=1
  "$E2E_DIR/auth.sh" "$BERTH_ADDR" "$BERTH_ADMIN_PASSWORD" || rc=1
  # Replication from this Berth to a second one (embedded storage) and to Distribution.
  "$E2E_DIR/replication.sh" "$BERTH_ADDR" "$BERTH_ADMIN_PASSWORD" "$bin" || rc=1
  exit "$rc"
fi
with_registry "$BERTH_ADDR" "$BERTH_PID" "$@"
