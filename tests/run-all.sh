#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs what is missing, checks
# formatting, lints, generated files and manifests, starts moto and puppetserver
# on 127.0.0.1, and runs every test with the services required (a test that
# needs them fails instead of skipping).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s (%ss)\n' "$1" "$SECONDS"; }

step "install prerequisites"
bash tests/services/install.sh

step "cargo fmt --check"
cargo fmt --all -- --check

# One profile for everything: the AWS SDK is built once (~10 min cold on 2 cores).
step "cargo build (all targets)"
cargo build --locked --workspace --all-targets

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "generated files are current"
bash scripts/check-generated.sh

step "manifests and CRDs validate (kubernetes-validate --strict)"
bash scripts/validate-manifests.sh

step "Helm chart lints, renders and validates"
bash scripts/validate-chart.sh

step "start moto and puppetserver on 127.0.0.1"
bash tests/services/up.sh
if [[ "${PC_KEEP_SERVICES:-0}" != 1 ]]; then
  trap 'bash tests/services/down.sh' EXIT
fi
# shellcheck disable=SC1091
. "${PC_STATE_DIR:-/tmp/puppet-conductor}/services.env"

step "cargo test"
PC_REQUIRE_SERVICES=1 PUPPET_CONDUCTOR_BIN="$PWD/target/debug/puppet-conductor" \
  cargo test --locked --workspace --all-targets
step "done"
