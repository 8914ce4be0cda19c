#!/usr/bin/env bash
# A throw-away single-node SLURM cluster (slurmctld + slurmd + munge) for tests and CI.
#
#   scripts/slurm_cluster.sh install          # apt-get install slurm-wlm munge (root, Debian)
#   scripts/slurm_cluster.sh start [DIR]      # write DIR/slurm.conf, start munged/slurmctld/slurmd
#   scripts/slurm_cluster.sh env [DIR]        # print the exports a client shell needs
#   scripts/slurm_cluster.sh status [DIR]
#   scripts/slurm_cluster.sh stop [DIR]       # stop the daemons this script started (PID files)
#
# DIR defaults to $QSMPREP_SLURM_DIR or /tmp/qsmprep-slurm. Everything SLURM writes (state, spool,
# logs, PID files) stays in DIR; the configuration is found through SLURM_CONF=DIR/slurm.conf, so
# no file under /etc/slurm is touched. munge uses its system key (/etc/munge/munge.key, created
# if missing) because the SLURM client commands talk to the system munged socket.
# Needs root (munge key, slurmd). Clients: `eval "$(scripts/slurm_cluster.sh env)"`; this also
# sets LOGNAME, which Nipype's SLURM plugin reads (KeyError otherwise).
set -euo pipefail

cmd="${1:-}"
DIR="${2:-${QSMPREP_SLURM_DIR:-/tmp/qsmprep-slurm}}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"
export LOGNAME="${LOGNAME:-$(id -un)}"

log() { printf '[slurm_cluster] %s\n' "$*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit="$1" what="$2"; shift 2
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 1; t=$((t + 1))
        if (( t >= limit )); then log "timed out after ${limit}s waiting for $what"; return 1; fi
    done
}

munge_ok() { munge -n | unmunge >/dev/null; }
ctld_up() { scontrol ping | grep -q 'UP'; }
node_idle() { sinfo -h -n localhost -o '%T' | grep -q -E '^(idle|mixed|allocated)'; }

do_install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then
        log "slurm-wlm and munge already installed"; return
    fi
    [[ "$(id -u)" == 0 ]] || { log "install needs root"; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

write_conf() {
    local cpus mem user
    cpus="$(nproc)"
    # RealMemory above what slurmd detects drains the node: use 98% of the total.
    mem="$(free -m | awk '/^Mem:/ {printf "%d", $2 * 0.98}')"
    user="$(id -un)"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat > "$CONF" <<EOF
# written by qsmprep scripts/slurm_cluster.sh
ClusterName=qsmprep
SlurmctldHost=localhost
SlurmUser=$user
AuthType=auth/munge
CryptoType=crypto/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
DependencyParameters=kill_invalid_depend
ReturnToService=2
# keep finished jobs visible to squeue/scontrol for an hour (there is no slurmdbd/sacct)
MinJobAge=3600
MailProg=/bin/true
MpiDefault=none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

do_start() {
    command -v slurmctld >/dev/null || { log "slurmctld not found; run: $0 install"; exit 1; }
    [[ "$(id -u)" == 0 ]] || { log "start needs root (munge key, slurmd)"; exit 1; }
    if [[ -f "$DIR/slurmctld.pid" ]] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null; then
        log "already running in $DIR"; return
    fi
    local t0=$SECONDS
    mkdir -p "$DIR"
    # munge: reuse a running munged, else start one with the system key.
    if ! munge_ok 2>/dev/null; then
        if [[ ! -s /etc/munge/munge.key ]]; then
            mkdir -p /etc/munge
            if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null
            else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
        fi
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        runuser -u munge -- munged --force
        wait_for 20 munged munge_ok
        cp /run/munge/munged.pid "$DIR/munged.pid"   # we started it, so we stop it
    fi
    write_conf
    slurmctld -i -f "$CONF"
    wait_for 30 "slurmctld (scontrol ping)" ctld_up
    slurmd -N localhost -f "$CONF"
    wait_for 60 "node localhost to become idle (sinfo)" node_idle \
        || { scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
             wait_for 20 "node resume" node_idle; }
    log "cluster up in $((SECONDS - t0)) s (SLURM_CONF=$CONF)"
}

stop_pid() {  # stop_pid PIDFILE NAME
    local f="$1" pid
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped $2 (pid $pid)"
    fi
    rm -f "$f"
}

do_stop() {
    if [[ -f "$CONF" ]]; then scancel --quiet --user "$(id -un)" 2>/dev/null || true; fi
    stop_pid "$DIR/slurmd.pid" slurmd
    stop_pid "$DIR/slurmctld.pid" slurmctld
    stop_pid "$DIR/munged.pid" munged
}

case "$cmd" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    env) printf 'export SLURM_CONF=%q\nexport LOGNAME=%q\n' "$CONF" "$LOGNAME" ;;
    status) scontrol ping; sinfo; squeue ;;
    *) sed -n '2,16p' "$0"; exit 64 ;;
esac
