#!/usr/bin/env bash
# A single-node Slurm on this machine (Debian-like, as root): apt's slurm-wlm with munge, one partition "debug" holding
# this host with every core it has. Run through `bash setup.sh slurm`; running it again restarts the daemons with a
# fresh configuration. What it writes: /etc/slurm/slurm.conf, /etc/slurm/cgroup.conf, state under /var/spool/slurm*.
set -euo pipefail
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "slurm_single_node.sh: needs root and apt-get (install slurm-wlm and munge by hand elsewhere)" >&2
  exit 2
fi
command -v slurmctld >/dev/null && command -v munged >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; }
host=$(hostname -s)
cpus=$(nproc --all)
memory_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))  # leave a tenth to the system
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=kernelgrade
SlurmctldHost=$host
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# Read even with proctrack/linuxproc; 22.05 knows no "disabled", and cgroup/v2 fails on a hybrid (v1) host.
if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then
  printf 'CgroupPlugin=cgroup/v2\nIgnoreSystemd=yes\n' >/etc/slurm/cgroup.conf
else
  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' >/etc/slurm/cgroup.conf
fi
chown munge:munge /run/munge
# Restart only the daemons this script starts (by the pid files they write), never others of the same name.
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ -n $pid ]] && kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done  # its port is free once it is gone
  fi
done
[[ -S /run/munge/munge.socket.2 ]] && munge -n >/dev/null 2>&1 || su -s /bin/sh munge -c munged
slurmctld -i  # -i: ignore state left by an earlier configuration
slurmd
for _ in $(seq 60); do  # the node reports in within seconds
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1)
  [[ $state == idle* || $state == mixed* || $state == allocated* ]] && break
  sleep 1
done
sinfo
[[ $state == idle* || $state == mixed* || $state == allocated* ]] || {
  echo "slurm_single_node.sh: the node did not come up (state '$state'); see /var/log/slurm/" >&2
  exit 1
}
