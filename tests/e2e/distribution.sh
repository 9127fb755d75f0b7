#!/usr/bin/env bash
# Run CNCF Distribution (/usr/bin/docker-registry) on a free loopback port as a
# reference registry, to validate the e2e suite or compare behaviour with Berth.
#
# Usage:
#   tests/e2e/distribution.sh              start it, run tests/e2e/run.sh against it, stop it
#   tests/e2e/distribution.sh serve        start it and wait (Ctrl-C stops it)
#   tests/e2e/distribution.sh CMD [ARGS]   start it, run CMD with REGISTRY=host:port, stop it
#
# Environment:
#   E2E_REGISTRY_LOG=FILE  keep the registry log (one access-log line per request)
#   E2E_KEEP_TMP=1         keep the scratch directory (storage, config, log)
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_cmds /usr/bin/docker-registry curl python3
e2e_init
start_distribution
with_registry "$DISTRIBUTION_ADDR" "$DISTRIBUTION_PID" "$@"
