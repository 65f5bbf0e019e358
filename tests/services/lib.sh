# shellcheck shell=bash disable=SC2034 # constants here are used by the sourcing scripts
# Shared helpers for the local test-service scripts (install.sh, up.sh,
# down.sh, agent.sh). Sourced, never executed.

PC_SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PC_STATE_DIR="${PC_STATE_DIR:-/tmp/puppet-conductor}"
PC_TOOLS_DIR="${PC_TOOLS_DIR:-$HOME/.cache/puppet-conductor/venv}"
PC_HELM_DIR="${PC_HELM_DIR:-$HOME/.cache/puppet-conductor/helm}"
PC_SERVICES_ENV="$PC_STATE_DIR/services.env"
export PC_STATE_DIR PC_TOOLS_DIR PC_HELM_DIR PC_SERVICES_ENV

# The operator's client certificate; its certname is what the auth.conf rule
# in manifests/puppetserver/auth-conf-rule.conf allows.
PC_OPERATOR_CERTNAME="puppet-conductor-operator"
PC_PS_CERTNAME="pc-puppetserver"
PC_PS_DIR="$PC_STATE_DIR/puppetserver"
PC_OPERATOR_TLS_DIR="$PC_STATE_DIR/operator-tls"

pc_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
pc_die() { pc_log "error: $*"; exit 1; }

pc_now() { date +%s.%N; }
# Seconds elapsed since a pc_now value, with one decimal.
pc_elapsed() { awk -v s="$1" -v e="$(pc_now)" 'BEGIN { printf "%.1f", e - s }'; }

pc_port_is_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# A free TCP port on 127.0.0.1 other than the ones given as arguments (two
# services picked back to back must not get the same one before either binds).
pc_free_port() {
    python3 - "$@" <<'EOF'
import socket, sys
avoid = {int(p) for p in sys.argv[1:]}
held = []
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if port not in avoid:
        print(port)
        break
    held.append(s)
EOF
}

# Port recorded for a service last time if it is still free (keeps services.env
# stable across restarts), otherwise a fresh one.
pc_pick_port() {
    local name="$1"; shift
    local file="$PC_STATE_DIR/$name.port" old=""
    [[ -s "$file" ]] && old="$(<"$file")"
    if [[ -n "$old" ]] && pc_port_is_free "$old"; then
        echo "$old"
    else
        pc_free_port "$@"
    fi
}

# Serialise up.sh/down.sh runs on one state dir (parallel test jobs must not
# start a service twice). Held on fd 9 until the script exits.
pc_lock() {
    exec 9>"$PC_STATE_DIR/.lock"
    flock -w 600 9 || pc_die "timed out waiting for $PC_STATE_DIR/.lock (another up.sh/down.sh?)"
}

# HTTP status of a URL ("000" when nothing answers); extra args go to curl.
pc_http_code() {
    local url="$1"; shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true
}

# The PID in a pid file, if that process is alive and its command line still
# contains the marker (a recycled PID must never be mistaken for our service).
pc_pid_running() {
    local pidfile="$1" marker="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker" || return 1
    echo "$pid"
}

# Start a command in its own session (setsid: a SIGHUP from the caller's
# terminal must not reach it — puppetserver treats HUP as "reload") and record
# the PID of the process that execs the command itself.
pc_spawn() {
    local pidfile="$1" logfile="$2" cwd="$3"; shift 3
    rm -f "$pidfile"
    (
        cd "$cwd" || exit 1
        # shellcheck disable=SC2016 # $$ is expanded by the inner bash
        # 9>&-: the service must not inherit the state-dir lock (pc_lock).
        setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
    )
    local i
    for i in $(seq 50); do
        [[ -s "$pidfile" ]] && return 0
        sleep 0.1
    done
    pc_die "could not start $1 (no pid file $pidfile)"
}

# Wait until URL answers 200. Fails early when the process dies, and on
# failure shows the tail of its log.
pc_wait_for_url() {
    local url="$1" timeout="$2" pidfile="$3" marker="$4" logfile="$5"; shift 5
    local deadline=$((SECONDS + timeout)) code
    while :; do
        code="$(pc_http_code "$url" "$@")"
        [[ "$code" == 200 ]] && return 0
        if ! pc_pid_running "$pidfile" "$marker" >/dev/null; then
            pc_log "error: process from $pidfile exited before $url answered (last HTTP code $code)"
            pc_log_tail "$logfile"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            pc_log "error: $url did not answer 200 within ${timeout}s (last HTTP code $code)"
            pc_log_tail "$logfile"
            return 1
        fi
        sleep 1
    done
}

pc_log_tail() {
    local f
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        printf -- '----- last 40 lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
        printf -- '-----\n' >&2
    done
}

# SIGTERM, wait up to $3 seconds, then SIGKILL; removes the pid file.
pc_stop_pid() {
    local pidfile="$1" marker="$2" timeout="${3:-20}" pid i
    if ! pid="$(pc_pid_running "$pidfile" "$marker")"; then
        rm -f "$pidfile"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        pc_log "pid $pid ignored SIGTERM for ${timeout}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# ---- per-service identity (pid file, process marker, readiness URL) ----

pc_moto_pidfile() { echo "$PC_STATE_DIR/moto.pid"; }
pc_moto_log() { echo "$PC_STATE_DIR/moto.log"; }
# Matches the command line up.sh gives moto_server (its port is unique on the
# host; the trailing space keeps port 1234 from matching 12345).
pc_moto_marker() { echo "moto_server -H 127.0.0.1 -p $1 "; }
pc_moto_pid() {
    local port
    [[ -s "$PC_STATE_DIR/moto.port" ]] || return 1
    port="$(<"$PC_STATE_DIR/moto.port")"
    pc_pid_running "$(pc_moto_pidfile)" "$(pc_moto_marker "$port")"
}

pc_ps_pidfile() { echo "$PC_PS_DIR/puppetserver.pid"; }
# The conf.d path is unique to this state dir, so servers of other state dirs
# are never touched.
pc_ps_marker() { echo "--config $PC_PS_DIR/conf.d"; }
pc_ps_pid() { pc_pid_running "$(pc_ps_pidfile)" "$(pc_ps_marker)"; }
pc_ps_log() { echo "$PC_PS_DIR/log/puppetserver.log"; }
pc_ps_console_log() { echo "$PC_PS_DIR/log/console.log"; }

# Write services.env for whichever services are running: variables of a
# stopped service are left out so tests can skip on their absence.
pc_write_services_env() {
    local tmp moto_port ps_port
    mkdir -p "$PC_STATE_DIR"
    tmp="$(mktemp "$PC_STATE_DIR/.services.env.XXXXXX")"
    {
        echo "# Written by tests/services/up.sh; source it: . $PC_SERVICES_ENV"
        printf 'export PC_STATE_DIR=%q\n' "$PC_STATE_DIR"
        printf 'export PC_SERVICES_ENV=%q\n' "$PC_SERVICES_ENV"
        if pc_moto_pid >/dev/null; then
            moto_port="$(<"$PC_STATE_DIR/moto.port")"
            printf 'export PC_MOTO_ENDPOINT=%q\n' "http://127.0.0.1:$moto_port"
        fi
        if pc_ps_pid >/dev/null; then
            ps_port="$(<"$PC_STATE_DIR/puppetserver.port")"
            printf 'export PC_PUPPET_SERVER=%q\n' "127.0.0.1"
            printf 'export PC_PUPPET_PORT=%q\n' "$ps_port"
            printf 'export PC_CA_URL=%q\n' "https://127.0.0.1:$ps_port"
            printf 'export PC_CA_CERT=%q\n' "$PC_OPERATOR_TLS_DIR/ca.crt"
            printf 'export PC_CLIENT_CERT=%q\n' "$PC_OPERATOR_TLS_DIR/tls.crt"
            printf 'export PC_CLIENT_KEY=%q\n' "$PC_OPERATOR_TLS_DIR/tls.key"
            printf 'export PC_PUPPET_CONF=%q\n' "$PC_PS_DIR/etc/puppet.conf"
            printf 'export PC_PUPPET_CODEDIR=%q\n' "$PC_PS_DIR/code"
            printf 'export PC_PUPPETSERVER_LOG=%q\n' "$(pc_ps_log)"
            printf 'export PC_ENC_ENV=%q\n' "$PC_STATE_DIR/enc.env"
            printf 'export PC_AUTOSIGN_MODE_FILE=%q\n' "$PC_STATE_DIR/autosign.mode"
        fi
    } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$PC_SERVICES_ENV"
}
