#!/usr/bin/env bash
# The main job, locally, in one command: installs what is missing, starts moto and a real
# puppetserver on 127.0.0.1, and runs the end-to-end scenario with the operator's
# reconciler driving a real puppet agent to a signed certificate and a catalog, then
# deleting the node. Prints a readable summary. Services keep running afterwards
# (bash tests/services/down.sh stops them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tests/services/install.sh
cargo build --locked --workspace --all-targets
bash tests/services/up.sh
# shellcheck disable=SC1091
. "${PC_STATE_DIR:-/tmp/puppet-conductor}/services.env"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! PC_REQUIRE_SERVICES=1 cargo test -q --locked -p puppet-conductor --test integration -- \
    --exact e2e_agent::agent_gets_signed_and_classified_then_loses_its_certificate_on_delete \
    --nocapture >"$log" 2>&1; then
  cat "$log"
  echo "quickstart: the scenario failed (log above)" >&2
  exit 1
fi
grep -E '^(==>|BENCH)' "$log"
echo "quickstart: done"
