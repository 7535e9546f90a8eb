#!/usr/bin/env bash
# `just slurm-down`: stop the test cluster that `just slurm-up` started.
#
# Cancels the cluster's jobs, then ends slurmd, slurmctld and munged by the pids that
# slurm-up recorded under $ACTPATCH_SLURM_DIR/run — each only if that pid still runs
# the same program with this cluster's files on its command line, so a recycled pid is
# never touched. Nothing is ended by name. The state folder is removed afterwards
# unless ACTPATCH_SLURM_KEEP=1 (its log/ has the daemons' logs).
set -euo pipefail
dir=${ACTPATCH_SLURM_DIR:-${TMPDIR:-/tmp}/actpatch-slurm}

if [ ! -d "$dir/run" ]; then
    echo "slurm-down: no test cluster in $dir"
    exit 0
fi
export SLURM_CONF="$dir/slurm.conf"

# ours PIDFILE PROGRAM: prints the recorded pid if it still runs PROGRAM from $dir.
ours() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/cmdline" ] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    case "$cmdline" in
    *"$2"*"$dir"*) echo "$pid" ;;
    *) return 1 ;;
    esac
}

# stop PIDFILE PROGRAM: SIGTERM, up to 15 s to exit, then SIGKILL.
stop() {
    local pid
    if pid=$(ours "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "slurm-down: $2 ($pid) ignored SIGTERM; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "slurm-down: stopped $2 ($pid)"
    fi
    rm -f "$1"
}

if ours "$dir/run/slurmctld.pid" slurmctld >/dev/null; then
    scancel --quiet --full "--user=$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 20); do
        [ -z "$(squeue --noheader --format=%i 2>/dev/null)" ] && break
        sleep 0.5
    done
fi
stop "$dir/run/slurmd.pid" slurmd
stop "$dir/run/slurmctld.pid" slurmctld
stop "$dir/run/munged.pid" munged

if [ "${ACTPATCH_SLURM_KEEP:-0}" = 1 ]; then
    echo "slurm-down: kept $dir"
else
    rm -rf "$dir"
fi
