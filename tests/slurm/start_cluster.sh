#!/usr/bin/env bash
# Start a private single-node Slurm cluster on this machine: munged, slurmctld and slurmd, all with their
# state, sockets, pid files and logs under DIR; partition "debug" (default) holds this host.
#   tests/slurm/start_cluster.sh DIR      (as root; stop with tests/slurm/stop_cluster.sh DIR)
# Slurm clients inside jobs (srun) only look at /etc/slurm/slurm.conf (the Snakemake job step drops
# SLURM_CONF from their environment), so the config is installed there; a slurm.conf that this script did
# not write is never overwritten (exit status 5). Exit status 0 once the node is idle.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR=${1:?usage: start_cluster.sh DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
CONF=/etc/slurm/slurm.conf
MARKER="# rpg-pipeline test cluster"
TIMEOUT=${SLURM_TEST_START_TIMEOUT:-60}

die() { echo "start_cluster.sh: $1" >&2; exit "${2:-1}"; }
[ "$(id -u)" -eq 0 ] || die "must run as root" 2
for c in munged munge slurmctld slurmd sinfo scontrol; do
    command -v "$c" >/dev/null || die "$c not installed (tests/slurm/install_slurm.sh)" 3
done
if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -q "^$MARKER"; then
    die "$CONF exists and belongs to another Slurm set-up; not touching it" 5
fi
if [ -e "$CONF" ] && scontrol ping >/dev/null 2>&1; then
    die "a test cluster is already running ($(grep -o 'AuthInfo=socket=[^ ]*' "$CONF")); stop it first" 5
fi

mkdir -p "$DIR"/{state,spool,run,log}
DIR=$(cd "$DIR" && pwd)
chmod 700 "$DIR"   # munged refuses sockets/keys in group- or world-writable directories

# port_free PORT: true when nothing listens on 127.0.0.1:PORT
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# next_free PORT: first free port from PORT on
next_free() { local p=$1; until port_free "$p"; do p=$((p + 1)); done; echo "$p"; }
CTLD_PORT=$(next_free "${SLURM_TEST_PORT:-16817}")
SLURMD_PORT=$(next_free $((CTLD_PORT + 1)))

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# munge: a fresh key and a private daemon (the system's /etc/munge is left alone)
head -c 1024 /dev/urandom >"$DIR/run/munge.key"
chmod 600 "$DIR/run/munge.key"
munged --force --key-file="$DIR/run/munge.key" --socket="$DIR/run/munge.socket" \
    --pid-file="$DIR/run/munged.pid" --seed-file="$DIR/run/munge.seed" --log-file="$DIR/log/munged.log"
munge -S "$DIR/run/munge.socket" -n | unmunge -S "$DIR/run/munge.socket" >/dev/null \
    || die "munged does not answer (see $DIR/log/munged.log)"

sed -e "s|@HOST@|$HOST|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$HERE/slurm.conf.in" >"$DIR/slurm.conf"
mkdir -p /etc/slurm
cp "$DIR/slurm.conf" "$CONF"

slurmctld -f "$CONF"
slurmd -f "$CONF" -N "$HOST"

# wait until the node is idle (slurmd registered, ReturnToService=2 clears a stale DOWN state)
state=""
for _ in $(seq "$TIMEOUT"); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n 1 || true)
    [ "$state" = "idle" ] && break
    sleep 1
done
if [ "$state" != "idle" ]; then
    tail -n 20 "$DIR"/log/*.log >&2 || true
    die "node $HOST not idle after ${TIMEOUT}s (state: '${state:-none}')" 6
fi
echo "Slurm test cluster up: node $HOST ($CPUS CPUs, $MEM_MB MB), partition debug, ports $CTLD_PORT/$SLURMD_PORT, dir $DIR"
