#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start_cluster.sh DIR started: cancel its jobs, stop slurmd,
# slurmctld and munged (by the pid files under DIR only) and remove the /etc/slurm/slurm.conf it wrote.
# Safe to call twice or after a failed start.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

DIR=${1:?usage: stop_cluster.sh DIR}
DIR=$(cd "$DIR" 2>/dev/null && pwd) || exit 0
CONF=/etc/slurm/slurm.conf
MARKER="# rpg-pipeline test cluster"

ours=false
if [ -f "$CONF" ] && head -n 1 "$CONF" | grep -q "^$MARKER" && grep -q "socket=$DIR/run/munge.socket" "$CONF"; then
    ours=true
fi

if $ours && [ -f "$DIR/run/slurmctld.pid" ]; then
    # the cluster is private to the tests: every job on it is ours
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    [ -n "$jobs" ] && scancel $jobs 2>/dev/null
fi

# stop PIDFILE: TERM the process named in PIDFILE, KILL it after 10 s
stop() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}
stop "$DIR/run/slurmd.pid"
stop "$DIR/run/slurmctld.pid"
stop "$DIR/run/munged.pid"

if $ours; then
    rm -f "$CONF"
fi
echo "Slurm test cluster in $DIR stopped"
