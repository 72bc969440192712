#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, from Debian's packages, for the SLURM tests and for a
# developer: munged, slurmctld and slurmd (controller and compute node = this host, partition `debug`,
# no accounting). Needs root (apt-get, the daemons).
#
#   tests/slurm_cluster.sh start [DIR]   install slurm-wlm and munge if missing, write DIR/slurm.conf,
#                                        start the daemons, record their PIDs in DIR/pids, wait for the node
#   tests/slurm_cluster.sh stop [DIR]    stop exactly the daemons recorded in DIR/pids
#   tests/slurm_cluster.sh env [DIR]     print `export SLURM_CONF=…` for a shell to use the cluster
#
# DIR defaults to /tmp/fastgrok-slurm; the daemons listen on FASTGROK_SLURM_PORT and the port after it
# (default 6817, SLURM's). The tests find the cluster through FASTGROK_SLURM_DIR=DIR (its slurm.conf);
# without it the tests that need a cluster are skipped and say why.
set -euo pipefail
cmd=${1:-}
dir=${2:-/tmp/fastgrok-slurm}
conf=$dir/slurm.conf

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
    [ -f "$dir/pids" ] || return 0
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            echo "stopped $name ($pid)"
        fi
    done < "$dir/pids"
    rm -f "$dir/pids"
}

start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "slurm_cluster.sh: slurm-wlm and munge are missing and this is not root" >&2; exit 1; }
        echo "installing slurm-wlm and munge (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    if [ -f "$dir/pids" ]; then stop; fi
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 0755 "$dir"  # munged runs as the munge user and reaches its socket folder through DIR
    chown munge:munge "$dir/munge" && chmod 0700 "$dir/munge"
    host=$(hostname -s)
    port=${FASTGROK_SLURM_PORT:-6817}
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat > "$conf" <<EOF
ClusterName=fastgrok
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
KillWait=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    : > "$dir/pids"
    # munged: its own socket and pid file under DIR, the key the package made
    sudo_munge=(runuser -u munge --)
    [ "$(id -u)" = 0 ] || sudo_munge=()
    "${sudo_munge[@]}" munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" --force
    for _ in $(seq 50); do running "$dir/munge/munged.pid" && break; sleep 0.1; done
    echo "munged $(cat "$dir/munge/munged.pid")" >> "$dir/pids"
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    for _ in $(seq 100); do running "$dir/slurmctld.pid" && break; sleep 0.1; done
    echo "slurmctld $(cat "$dir/slurmctld.pid")" >> "$dir/pids"
    slurmd -f "$conf"
    for _ in $(seq 100); do running "$dir/slurmd.pid" && break; sleep 0.1; done
    echo "slurmd $(cat "$dir/slurmd.pid")" >> "$dir/pids"
    for _ in $(seq 300); do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
        case "$state" in idle|mix|alloc) echo "SLURM cluster up: node $host ($state), partition debug, SLURM_CONF=$conf"; return 0;; esac
        sleep 0.2
    done
    echo "slurm_cluster.sh: the node did not come up (state '${state:-none}'); logs in $dir" >&2
    stop
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 start|stop|env [DIR]" >&2; exit 2 ;;
esac
