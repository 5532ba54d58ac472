#!/usr/bin/env bash
# Install a single-node Slurm (slurmctld, slurmd, client tools) and munge from Debian/Ubuntu packages,
# unless they are installed already. Needs root and apt-get. Exit status != 0 when that is impossible.
# Services the packages may start are not used: start_cluster.sh runs private daemons with their own config.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
needed=(munged slurmctld slurmd sbatch squeue sinfo srun scontrol)
# missing: true when any needed command is not on PATH
missing() {
    local c
    for c in "${needed[@]}"; do command -v "$c" >/dev/null 2>&1 || return 0; done
    return 1
}

if ! missing; then
    echo "slurm and munge already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_slurm.sh: need root to install slurm/munge" >&2
    exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm.sh: apt-get not available; install slurm and munge by hand" >&2
    exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# --no-install-recommends keeps it to ~30 MB; policy-rc.d may refuse to start the services: harmless.
apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client
if missing; then
    echo "install_slurm.sh: packages installed but commands still missing" >&2
    exit 4
fi
echo "slurm and munge installed: $(slurmctld -V)"
