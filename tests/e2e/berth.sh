#!/usr/bin/env bash
# Run a Berth binary (`berth serve --listen 127.0.0.1:PORT --data-dir DIR`) on a
# free loopback port with a fresh data dir, then run the e2e suite against it.
#
# Usage (same modes as distribution.sh):
#   tests/e2e/berth.sh                     run tests/e2e/run.sh against it
#   tests/e2e/berth.sh serve               start it and wait (Ctrl-C stops it)
#   tests/e2e/berth.sh CMD [ARGS]          run CMD with REGISTRY=host:port
#
# Environment:
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

require_cmds curl python3
e2e_init
start_berth "$bin"
with_registry "$BERTH_ADDR" "$BERTH_PID" "$@"
