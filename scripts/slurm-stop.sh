#!/usr/bin/env bash
# Stops the daemons scripts/slurm-start.sh DIR started, by the pids in their pid files, and waits for them to exit.
set -uo pipefail
DIR=${1:?usage: scripts/slurm-stop.sh DIR}
for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
# cgroup tracking leaves empty per-node folders behind.
for d in /sys/fs/cgroup/{freezer,memory,cpuset,cpuacct,devices}/slurm*; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
exit 0
