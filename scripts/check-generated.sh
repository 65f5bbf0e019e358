#!/usr/bin/env bash
# Fail (exit 1, with a diff) when the checked-in CRD YAML in crds/ or its copy in
# charts/puppet-conductor/crds/ differs from what the Rust types generate.
# Fix with scripts/generate.sh. (The integration test crd_drift checks the same
# thing on parsed YAML from `cargo test`.)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT

bash "$repo/scripts/generate.sh" --into "$fresh"

status=0
for dir in crds charts/puppet-conductor/crds; do
    if [[ ! -d "$repo/$dir" ]]; then
        echo "check-generated.sh: $dir/ is missing" >&2
        status=1
        continue
    fi
    # A generated file missing from the repository, or a stale one that no
    # longer is generated, shows up as "Only in ...".
    if ! diff -ru "$repo/$dir" "$fresh/$dir" >"$fresh/diff" 2>&1; then
        # Paths relative to the repository: `checked-in/crds/...` vs `generated/crds/...`.
        sed -e "s#$fresh/#generated/#g" -e "s#$repo/#checked-in/#g" "$fresh/diff"
        status=1
    fi
done

if ((status)); then
    echo >&2
    echo "check-generated.sh: generated CRD YAML is out of date: run scripts/generate.sh and commit the result" >&2
    exit 1
fi
echo "check-generated.sh: crds/ and charts/puppet-conductor/crds/ match the Rust types"
