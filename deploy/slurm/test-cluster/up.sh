#!/usr/bin/env bash
# `just slurm-up`: start a single-node Slurm cluster on this machine for tests.
#
# Renders slurm.conf.in into the state folder ($ACTPATCH_SLURM_DIR, default
# ${TMPDIR:-/tmp}/actpatch-slurm), makes a fresh munge key there, and starts munged,
# slurmctld and slurmd from it. Each daemon's pid is recorded under run/ so that
# `just slurm-down` ends exactly these processes. Needs root (slurmd starts jobs as
# their owner) and the Debian packages slurm-wlm and munge.
#
# Afterwards: `source "$ACTPATCH_SLURM_DIR/env"` (prints its path) points sbatch, squeue
# and friends at this cluster.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${ACTPATCH_SLURM_DIR:-${TMPDIR:-/tmp}/actpatch-slurm}
ctld_port=${ACTPATCH_SLURM_PORT:-16817}
slurmd_port=$((ctld_port + 1))
host=$(hostname -s)
cpus=$(nproc)

fail() { echo "slurm-up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root: slurmd starts each job as the user who submitted it"
for tool in munged mungekey slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool not found; install with: apt-get install -y slurm-wlm munge"
done

alive() { # alive PIDFILE: the recorded process still runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}
if alive "$dir/run/slurmctld.pid" || alive "$dir/run/slurmd.pid" || alive "$dir/run/munged.pid"; then
    fail "a test cluster already runs from $dir (run \`just slurm-down\` first)"
fi

rm -rf "$dir"
mkdir -p "$dir"/{state,run,log,munge} "$dir/spool/slurmd.$host"
chmod 755 "$dir/munge"  # munged wants its socket folder searchable by all
mungekey --create --keyfile="$dir/munge/munge.key" --force
chmod 400 "$dir/munge/munge.key"

sed -e "s|@HOST@|$host|g" -e "s|@USER@|$(id -un)|g" -e "s|@DIR@|$dir|g" \
    -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
    -e "s|@CPUS@|$cpus|g" "$here/slurm.conf.in" >"$dir/slurm.conf"
printf 'export SLURM_CONF=%s\n' "$dir/slurm.conf" >"$dir/env"
export SLURM_CONF="$dir/slurm.conf"

munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"
# -c: start from an empty state (the folder is new anyway); -i: ignore none of it.
slurmctld -c -f "$dir/slurm.conf"
slurmd -f "$dir/slurm.conf"

# Ready when the node takes jobs; bounded so a broken setup fails within 30 s.
for _ in $(seq 1 60); do
    state=$(sinfo --noheader --nodes="$host" --format=%t 2>/dev/null || true)
    case "$state" in
    idle* | mix* | alloc*)
        echo "slurm-up: $host ($cpus CPUs) is $state; state in $dir"
        echo "slurm-up: source $dir/env"
        exit 0
        ;;
    esac
    sleep 0.5
done
echo "slurm-up: the node did not become idle within 30 s (state: ${state:-none})" >&2
tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
exit 1
