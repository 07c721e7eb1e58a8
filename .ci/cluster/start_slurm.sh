#!/usr/bin/env bash
# Installs (if needed) and starts a single-node Slurm on localhost: munge, slurmctld, slurmd.
# Idempotent: running daemons are left alone. Used by CI and by tests/test_cluster_slurm.py.
set -euo pipefail
PKGS="slurmctld slurmd slurm-client munge"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ -n "$missing" ]; then
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing >/dev/null
fi

CONF=/etc/slurm/slurm.conf
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
$SUDO mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
$SUDO tee $CONF >/dev/null <<CONF
ClusterName=llmasr
SlurmctldHost=localhost
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
MinJobAge=300
KillWait=2
OverTimeLimit=0
InactiveLimit=0
ReturnToService=2
NodeName=localhost CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

# munge
if ! pgrep -x munged >/dev/null; then
  $SUDO mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  [ -s /etc/munge/munge.key ] || $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  $SUDO chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
  $SUDO chmod 0700 /etc/munge && $SUDO chmod 0400 /etc/munge/munge.key
  $SUDO -u munge /usr/sbin/munged 2>/dev/null || $SUDO su -s /bin/sh munge -c /usr/sbin/munged
fi
pgrep -x slurmctld >/dev/null || $SUDO slurmctld
pgrep -x slurmd >/dev/null || $SUDO slurmd -N localhost
for _ in $(seq 1 50); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then echo "slurm ready"; exit 0; fi
  scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
  sleep 0.2
done
echo "slurm did not become ready: $(sinfo 2>&1)" >&2
exit 1
