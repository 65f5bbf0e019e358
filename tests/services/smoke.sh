#!/usr/bin/env bash
# Check the running test services end to end, the way the operator will use
# them: an agent submits a CSR with instance attributes, the CA lists it
# (unsigned: autosign mode off), the operator certificate signs it, the agent
# gets a catalog from a stand-in ENC, then clean revokes it and the agent
# fails. Leaves enc.env/autosign.mode as it found them.
#
#   up.sh && smoke.sh [--certname C]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

certname="smoke-$(date +%s)"
if [[ "${1:-}" == --certname ]]; then certname="${2:?}"; fi

[[ -r "$PC_SERVICES_ENV" ]] || pc_die "$PC_SERVICES_ENV not found; run tests/services/up.sh"
# shellcheck disable=SC1090
. "$PC_SERVICES_ENV"
[[ -n "${PC_CA_URL:-}" ]] || pc_die "puppetserver is not running; run tests/services/up.sh"
if [[ -n "${PC_MOTO_ENDPOINT:-}" ]]; then
    [[ "$(pc_http_code "$PC_MOTO_ENDPOINT/moto-api/")" == 200 ]] || pc_die "moto does not answer"
    echo "ok   moto answers at $PC_MOTO_ENDPOINT"
fi

agent_dir="$PC_STATE_DIR/agents/$certname"
work="$(mktemp -d)"
saved_enc_env="" saved_mode=""
[[ -f "$PC_ENC_ENV" ]] && saved_enc_env="$(<"$PC_ENC_ENV")"
[[ -f "$PC_AUTOSIGN_MODE_FILE" ]] && saved_mode="$(<"$PC_AUTOSIGN_MODE_FILE")"
restore() {
    if [[ -n "$saved_enc_env" ]]; then printf '%s\n' "$saved_enc_env" >"$PC_ENC_ENV"; else rm -f "$PC_ENC_ENV"; fi
    if [[ -n "$saved_mode" ]]; then printf '%s\n' "$saved_mode" >"$PC_AUTOSIGN_MODE_FILE"; else rm -f "$PC_AUTOSIGN_MODE_FILE"; fi
    rm -rf "$work" "$agent_dir"
}
trap restore EXIT
echo off >"$PC_AUTOSIGN_MODE_FILE"

ca() {
    curl -sS --max-time 20 --cacert "$PC_CA_CERT" --cert "$PC_CLIENT_CERT" --key "$PC_CLIENT_KEY" \
        -w '\n%{http_code}' "$@"
}
# ca's output: body lines, then the HTTP code on the last line.
code_of() { tail -n 1 <<<"$1"; }
body_of() { sed '$d' <<<"$1"; }
fail() { pc_log "FAIL: $*"; exit 1; }
ok() { echo "ok   $*"; }

run_agent() {
    local rc=0
    "$PC_SERVICES_DIR/agent.sh" --certname "$certname" "$@" >"$work/agent.out" 2>"$work/agent.err" || rc=$?
    echo "$rc"
}

t="$(pc_now)"
rc="$(run_agent --challenge abc --instance-id i-123)"
[[ "$rc" == 1 ]] || { cat "$work/agent.out" "$work/agent.err" >&2; fail "first agent run exit $rc, want 1"; }
ok "agent submitted a CSR and exited 1 ($(pc_elapsed "$t")s)"

r="$(ca "$PC_CA_URL/puppet-ca/v1/certificate_statuses/any?state=requested")"
[[ "$(code_of "$r")" == 200 ]] || fail "certificate_statuses: HTTP $(code_of "$r")"
body_of "$r" | python3 -c '
import json, sys
want = sys.argv[1]
statuses = json.load(sys.stdin)
assert isinstance(statuses, list), statuses
mine = [s for s in statuses if s["name"] == want]
assert mine and mine[0]["state"] == "requested", mine
' "$certname" || fail "$certname is not listed as requested"
ok "CA lists $certname as requested (operator certificate, certificate_statuses)"

r="$(ca "$PC_CA_URL/puppet-ca/v1/certificate_request/$certname")"
[[ "$(code_of "$r")" == 200 ]] || fail "certificate_request: HTTP $(code_of "$r")"
body_of "$r" >"$work/csr.pem"
csr_text="$(openssl req -in "$work/csr.pem" -noout -text)"
grep -q 'challengePassword *:abc' <<<"$csr_text" || fail "CSR lacks challengePassword abc"
grep -A1 '1.3.6.1.4.1.34380.1.1.2' <<<"$csr_text" | grep -q 'i-123' || fail "CSR lacks pp_instance_id i-123"
ok "CSR PEM carries challengePassword and pp_instance_id"

r="$(ca "$PC_CA_URL/puppet-ca/v1/certificate_status/$certname")"
grep -q '"state":"requested"' <<<"$(body_of "$r")" || fail "$certname is not requested: $(body_of "$r")"
grep -q "certname=$certname mode=off exit=1" "$PC_STATE_DIR/autosign.log" ||
    fail "autosign wrapper was not consulted for $certname"
ok "not signed at submission (autosign mode off)"

r="$(ca -X PUT -H 'Content-Type: application/json' -d '{"desired_state":"signed"}' \
    "$PC_CA_URL/puppet-ca/v1/certificate_status/$certname")"
[[ "$(code_of "$r")" == 204 ]] || fail "sign: HTTP $(code_of "$r"): $(body_of "$r")"
ok "signed through the CA API"

cat >"$work/fake-conductor" <<'EOF'
#!/bin/sh
# Stand-in for `puppet-conductor enc <certname>`.
[ "$1" = enc ] || exit 3
printf 'classes: [role::webserver]\nenvironment: production\nparameters: {}\n'
EOF
chmod 755 "$work/fake-conductor"
echo "PUPPET_CONDUCTOR_BIN=$work/fake-conductor" >"$PC_ENC_ENV"
t="$(pc_now)"
rc="$(run_agent)"
[[ "$rc" == 2 ]] || { cat "$work/agent.out" "$work/agent.err" >&2; fail "agent run after signing exit $rc, want 2"; }
for c in profile::base 'profile::web port=80' role::webserver; do
    grep -q "Notice: puppet-conductor: applied $c\$" "$work/agent.out" || fail "catalog lacks $c"
done
grep -q "certname=$certname exit=0" "$PC_STATE_DIR/enc.log" || fail "enc.log has no call for $certname"
ok "agent applied role::webserver, profile::base, profile::web from the ENC, exit 2 ($(pc_elapsed "$t")s)"

r="$(ca -X PUT -H 'Content-Type: application/json' -d "{\"certnames\":[\"$certname\"]}" "$PC_CA_URL/puppet-ca/v1/clean")"
[[ "$(code_of "$r")" == 200 ]] || fail "clean: HTTP $(code_of "$r"): $(body_of "$r")"
ok "cleaned (revoked + deleted) through the CA API"

rc="$(run_agent)"
[[ "$rc" != 0 && "$rc" != 2 ]] || fail "agent still gets a catalog after clean (exit $rc)"
grep -q 'certificate unknown\|revoked' "$work/agent.err" "$work/agent.out" || fail "agent failed, but not on its certificate"
ok "agent with the revoked certificate fails (exit $rc)"
echo "smoke: all checks passed for $certname"
