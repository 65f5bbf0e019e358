#!/usr/bin/env bash
# Start (or reuse) the local test services on 127.0.0.1 and write
# $PC_STATE_DIR/services.env for the tests to source.
#
#   up.sh                 moto and puppetserver
#   up.sh moto            moto only
#   up.sh puppetserver    puppetserver only
#
# Needs tests/services/install.sh to have run. State lives under
# ${PC_STATE_DIR:-/tmp/puppet-conductor}; stop with down.sh.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MOTO_TIMEOUT="${PC_MOTO_TIMEOUT:-30}"
# The first start generates the CA (~55 s measured); leave room for slow CI.
PS_TIMEOUT="${PC_PUPPETSERVER_TIMEOUT:-180}"
PS_SHARE=/usr/share/puppetserver
PS_PKG_CONF=/etc/puppet/puppetserver
SNIPPET="$PC_SERVICES_DIR/../../manifests/puppetserver/puppet.conf.snippet"
AUTH_RULE="$PC_SERVICES_DIR/../../manifests/puppetserver/auth-conf-rule.conf"

targets=()
for arg in "$@"; do
    case "$arg" in
        moto | puppetserver) targets+=("$arg") ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) pc_die "unknown argument '$arg' (expected: moto, puppetserver)" ;;
    esac
done
((${#targets[@]})) || targets=(moto puppetserver)

# Paths are written unquoted into puppet.conf, HOCON and shell wrappers.
[[ "$PC_STATE_DIR" =~ ^/[A-Za-z0-9_./-]+$ ]] ||
    pc_die "PC_STATE_DIR must be an absolute path of [A-Za-z0-9_./-] (got '$PC_STATE_DIR')"
# Never scatter files into (and let down.sh --purge delete) a directory that
# is not ours.
if [[ -d "$PC_STATE_DIR" && ! -e "$PC_STATE_DIR/.puppet-conductor-state" ]] &&
    [[ -n "$(ls -A "$PC_STATE_DIR")" ]]; then
    pc_die "$PC_STATE_DIR exists, is not empty and was not made by up.sh; choose another PC_STATE_DIR"
fi
mkdir -p "$PC_STATE_DIR"
touch "$PC_STATE_DIR/.puppet-conductor-state"

pc_lock

# ---------------------------------------------------------------- moto

start_moto() {
    local port pid t0 ps_port=()
    if pid="$(pc_moto_pid)"; then
        port="$(<"$PC_STATE_DIR/moto.port")"
        # It may still be starting under another up.sh; waiting covers both.
        pc_wait_for_url "http://127.0.0.1:$port/moto-api/" "$MOTO_TIMEOUT" \
            "$(pc_moto_pidfile)" "$(pc_moto_marker "$port")" "$(pc_moto_log)" ||
            pc_die "moto (pid $pid) is running but does not answer; run down.sh moto"
        echo "moto: reusing pid $pid on 127.0.0.1:$port"
        return
    fi
    local bin="$PC_TOOLS_DIR/bin/moto_server"
    [[ -x "$bin" ]] || pc_die "$bin not found; run tests/services/install.sh"
    [[ -s "$PC_STATE_DIR/puppetserver.port" ]] && ps_port=("$(<"$PC_STATE_DIR/puppetserver.port")")
    port="$(pc_pick_port moto "${ps_port[@]}")"
    echo "$port" >"$PC_STATE_DIR/moto.port"
    echo "=== $(date -u +%FT%TZ) starting moto on port $port" >>"$(pc_moto_log)"
    t0="$(pc_now)"
    pc_spawn "$(pc_moto_pidfile)" "$(pc_moto_log)" "$PC_STATE_DIR" \
        "$bin" -H 127.0.0.1 -p "$port"
    pc_wait_for_url "http://127.0.0.1:$port/moto-api/" "$MOTO_TIMEOUT" \
        "$(pc_moto_pidfile)" "$(pc_moto_marker "$port")" "$(pc_moto_log)" || {
        pc_stop_pid "$(pc_moto_pidfile)" "$(pc_moto_marker "$port")" 5 || true
        pc_die "moto did not start"
    }
    echo "moto: started pid $(<"$(pc_moto_pidfile)") on 127.0.0.1:$port in $(pc_elapsed "$t0")s"
}

# ---------------------------------------------------------------- puppetserver

# The [server] settings of manifests/puppetserver/puppet.conf.snippet, with the
# ENC and autosign paths replaced by this state dir's logging wrappers, so the
# documented snippet and the tested configuration cannot drift apart.
server_settings_from_snippet() {
    local line key value in_server=0 seen=" "
    [[ -r "$SNIPPET" ]] || pc_die "$SNIPPET not found"
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        if [[ "$line" =~ ^\[([a-z]+)\][[:space:]]*$ ]]; then
            in_server=0
            [[ "${BASH_REMATCH[1]}" == server ]] && in_server=1
            continue
        fi
        ((in_server)) || continue
        [[ "$line" =~ ^[[:space:]]*([a-z_]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] ||
            pc_die "cannot parse '$line' in $SNIPPET"
        key="${BASH_REMATCH[1]}"
        value="${BASH_REMATCH[2]}"
        case "$key" in
            external_nodes) value="$PC_PS_DIR/enc-wrapper.sh" ;;
            autosign) value="$PC_PS_DIR/autosign-wrapper.sh" ;;
        esac
        echo "$key = $value"
        seen+="$key "
    done <"$SNIPPET"
    for key in node_terminus external_nodes autosign; do
        [[ "$seen" == *" $key "* ]] || pc_die "$SNIPPET has no $key in [server]"
    done
}

# Puppetserver runs both with its own (scrubbed) environment and cwd
# /usr/share/puppetserver, so everything they need comes from files in the
# state dir: enc.env (PUPPET_CONDUCTOR_BIN plus the records settings the
# binary reads) and autosign.mode.
write_wrappers() {
    cat >"$PC_PS_DIR/enc-wrapper.sh" <<EOF
#!/bin/bash
# ENC for the test puppetserver (external_nodes); made by tests/services/up.sh.
# Runs \$PUPPET_CONDUCTOR_BIN enc -- <certname> with the settings from enc.env and
# logs one line per call. Puppetserver calls it twice per agent run.
set -uo pipefail
state=$PC_STATE_DIR
certname="\${1:-}"
rc=0
t0=\$(date +%s%N)
if [[ -f "\$state/enc.env" ]]; then
    set -a
    # shellcheck disable=SC1091
    . "\$state/enc.env"
    set +a
fi
if [[ -z "\${PUPPET_CONDUCTOR_BIN:-}" ]]; then
    echo "enc-wrapper: PUPPET_CONDUCTOR_BIN is not set; write it to \$state/enc.env" >&2
    rc=1
else
    "\$PUPPET_CONDUCTOR_BIN" enc -- "\$certname" || rc=\$?
fi
printf '%s certname=%s exit=%s ms=%s\n' "\$(date -u +%FT%TZ)" "\$certname" "\$rc" \
    "\$(( (\$(date +%s%N) - t0) / 1000000 ))" >>"\$state/enc.log"
exit "\$rc"
EOF
    # No line of this script may be a glob matching a certname: should it ever
    # lose its exec bit, puppetserver reads it as an autosign.conf whitelist.
    cat >"$PC_PS_DIR/autosign-wrapper.sh" <<EOF
#!/bin/bash
# Policy-based autosign for the test puppetserver; made by tests/services/up.sh.
# autosign.mode "policy": run \$PUPPET_CONDUCTOR_BIN autosign -- <certname>, CSR
# PEM on stdin. Anything else (absent, "off"): exit 1, the CSR stays requested.
set -uo pipefail
state=$PC_STATE_DIR
certname="\${1:-}"
mode=off
t0=\$(date +%s%N)
if [[ -f "\$state/autosign.mode" ]]; then
    mode="\$(tr -d '[:space:]' <"\$state/autosign.mode")"
fi
rc=1
if [[ "\$mode" == policy ]]; then
    if [[ -f "\$state/enc.env" ]]; then
        set -a
        # shellcheck disable=SC1091
        . "\$state/enc.env"
        set +a
    fi
    if [[ -z "\${PUPPET_CONDUCTOR_BIN:-}" ]]; then
        echo "autosign-wrapper: PUPPET_CONDUCTOR_BIN is not set; write it to \$state/enc.env" >&2
        cat >/dev/null
    else
        rc=0
        "\$PUPPET_CONDUCTOR_BIN" autosign -- "\$certname" || rc=\$?
    fi
else
    # Read the CSR anyway so puppetserver never writes into a closed pipe.
    cat >/dev/null
fi
printf '%s certname=%s mode=%s exit=%s ms=%s\n' "\$(date -u +%FT%TZ)" "\$certname" "\$mode" "\$rc" \
    "\$(( (\$(date +%s%N) - t0) / 1000000 ))" >>"\$state/autosign.log"
exit "\$rc"
EOF
    chmod 755 "$PC_PS_DIR/enc-wrapper.sh" "$PC_PS_DIR/autosign-wrapper.sh"
}

# Stock auth.conf with the operator rule as the first element of `rules`.
write_auth_conf() {
    local out="$PC_PS_DIR/conf.d/auth.conf"
    awk -v rule="$AUTH_RULE" '
        !done && /^[[:space:]]*rules:[[:space:]]*\[[[:space:]]*$/ {
            print
            while ((getline l < rule) > 0) print "        " l
            print "        ,"
            done = 1
            next
        }
        { print }
        END { if (!done) exit 1 }
    ' "$PS_PKG_CONF/conf.d/auth.conf" >"$out" ||
        pc_die "could not find 'rules: [' in $PS_PKG_CONF/conf.d/auth.conf"
}

write_puppetserver_layout() {
    local port="$1" d="$PC_PS_DIR" sub
    for sub in conf.d services.d etc code var run log ssl ca public jruby-gems; do
        mkdir -p "$d/$sub"
    done
    cp "$PS_PKG_CONF/services.d/bootstrap.cfg" "$PS_PKG_CONF/services.d/ca.cfg" "$d/services.d/"
    cp "$PS_PKG_CONF/conf.d/web-routes.conf" "$PS_PKG_CONF/conf.d/metrics.conf" "$d/conf.d/"
    write_auth_conf
    write_wrappers

    cat >"$d/logback.xml" <<EOF
<configuration scan="false">
    <appender name="F1" class="ch.qos.logback.core.FileAppender">
        <file>$d/log/puppetserver.log</file>
        <append>true</append>
        <encoder>
            <pattern>%d{yyyy-MM-dd'T'HH:mm:ss.SSSXXX} %-5p [%t] [%c{2}] %m%n</pattern>
        </encoder>
    </appender>
    <logger name="org.eclipse.jetty" level="INFO"/>
    <logger name="org.apache.http" level="INFO"/>
    <root level="info">
        <appender-ref ref="F1"/>
    </root>
</configuration>
EOF
    cat >"$d/request-logging.xml" <<EOF
<configuration debug="false">
    <appender name="FILE" class="ch.qos.logback.core.FileAppender">
        <file>$d/log/access.log</file>
        <append>true</append>
        <encoder>
            <pattern>%h %l %u [%t] "%r" %s %b "%i{User-Agent}" %D</pattern>
        </encoder>
    </appender>
    <appender-ref ref="FILE"/>
</configuration>
EOF
    cat >"$d/conf.d/global.conf" <<EOF
global: {
    logging-config: "$d/logback.xml"
}
EOF
    cat >"$d/conf.d/webserver.conf" <<EOF
webserver: {
    access-log-config: "$d/request-logging.xml"
    client-auth: want
    ssl-host: 127.0.0.1
    ssl-port: $port
    # With TLS 1.3, Ruby's net/http stalls ~30 s reusing the keep-alive
    # connection after an agent's CSR PUT.
    ssl-protocols: [TLSv1.2]
}
EOF
    cat >"$d/conf.d/puppetserver.conf" <<EOF
jruby-puppet: {
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: "$d/jruby-gems"
    gem-path: ["$d/jruby-gems", "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: "$d/etc"
    server-code-dir: "$d/code"
    server-var-dir: "$d/var"
    server-run-dir: "$d/run"
    server-log-dir: "$d/log"
    # One JRuby is plenty for tests and saves ~300 MB and startup time.
    max-active-instances: 1
}
# No phoning home from CI.
product: {
    check-for-updates: false
}
dropsonde: {
    enabled: false
}
EOF
    cat >"$d/conf.d/ca.conf" <<EOF
certificate-authority: {
    # The operator decides whether DNS alt names are acceptable
    # (PuppetMaster signing.allowDnsAltNames); the CA must not pre-empt that
    # decision in tests.
    allow-subject-alt-names: true
}
EOF
    {
        cat <<EOF
# Test puppetserver; made by tests/services/up.sh (regenerated on each start).
[main]
certname = $PC_PS_CERTNAME
server = 127.0.0.1
serverport = $port
dns_alt_names = localhost,puppet,IP:127.0.0.1
codedir = $d/code
vardir = $d/var
ssldir = $d/ssl
logdir = $d/log
rundir = $d/run
publicdir = $d/public

[server]
cadir = $d/ca
# From manifests/puppetserver/puppet.conf.snippet:
EOF
        server_settings_from_snippet
    } >"$d/etc/puppet.conf"
}

# Test Puppet code from tests/services/puppet-code, replaced only when it
# changed so a running server never sees a half-copied tree.
sync_code() {
    local src="$PC_SERVICES_DIR/puppet-code/environments" dst="$PC_PS_DIR/code/environments" tmp
    mkdir -p "$PC_PS_DIR/code"
    if [[ -d "$dst" ]] && diff -rq "$src" "$dst" >/dev/null 2>&1; then
        return
    fi
    tmp="$(mktemp -d "$PC_PS_DIR/code/.environments.XXXXXX")"
    cp -R "$src/." "$tmp/"
    chmod -R a+rX "$tmp"
    rm -rf "$dst"
    mv "$tmp" "$dst"
}

ps_url() { echo "https://127.0.0.1:$(<"$PC_STATE_DIR/puppetserver.port")$1"; }

operator_curl() {
    curl -sS --max-time 10 --cacert "$PC_OPERATOR_TLS_DIR/ca.crt" \
        --cert "$PC_OPERATOR_TLS_DIR/tls.crt" --key "$PC_OPERATOR_TLS_DIR/tls.key" "$@"
}

# 0 when the operator certificate can list certificate statuses (mutual TLS
# plus the auth.conf rule), which is exactly what the operator will do.
operator_cert_works() {
    [[ -s "$PC_OPERATOR_TLS_DIR/tls.crt" && -s "$PC_OPERATOR_TLS_DIR/tls.key" ]] || return 1
    local body
    body="$(operator_curl -f "$(ps_url /puppet-ca/v1/certificate_statuses/any)" 2>/dev/null)" || return 1
    python3 -c 'import json, sys; sys.exit(0 if isinstance(json.loads(sys.argv[1]), list) else 1)' "$body"
}

ensure_operator_cert() {
    local cn="$PC_OPERATOR_CERTNAME" ssl="$PC_PS_DIR/ssl" out
    local cert="$ssl/certs/$PC_OPERATOR_CERTNAME.pem" key="$ssl/private_keys/$PC_OPERATOR_CERTNAME.pem"
    operator_cert_works && return 0
    mkdir -p "$PC_OPERATOR_TLS_DIR"
    chmod 700 "$PC_OPERATOR_TLS_DIR"
    local attempt
    for attempt in 1 2; do
        if [[ ! -s "$cert" || ! -s "$key" ]]; then
            # Signs through the running CA with the server's own pp_cli_auth
            # certificate; first prints a harmless "could not be found".
            out="$(puppetserver ca generate --certname "$cn" --config "$PC_PS_DIR/etc/puppet.conf" 2>&1)" ||
                pc_die "puppetserver ca generate --certname $cn failed:"$'\n'"$out"
        fi
        install -m 644 "$cert" "$PC_OPERATOR_TLS_DIR/tls.crt"
        install -m 600 "$key" "$PC_OPERATOR_TLS_DIR/tls.key"
        install -m 644 "$ssl/certs/ca.pem" "$PC_OPERATOR_TLS_DIR/ca.crt"
        operator_cert_works && return 0
        # Revoked or from an older CA (e.g. a test cleaned every certificate):
        # clean it on the CA and issue a new one.
        ((attempt == 1)) || break
        pc_log "operator certificate rejected; issuing a new one"
        puppetserver ca clean --certname "$cn" --config "$PC_PS_DIR/etc/puppet.conf" >/dev/null 2>&1 || true
        rm -f "$cert" "$key" "$ssl/public_keys/$cn.pem"
    done
    pc_log "HTTP answer with the operator certificate:"
    operator_curl -i "$(ps_url /puppet-ca/v1/certificate_statuses/any)" >&2 || true
    pc_die "the operator certificate cannot use the CA API"
}

start_puppetserver() {
    local port pid t0 moto_port=()
    local ready_path=/puppet-ca/v1/certificate/ca
    mkdir -p "$PC_PS_DIR/log"
    # Wrappers and code are safe to refresh under a running server.
    if [[ -f "$PC_PS_DIR/etc/puppet.conf" ]]; then write_wrappers; fi
    sync_code
    if pid="$(pc_ps_pid)" && [[ -s "$PC_STATE_DIR/puppetserver.port" ]]; then
        port="$(<"$PC_STATE_DIR/puppetserver.port")"
        pc_wait_for_url "$(ps_url "$ready_path")" "$PS_TIMEOUT" "$(pc_ps_pidfile)" "$(pc_ps_marker)" \
            "$(pc_ps_log)" -k ||
            pc_die "puppetserver (pid $pid) is running but its CA does not answer; run down.sh puppetserver"
        ensure_operator_cert
        echo "puppetserver: reusing pid $pid on 127.0.0.1:$port"
        return
    fi
    [[ -r "$PS_SHARE/puppetserver.jar" ]] || pc_die "$PS_SHARE/puppetserver.jar not found; run tests/services/install.sh"
    command -v java >/dev/null || pc_die "java not found; run tests/services/install.sh"
    [[ -s "$PC_STATE_DIR/moto.port" ]] && moto_port=("$(<"$PC_STATE_DIR/moto.port")")
    port="$(pc_pick_port puppetserver "${moto_port[@]}")"
    echo "$port" >"$PC_STATE_DIR/puppetserver.port"
    write_puppetserver_layout "$port"
    [[ -x "$PC_PS_DIR/autosign-wrapper.sh" ]] || pc_die "autosign wrapper is not executable"

    local first="" attempt
    [[ -s "$PC_PS_DIR/ca/ca_crt.pem" ]] || first=" (first start: generating the CA)"
    t0="$(pc_now)"
    for attempt in 1 2; do
        echo "=== $(date -u +%FT%TZ) starting puppetserver on port $port$first" >>"$(pc_ps_console_log)"
        spawn_puppetserver && break
        # A JVM that dies before it logs anything leaves no trace of why: show what the
        # machine had, then try once more.
        pc_log "puppetserver exited while starting (attempt $attempt); disk, memory, JVM crash logs:"
        df -h "$PC_STATE_DIR" >&2 || true
        free -m >&2 || true
        pc_log_tail "$PC_PS_DIR"/log/hs_err_*.log
        ((attempt == 1)) || pc_die "puppetserver did not start"
    done
    local started
    started="$(pc_elapsed "$t0")"
    ensure_operator_cert
    echo "puppetserver: started pid $(<"$(pc_ps_pidfile)") on 127.0.0.1:$port in ${started}s$first"
}

# Starts the JVM and waits for its CA: 0 once it answers, 1 when the process died
# first; exits when it runs but does not answer in time (a second try would not help).
spawn_puppetserver() {
    local ready_path=/puppet-ca/v1/certificate/ca
    # Run the jar directly: the packaged launcher hard-codes /etc paths and
    # runuser. A scrubbed environment, as under systemd, keeps the ENC and
    # autosign honest about what they get from enc.env.
    local envv=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        HOME="${HOME:-/root}" LANG=C.UTF-8)
    [[ -n "${JAVA_HOME:-}" ]] && envv+=(JAVA_HOME="$JAVA_HOME")
    pc_spawn "$(pc_ps_pidfile)" "$(pc_ps_console_log)" "$PS_SHARE" \
        env -i "${envv[@]}" \
        java -Xms512m -Xmx1g -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -XX:ErrorFile="$PC_PS_DIR/log/hs_err_%p.log" \
        -Djruby.logger.class=com.puppetlabs.jruby_utils.jruby.Slf4jLogger \
        -Djruby.lib=/usr/share/jruby/lib \
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.base/java.io=ALL-UNNAMED \
        -jar "$PS_SHARE/puppetserver.jar" \
        --config "$PC_PS_DIR/conf.d" --bootstrap-config "$PC_PS_DIR/services.d"
    pc_wait_for_url "$(ps_url "$ready_path")" "$PS_TIMEOUT" "$(pc_ps_pidfile)" "$(pc_ps_marker)" \
        "$(pc_ps_log)" -k && return 0
    pc_log_tail "$(pc_ps_console_log)"
    # Leave nothing half-started behind. Stopping a process that still runs means it
    # did not answer in time.
    if pc_stop_pid "$(pc_ps_pidfile)" "$(pc_ps_marker)" 30; then
        pc_die "puppetserver did not answer within ${PS_TIMEOUT}s"
    fi
    return 1
}

for t in "${targets[@]}"; do
    case "$t" in
        moto) start_moto ;;
        puppetserver) start_puppetserver ;;
    esac
done
pc_write_services_env
echo "services: . $PC_SERVICES_ENV"
