#!/usr/bin/env bash
# Installs (if needed) and starts a single-node Son of Grid Engine (Debian gridengine 8.1.9) on this host:
# host alias, root jobs allowed, 1 s scheduling, an "smp" parallel environment, a "gpu" complex, queue all.q.
# Idempotent. Used by CI and by tests/test_cluster_sge.py.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
as_root() { if [ -z "$SUDO" ]; then "$@"; else sudo -E "$@"; fi; }
PKGS="gridengine-master gridengine-exec gridengine-client"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing >/dev/null
fi
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
H=$(hostname)
COMMON=$SGE_ROOT/$SGE_CELL/common
# the client resolves localhost, the daemons call the host by its name: alias the two
echo "$H localhost" | $SUDO tee $COMMON/host_aliases >/dev/null
if [ "$(cat $COMMON/act_qmaster 2>/dev/null)" != "$H" ]; then
  echo "$H" | $SUDO tee $COMMON/act_qmaster >/dev/null
  $SUDO pkill -x sge_qmaster 2>/dev/null || true
  $SUDO pkill -x sge_execd 2>/dev/null || true
  sleep 1
fi
pgrep -x sge_qmaster >/dev/null || as_root sge_qmaster
for _ in $(seq 1 50); do qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done

TMP=$(mktemp -d)
cd "$TMP"
qconf -ss 2>/dev/null | grep -qx "$H" || as_root qconf -as "$H" >/dev/null
# root may run jobs
qconf -sconf global > global
sed -i 's/^min_uid.*/min_uid                      0/; s/^min_gid.*/min_gid                      0/' global
as_root qconf -Mconf global >/dev/null
# schedule every second instead of every 15 s
qconf -ssconf > sched
sed -i 's/^schedule_interval.*/schedule_interval                 0:0:1/; s/^flush_submit_sec.*/flush_submit_sec                  1/; s/^flush_finish_sec.*/flush_finish_sec                  1/' sched
as_root qconf -Msconf sched >/dev/null
# a consumable gpu complex, so that -l gpu=N is accepted
if ! qconf -sc | grep -q "^gpu "; then
  qconf -sc > complexes
  echo "gpu                 gpu        INT         <=    YES         YES        0        0" >> complexes
  as_root qconf -Mc complexes >/dev/null
fi
pgrep -x sge_execd >/dev/null || as_root sge_execd
if ! qconf -spl | grep -qx smp; then
  cat > pe_smp <<PE
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
PE
  as_root qconf -Ap pe_smp >/dev/null
fi
if ! qconf -sql 2>/dev/null | grep -qx all.q; then
  for _ in $(seq 1 50); do qconf -sel 2>/dev/null | grep -qx "$H" && break; sleep 0.2; done
  {
    echo "qname all.q"; echo "hostlist $H"; echo "seq_no 0"; echo "load_thresholds NONE"
    echo "suspend_thresholds NONE"; echo "nsuspend 1"; echo "suspend_interval 00:05:00"; echo "priority 0"
    echo "min_cpu_interval 00:05:00"; echo "processors UNDEFINED"; echo "qtype BATCH INTERACTIVE"
    echo "ckpt_list NONE"; echo "pe_list smp"; echo "rerun FALSE"; echo "slots $(nproc)"; echo "tmpdir /tmp"
    echo "shell /bin/bash"; echo "prolog NONE"; echo "epilog NONE"; echo "shell_start_mode unix_behavior"
    echo "starter_method NONE"; echo "suspend_method NONE"; echo "resume_method NONE"; echo "terminate_method NONE"
    echo "notify 00:00:60"; echo "owner_list NONE"; echo "user_lists NONE"; echo "xuser_lists NONE"
    echo "subordinate_list NONE"; echo "complex_values gpu=0"; echo "projects NONE"; echo "xprojects NONE"
    echo "calendar NONE"; echo "initial_state default"
    for l in s_rt h_rt s_cpu h_cpu s_fsize h_fsize s_data h_data s_stack h_stack s_core h_core s_rss h_rss s_vmem h_vmem; do
      echo "$l INFINITY"
    done
  } > q_all
  as_root qconf -Aq q_all >/dev/null
fi
cd / && rm -rf "$TMP"
for _ in $(seq 1 50); do
  if qstat -f 2>/dev/null | grep -q "all.q@"; then echo "sge ready"; exit 0; fi
  sleep 0.2
done
echo "sge did not become ready: $(qstat -f 2>&1)" >&2
exit 1
