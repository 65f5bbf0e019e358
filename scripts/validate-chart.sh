#!/usr/bin/env bash
# Check the Helm chart offline:
#
# - `helm lint --strict` with the default values and each ci/*-values.yaml;
# - `helm template` of each configuration (all namespaces; one namespace
#   without leader election; every value set; the oldest supported
#   Kubernetes), validated with `kubernetes-validate --strict` against the
#   1.32 schemas and the chart's minimum (1.25), plus scripts/chart_assertions.py
#   (RBAC shape per branch, hardened container, downward API, probes);
# - configurations the chart must refuse are refused;
# - the operator binary (${PUPPET_CONDUCTOR_BIN:-target/debug/puppet-conductor}, built
#   first) starts with each render's args and env (scripts/chart_runs_binary.py);
# - the chart's crds/ are byte-identical to crds/;
# - `kubectl kustomize manifests/` renders and validates.
#
# helm and kubectl come from tests/services/install.sh
# (${PC_HELM_DIR:-$HOME/.cache/puppet-conductor/helm}), kubernetes-validate
# from its venv (${PC_TOOLS_DIR:-$HOME/.cache/puppet-conductor/venv}).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

chart=charts/puppet-conductor
release=puppet-conductor
release_ns=puppet-conductor
k8s_versions=("${PC_K8S_VALIDATE_VERSION:-1.32.0}" 1.25.0)
helm_dir="${PC_HELM_DIR:-$HOME/.cache/puppet-conductor/helm}"
venv="${PC_TOOLS_DIR:-$HOME/.cache/puppet-conductor/venv}"
helm="$helm_dir/helm"
kubectl="$helm_dir/kubectl"
validate="$venv/bin/kubernetes-validate"

binary="${PUPPET_CONDUCTOR_BIN:-$repo/target/debug/puppet-conductor}"
for tool in "$helm" "$kubectl" "$validate" "$binary"; do
    if [[ ! -x "$tool" ]]; then
        echo "validate-chart.sh: $tool not found; run tests/services/install.sh and cargo build" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Keep helm away from the user's repositories, plugins and cache.
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"

status=0
fail() {
    echo "validate-chart.sh: FAILED: $*" >&2
    status=1
}

echo "--- helm lint --strict"
shopt -s nullglob
ci_values=("$chart"/ci/*-values.yaml)
shopt -u nullglob
"$helm" lint --strict "$chart" || fail "helm lint --strict $chart"
for values in "${ci_values[@]}"; do
    "$helm" lint --strict "$chart" -f "$values" || fail "helm lint --strict -f $values"
done

# name | assertions case ("" for none) | helm template arguments
renders=(
    "default|cluster|"
    "namespaced|namespaced:team-a|--set watchNamespace=team-a --set leaderElection.enabled=false --set replicas=1"
    "full|cluster|-f $chart/ci/full-values.yaml"
    "kube-1.25|cluster|--kube-version 1.25.0"
)
for entry in "${renders[@]}"; do
    IFS='|' read -r name case args <<<"$entry"
    out="$work/render-$name.yaml"
    echo "--- helm template ($name) $args"
    # shellcheck disable=SC2086 # args are whitespace-separated on purpose
    if ! "$helm" template "$release" "$chart" --namespace "$release_ns" $args >"$out"; then
        fail "helm template ($name)"
        continue
    fi
    for k in "${k8s_versions[@]}"; do
        (cd "$work" && "$validate" --strict --quiet -k "$k" "${out##*/}") || fail "kubernetes-validate -k $k of the $name render"
    done
    if [[ -n "$case" ]]; then
        "$venv/bin/python" scripts/chart_assertions.py "$case" "$out" "$release_ns" || fail "assertions on the $name render"
    fi
    "$venv/bin/python" scripts/chart_runs_binary.py "$out" "$binary" || fail "the binary as the $name render runs it"
done

echo "--- configurations the chart refuses"
# name | expected in the error | helm template arguments
refusals=(
    "two replicas without leader election|needs leaderElection.enabled|--set leaderElection.enabled=false"
    "unknown log format|logFormat|--set logFormat=xml"
    "misspelt value|additional properties|--set replica=1"
    "Kubernetes older than 1.25|kubeVersion|--kube-version 1.24.0"
)
for entry in "${refusals[@]}"; do
    IFS='|' read -r name expected args <<<"$entry"
    # shellcheck disable=SC2086
    if "$helm" template "$release" "$chart" --namespace "$release_ns" $args >/dev/null 2>"$work/err"; then
        fail "helm template accepted: $name ($args)"
    elif ! grep -qi -- "$expected" "$work/err"; then
        fail "helm template refused $name ($args) without mentioning \"$expected\": $(cat "$work/err")"
    else
        echo "refused: $name"
    fi
done

echo "--- chart crds/ == crds/"
diff -r crds "$chart/crds" || fail "$chart/crds differs from crds/ (run scripts/generate.sh)"

echo "--- kubectl kustomize manifests/"
if "$kubectl" kustomize manifests >"$work/kustomize.yaml"; then
    (cd "$work" && "$validate" --strict --quiet -k "${k8s_versions[0]}" kustomize.yaml) || fail "kubernetes-validate of the kustomize output"
else
    fail "kubectl kustomize manifests"
fi

if ((status)); then
    echo "validate-chart.sh: the chart has problems (see FAILED lines above)" >&2
    exit 1
fi
echo "validate-chart.sh: $chart lints, renders and validates for Kubernetes ${k8s_versions[*]}"
