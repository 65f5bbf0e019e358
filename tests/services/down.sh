#!/usr/bin/env bash
# Stop the services up.sh started (by their PID files only).
#
#   down.sh [moto|puppetserver]...   stop those (default: both)
#   down.sh --purge                  stop both and delete $PC_STATE_DIR
#                                    (CA, certificates, agents, logs)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

purge=0
targets=()
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        moto | puppetserver) targets+=("$arg") ;;
        -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) pc_die "unknown argument '$arg' (expected: --purge, moto, puppetserver)" ;;
    esac
done
if ((purge)) || ((${#targets[@]} == 0)); then
    targets=(moto puppetserver)
fi

if [[ ! -e "$PC_STATE_DIR/.puppet-conductor-state" ]]; then
    # Only ever touch (and delete) a directory up.sh made.
    if ((purge)) && [[ -d "$PC_STATE_DIR" ]]; then
        pc_die "$PC_STATE_DIR was not made by up.sh; not deleting it"
    fi
    echo "nothing to stop: no up.sh state in $PC_STATE_DIR"
    exit 0
fi
pc_lock

for t in "${targets[@]}"; do
    case "$t" in
        moto)
            port="$(cat "$PC_STATE_DIR/moto.port" 2>/dev/null || true)"
            pid="$(pc_moto_pid || true)"
            if pc_stop_pid "$(pc_moto_pidfile)" "$(pc_moto_marker "$port")" 10; then
                echo "moto: stopped pid $pid"
            else
                echo "moto: not running"
            fi
            ;;
        puppetserver)
            pid="$(pc_ps_pid || true)"
            # Stops in 2-3 s on SIGTERM; give a busy JVM more before SIGKILL.
            if pc_stop_pid "$(pc_ps_pidfile)" "$(pc_ps_marker)" 30; then
                echo "puppetserver: stopped pid $pid"
            else
                echo "puppetserver: not running"
            fi
            ;;
    esac
done

if ((purge)); then
    [[ "$PC_STATE_DIR" == /*/* ]] || pc_die "refusing to delete '$PC_STATE_DIR'"
    rm -rf -- "$PC_STATE_DIR"
    echo "purged $PC_STATE_DIR"
elif pc_moto_pid >/dev/null || pc_ps_pid >/dev/null; then
    pc_write_services_env
else
    rm -f "$PC_SERVICES_ENV"
fi
