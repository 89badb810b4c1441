#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the Slurm executor's integration test (and to try
# `peftspace run --executor slurm` without a cluster). Needs root and Debian's packages (installed when missing).
#
#   scripts/slurm-start.sh DIR     # writes DIR/slurm.conf, starts munged, slurmctld and slurmd; prints SLURM_CONF
#   scripts/slurm-stop.sh DIR      # stops exactly the daemons this script started (by their pid files)
#
# Everything lives under DIR (configuration, munge key and socket, state, spool, logs); nothing in /etc is used.
# Calling it again on the same DIR stops the old daemons first.
set -euo pipefail

DIR=${1:?usage: scripts/slurm-start.sh DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "slurm-start.sh: run as root (the daemons and jobs run as root on this single-node cluster)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "== installing Slurm and munge (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

"$HERE/slurm-stop.sh" "$DIR" >/dev/null 2>&1 || true

mkdir -p "$DIR"/{munge,state,spool,log}
NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
PLUGINS=/usr/lib/x86_64-linux-gnu/slurm-wlm
[ -d "$PLUGINS" ] || PLUGINS=$(dirname "$(find /usr/lib -name 'proctrack_linuxproc.so' -print -quit)")

# Process tracking by cgroup (v1) leaves no orphan behind when a task ends or is cancelled; without v1 controllers,
# track by process list.
if [ -d /sys/fs/cgroup/freezer ] && [ -f "$PLUGINS/proctrack_cgroup.so" ]; then
  PROCTRACK=proctrack/cgroup; TASK=task/cgroup
  cat > "$DIR/cgroup.conf" <<CONF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=no
ConstrainRAMSpace=no
CONF
else
  PROCTRACK=proctrack/linuxproc; TASK=task/none
  rm -f "$DIR/cgroup.conf"
fi

# munge with a key of our own (root-owned, 0400), socket under DIR.
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$DIR/munge/munge.key"
munged --force --socket="$DIR/munge/munge.socket.2" --key-file="$DIR/munge/munge.key" \
  --log-file="$DIR/munge/munged.log" --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed"

cat > "$DIR/slurm.conf" <<CONF
ClusterName=peftspace
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=$PROCTRACK
TaskPlugin=$TASK
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=3600
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

export SLURM_CONF="$DIR/slurm.conf"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$NODE"

for _ in $(seq 1 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-start.sh: the node did not become idle within 20 s; logs in $DIR/log" >&2
sinfo >&2 || true
exit 1
