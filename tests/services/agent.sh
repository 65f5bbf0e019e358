#!/usr/bin/env bash
# Play one launched instance: run `puppet agent --test` once against the test
# puppetserver from services.env, with the CSR attributes the generated
# user-data would give a real instance. Exits with puppet's exit code
# (1 while the certificate is unsigned; 0/2 after a catalog run).
#
#   agent.sh --certname C [--challenge X] [--instance-id I]
#            [--dns-alt-names a,b] [--dir D] [--waitforcert N] [-- PUPPET_ARGS...]
#
# Each certname keeps its own confdir/ssldir/vardir under D (default
# $PC_STATE_DIR/agents/<certname>), so rerunning continues where it left off.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-64}"; }

certname="" challenge="" instance_id="" alt_names="" dir="" waitforcert=0
extra=()
while (($#)); do
    case "$1" in
        --certname) certname="${2:?}"; shift 2 ;;
        --challenge) challenge="${2:?}"; shift 2 ;;
        --instance-id) instance_id="${2:?}"; shift 2 ;;
        --dns-alt-names) alt_names="${2:?}"; shift 2 ;;
        --dir) dir="${2:?}"; shift 2 ;;
        --waitforcert) waitforcert="${2:?}"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) usage 0 ;;
        *) pc_log "unknown argument '$1'"; usage >&2 ;;
    esac
done
[[ -n "$certname" ]] || usage >&2
[[ "$certname" =~ ^[a-z0-9._-]+$ ]] || pc_die "certname must be lower case [a-z0-9._-] (got '$certname')"

[[ -r "$PC_SERVICES_ENV" ]] || pc_die "$PC_SERVICES_ENV not found; run tests/services/up.sh"
# shellcheck disable=SC1090
. "$PC_SERVICES_ENV"
[[ -n "${PC_PUPPET_PORT:-}" ]] || pc_die "puppetserver is not running; run tests/services/up.sh puppetserver"

puppet="${PC_PUPPET_BIN:-/usr/bin/puppet}"
[[ -x "$puppet" ]] || pc_die "$puppet not found; run tests/services/install.sh"

dir="${dir:-$PC_STATE_DIR/agents/$certname}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
for sub in etc var ssl run log public code; do
    mkdir -p "$dir/$sub"
done

# YAML double-quoted scalar, so challenges like "no" or "123" stay strings.
yaml_str() {
    local s="${1//\\/\\\\}"
    printf '"%s"' "${s//\"/\\\"}"
}

{
    echo "# Made by tests/services/agent.sh"
    echo "[main]"
    echo "certname = $certname"
    echo "server = $PC_PUPPET_SERVER"
    echo "serverport = $PC_PUPPET_PORT"
    # Avoids a ~30 s stall reusing a keep-alive connection after the CSR PUT.
    echo "http_keepalive_timeout = 0"
    echo "vardir = $dir/var"
    echo "ssldir = $dir/ssl"
    echo "rundir = $dir/run"
    echo "logdir = $dir/log"
    echo "publicdir = $dir/public"
    echo "codedir = $dir/code"
    [[ -n "$alt_names" ]] && echo "dns_alt_names = $alt_names"
} >"$dir/etc/puppet.conf"

# What cloud-init's puppet module writes from the generated user-data.
csr_attributes="$dir/etc/csr_attributes.yaml"
if [[ -n "$challenge" || -n "$instance_id" ]]; then
    {
        echo "---"
        if [[ -n "$challenge" ]]; then
            echo "custom_attributes:"
            echo "  1.2.840.113549.1.9.7: $(yaml_str "$challenge")"
        fi
        if [[ -n "$instance_id" ]]; then
            echo "extension_requests:"
            echo "  pp_instance_id: $(yaml_str "$instance_id")"
        fi
    } >"$csr_attributes"
    chmod 600 "$csr_attributes"
else
    rm -f "$csr_attributes"
fi

# Tests grep this output; ANSI colours only help a human at a terminal.
color=false
[[ -t 1 ]] && color=ansi
rc=0
"$puppet" agent --test --confdir "$dir/etc" --waitforcert "$waitforcert" --color "$color" "${extra[@]}" || rc=$?
exit "$rc"
