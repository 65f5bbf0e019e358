#!/usr/bin/env bash
# Validate the CRDs (crds/*.yaml) and the example manifests
# (manifests/examples/*.yaml and manifests/puppetnodepool.yaml) offline against the Kubernetes 1.32 API schemas
# with `kubernetes-validate --strict` (unknown fields are errors).
#
# kubernetes-validate has no schema for our own kinds: it only warns about
# PuppetMaster/PuppetNode/PuppetNodePool documents, and warnings do not fail
# this script; errors (and unreadable or invalid YAML) do. Those kinds are
# checked against the generated CRD schema by the integration test `manifests`.
#
# When kubectl is available, the kustomization in manifests/ is also built
# (`kubectl kustomize`, offline) and its output validated.
#
# kubernetes-validate lives in the tools venv that tests/services/install.sh
# creates: ${PC_TOOLS_DIR:-$HOME/.cache/puppet-conductor/venv}.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

k8s_version="${PC_K8S_VALIDATE_VERSION:-1.32.0}"
validate="${PC_TOOLS_DIR:-$HOME/.cache/puppet-conductor/venv}/bin/kubernetes-validate"
if [[ ! -x "$validate" ]]; then
    echo "validate-manifests.sh: $validate not found; run tests/services/install.sh" >&2
    exit 1
fi

shopt -s nullglob
crds=(crds/*.yaml)
examples=(manifests/examples/*.yaml)
shopt -u nullglob
# Outside examples/ (and so outside the kustomization): the pool example.
examples+=(manifests/puppetnodepool.yaml)
if ((${#crds[@]} == 0)); then
    echo "validate-manifests.sh: no crds/*.yaml; run scripts/generate.sh" >&2
    exit 1
fi
if ((${#examples[@]} == 0)); then
    echo "validate-manifests.sh: no manifests/examples/*.yaml" >&2
    exit 1
fi

# kubernetes-validate exits non-zero on errors only; WARN lines (kinds it has
# no schema for) leave the exit status at 0.
status=0
"$validate" --strict -k "$k8s_version" "${crds[@]}" "${examples[@]}" || status=1

if command -v kubectl >/dev/null 2>&1; then
    built="$(mktemp -d)"
    trap 'rm -rf "$built"' EXIT
    if kubectl kustomize manifests >"$built/kustomization-output.yaml"; then
        (cd "$built" && "$validate" --strict -k "$k8s_version" kustomization-output.yaml) | sed 's#^#kustomize: #' || status=1
    else
        echo "validate-manifests.sh: kubectl kustomize manifests failed" >&2
        status=1
    fi
else
    echo "validate-manifests.sh: kubectl not found; skipping the kustomization build" >&2
fi

if ((status)); then
    echo "validate-manifests.sh: validation failed" >&2
    exit 1
fi
echo "validate-manifests.sh: crds/, manifests/examples/ and manifests/puppetnodepool.yaml are valid for Kubernetes $k8s_version"
