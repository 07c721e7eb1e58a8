"""The Slurm engine: sbatch (job arrays), squeue, scancel; final states from sacct or the jobcomp file."""
from __future__ import annotations

import logging
import os
import re
import shlex
from typing import Any, Dict, List, Optional, Tuple

import sisyphus.global_settings as gs
from sisyphus.cluster_engine import ClusterEngine, mem_mb, run_command, time_minutes

# Slurm job states -> engine states. Ended jobs without a worker marker: a time limit, out-of-memory or node
# failure interrupts the task (the manager resubmits it, up to MAX_SUBMIT_RETRIES); a cancelled job is an error.
SLURM_STATES = {
    "PENDING": gs.STATE_QUEUE, "CONFIGURING": gs.STATE_QUEUE, "REQUEUED": gs.STATE_QUEUE,
    "REQUEUE_HOLD": gs.STATE_QUEUE, "REQUEUE_FED": gs.STATE_QUEUE, "RESV_DEL_HOLD": gs.STATE_QUEUE,
    "SUSPENDED": gs.STATE_QUEUE, "STOPPED": gs.STATE_QUEUE,
    "RUNNING": gs.STATE_RUNNING, "COMPLETING": gs.STATE_RUNNING, "SIGNALING": gs.STATE_RUNNING,
    "STAGE_OUT": gs.STATE_RUNNING, "RESIZING": gs.STATE_RUNNING,
    "COMPLETED": gs.STATE_UNKNOWN, "FAILED": gs.STATE_UNKNOWN, "TIMEOUT": gs.STATE_UNKNOWN,
    "OUT_OF_MEMORY": gs.STATE_UNKNOWN, "NODE_FAIL": gs.STATE_UNKNOWN, "PREEMPTED": gs.STATE_UNKNOWN,
    "BOOT_FAIL": gs.STATE_UNKNOWN, "DEADLINE": gs.STATE_UNKNOWN,
    "CANCELLED": gs.STATE_QUEUE_ERROR,
}


def map_slurm_state(state: str) -> str:
    """``CANCELLED by 0`` -> CANCELLED -> engine state; unknown names count as queued (safe: no resubmission)."""
    name = state.split()[0].rstrip("+") if state else ""
    return SLURM_STATES.get(name, gs.STATE_QUEUE)


def _expand_array(spec: str) -> List[int]:
    """``1-3,5`` (optionally ``%N`` throttle) -> [1, 2, 3, 5]."""
    spec = spec.split("%")[0]
    ids: List[int] = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")[:2]
            ids.extend(range(int(a), int(b.split(":")[0]) + 1))
        elif part:
            ids.append(int(part))
    return ids


def parse_job_id(job_id: str) -> Tuple[str, List[Optional[int]]]:
    """``123_4`` -> ("123", [4]); ``123_[1-3]`` -> ("123", [1, 2, 3]); ``123`` -> ("123", [None])."""
    m = re.match(r"^(\d+)(?:_\[?([0-9,\-%:]+)\]?)?", job_id)
    if not m:
        return job_id, [None]
    return m.group(1), (_expand_array(m.group(2)) if m.group(2) else [None])


def read_jobcomp(path: str) -> Dict[Tuple[str, int], str]:
    """Final states from Slurm's jobcomp/filetxt file (keeps array task ids, which ``sacct -c`` drops)."""
    states: Dict[Tuple[str, int], str] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "Name" not in fields or "JobState" not in fields:
                continue
            task_id = fields.get("ArrayTaskId", "")
            tid = int(task_id) if task_id.isdigit() and int(task_id) < 4294967294 else 1  # NO_VAL: not an array
            states[(fields["Name"], tid)] = map_slurm_state(fields["JobState"])
    return states


class SimpleLinuxUtilityForResourceManagementEngine(ClusterEngine):
    """Submits each task with sbatch; parallel task ids become one job array.

    :param default_rqmt: defaults merged under each task's rqmt (cpu, mem in GB, time in hours, gpu)
    :param partition: ``-p``; default ``gs.SLURM_PARTITION``
    :param account: ``-A``; default ``gs.SLURM_ACCOUNT``
    :param gateway: run the Slurm commands via ssh on this host
    :param extra_args: more sbatch arguments, e.g. ``["--qos=high"]``
    """

    name = "slurm"

    def __init__(self, default_rqmt: Optional[Dict[str, Any]] = None, *, partition: Optional[str] = None,
                 account: Optional[str] = None, gateway: Optional[str] = None, extra_args: Optional[List[str]] = None,
                 has_accounting: Optional[bool] = None):
        super().__init__(default_rqmt, gateway)
        self.partition = partition
        self.account = account
        self.extra_args = list(extra_args or [])
        self.has_accounting = has_accounting

    def sbatch_args(self, rqmt: Dict[str, Any], name: str, logpath: str, task_name: str,
                    task_ids: List[int]) -> List[str]:
        """The sbatch options for one submission (kept separate so it can be checked without a cluster)."""
        args = ["--parsable", "-J", name, f"--cpus-per-task={int(rqmt.get('cpu', 1))}", f"--mem={mem_mb(rqmt)}M",
                f"--time={time_minutes(rqmt)}", f"--chdir={gs.BASE_DIR}", "--export=ALL",
                "-o", os.path.join(logpath, gs.JOB_LOG_ENGINE, f"slurm.{task_name}.%A_%a.out")]
        gpus = int(rqmt.get("gpu", 0) or 0)
        if gpus:
            args.append(f"--gres=gpu:{gpus}")
        partition = rqmt.get("partition", self.partition or gs.SLURM_PARTITION)
        if partition:
            args.append(f"--partition={partition}")
        account = rqmt.get("account", self.account or gs.SLURM_ACCOUNT)
        if account:
            args.append(f"--account={account}")
        args.append("--array=" + ",".join(str(i) for i in task_ids))
        args += list(rqmt.get("sbatch_args", [])) + self.extra_args
        return args

    def submit_call(self, call: List[str], logpath: str, rqmt: Dict[str, Any], name: str, task_name: str,
                    task_ids: List[int]) -> Tuple[str, Any]:
        os.makedirs(os.path.join(logpath, gs.JOB_LOG_ENGINE), exist_ok=True)
        script = "#!/bin/bash\n" + " ".join(shlex.quote(c) for c in call) + "\n"
        cmd = self.command(["sbatch"] + self.sbatch_args(rqmt, name, logpath, task_name, task_ids))
        _, out, _ = run_command(cmd, input=script)
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise RuntimeError(f"sbatch gave no job id for {name}: {out!r}")
        self.reset_cache()
        return self.name, job_id

    def list_queue(self) -> Dict[Tuple[str, int], str]:
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or "root"
        rc, out, err = run_command(self.command(["squeue", "-h", "-r", "-u", user, "-o", "%i|%j|%T"]), check=False)
        if rc != 0:
            raise RuntimeError(f"squeue failed: {err.strip()}")
        states: Dict[Tuple[str, int], str] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3:
                continue
            job_id, name, state = parts
            for i in parse_job_id(job_id)[1]:
                states[(name, i if i is not None else 1)] = map_slurm_state(state)
        return states

    def list_final(self) -> Dict[Tuple[str, int], str]:
        """Final states of ended jobs: sacct, or ``sacct -c`` (the jobcomp file) where accounting is off."""
        fmt = ["-n", "-P", "-X", "-o", "JobID,JobName,State"]
        out = None
        if self.has_accounting is not False:
            rc, out, err = run_command(self.command(["sacct", "-S", "now-7days"] + fmt), check=False, retries=1)
            if rc != 0:
                self.has_accounting = False
                out = None
            else:
                self.has_accounting = True
        if out is None:
            jobcomp = self._jobcomp_file()
            if jobcomp and os.path.isfile(jobcomp):
                return read_jobcomp(jobcomp)
            rc, out, err = run_command(self.command(["sacct", "-c"] + fmt), check=False, retries=1)
            if rc != 0:
                logging.debug("sacct -c failed: %s", err.strip())
                return {}
        states: Dict[Tuple[str, int], str] = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 3:
                continue
            job_id, name, state = parts[:3]
            for i in parse_job_id(job_id)[1]:
                states[(name, i if i is not None else 1)] = map_slurm_state(state)
        return states

    def _jobcomp_file(self) -> Optional[str]:
        if not hasattr(self, "_jobcomp_loc"):
            rc, out, _ = run_command(self.command(["scontrol", "show", "config"]), check=False, retries=1)
            m = re.search(r"^JobCompLoc\s*=\s*(\S+)", out, re.M) if rc == 0 else None
            self._jobcomp_loc = m.group(1) if m else None
        return self._jobcomp_loc

    def cancel(self, task: Any) -> None:
        """scancel every job of this task (by name)."""
        run_command(self.command(["scancel", "-n", self.job_name(task)]), check=False)
