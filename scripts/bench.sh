#!/usr/bin/env bash
# Scale benchmark: one master, 1,000 PuppetNodes reconciled twice against a private
# moto (EC2 + S3) and kube-fake-client. Prints the figures and writes them to
# docs/benchmarks.md together with this command. Needs tests/services/up.sh (moto).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. "${PC_STATE_DIR:-/tmp/puppet-conductor}/services.env"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
PC_REQUIRE_SERVICES=1 /usr/bin/time -v cargo test -q --locked -p puppet-conductor --test integration \
  -- --exact node_lifecycle::a_pass_over_1000_nodes_makes_at_most_10_describes --nocapture 2>&1 | tee "$log"
grep -q "test result: ok. 1 passed" "$log" || { echo "bench: the scale test failed" >&2; exit 1; }
figures=$(grep '^BENCH ' "$log" | sed 's/^BENCH /- /')
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`bash scripts/bench.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores); the figures"
  echo "come from the test \`node_lifecycle::a_pass_over_1000_nodes_makes_at_most_10_describes\`"
  echo "(1,000 PuppetNodes of one master, kube-fake-client, a private moto server for EC2 and S3)."
  echo
  echo "$figures"
  echo "- peak RSS of the test process (GNU time, KiB; moto runs in its own process): ${rss}"
  echo
  echo "moto answers one request at a time and its tag filters are quadratic in the number of"
  echo "instances, so wall times here are dominated by moto, not by the operator."
} > docs/benchmarks.md
cat docs/benchmarks.md
