"""The SGE engine (Son of Grid Engine / Grid Engine): qsub with array jobs, qstat -xml, qdel."""
from __future__ import annotations

import math
import os
import shlex
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

import sisyphus.global_settings as gs
from sisyphus.cluster_engine import ClusterEngine, run_command

# qstat state letters: E = error (e.g. Eqw), r/t/R running or transferring, q/w/h/s waiting or suspended.
# Ended jobs leave qstat: the worker's markers decide, and a task that ended without one (qdel, h_rt, h_vmem)
# is interrupted and resubmitted up to MAX_SUBMIT_RETRIES times.


def map_sge_state(state: str) -> str:
    if "E" in state:
        return gs.STATE_QUEUE_ERROR
    if "d" in state:
        return gs.STATE_RUNNING  # being deleted: still there, not to be resubmitted yet
    if any(c in state for c in "rtR") and "h" not in state:
        return gs.STATE_RUNNING
    return gs.STATE_QUEUE


def expand_tasks(spec: Optional[str]) -> List[int]:
    """``2-5:1`` / ``1,3`` / ``4`` -> task ids; empty -> [1] (no array)."""
    if not spec:
        return [1]
    ids: List[int] = []
    for part in spec.split(","):
        step = 1
        if ":" in part:
            part, s = part.split(":")
            step = int(s)
        if "-" in part:
            a, b = part.split("-")
            ids.extend(range(int(a), int(b) + 1, step))
        else:
            ids.append(int(part))
    return ids


def contiguous_runs(ids: List[int]) -> List[Tuple[int, int]]:
    """[1, 2, 3, 5] -> [(1, 3), (5, 5)]: qsub -t takes one range per submission."""
    runs: List[Tuple[int, int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


class SonOfGridEngine(ClusterEngine):
    """Submits each task with qsub; parallel task ids become array jobs (``-t``).

    :param default_rqmt: defaults merged under each task's rqmt (cpu, mem in GB, time in hours, gpu)
    :param queue: ``-q``; default ``gs.SGE_QUEUE``
    :param pe: parallel environment used for cpu > 1 (``-pe <pe> N``)
    :param gateway: run the SGE commands via ssh on this host
    """

    name = "sge"

    def __init__(self, default_rqmt: Optional[Dict[str, Any]] = None, *, queue: Optional[str] = None,
                 pe: str = "smp", gateway: Optional[str] = None, extra_args: Optional[List[str]] = None):
        super().__init__(default_rqmt, gateway)
        self.queue = queue
        self.pe = pe
        self.extra_args = list(extra_args or [])

    def qsub_args(self, rqmt: Dict[str, Any], name: str, logpath: str, task_name: str, first: int,
                  last: int) -> List[str]:
        cpus = int(rqmt.get("cpu", 1))
        seconds = max(1, int(math.ceil(float(rqmt.get("time", 1)) * 3600)))
        resources = [f"h_vmem={float(rqmt.get('mem', 1)) / max(cpus, 1):.3f}G",  # SGE: per slot
                     f"h_rt={seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"]
        gpus = int(rqmt.get("gpu", 0) or 0)
        if gpus:
            resources.append(f"gpu={gpus}")
        args = ["-terse", "-N", name, "-wd", gs.BASE_DIR, "-V", "-j", "y", "-S", "/bin/bash",
                "-o", os.path.join(logpath, gs.JOB_LOG_ENGINE, f"sge.{task_name}.$JOB_ID.$TASK_ID.out"),
                "-l", ",".join(resources), "-t", f"{first}-{last}"]
        if cpus > 1:
            args += ["-pe", self.pe, str(cpus)]
        queue = rqmt.get("queue", self.queue or gs.SGE_QUEUE)
        if queue:
            args += ["-q", queue]
        return args + list(rqmt.get("qsub_args", [])) + self.extra_args

    def submit_call(self, call: List[str], logpath: str, rqmt: Dict[str, Any], name: str, task_name: str,
                    task_ids: List[int]) -> Tuple[str, Any]:
        engine_dir = os.path.join(logpath, gs.JOB_LOG_ENGINE)
        os.makedirs(engine_dir, exist_ok=True)
        # qsub -b y with a compound command fails on this SGE: submit a script
        script = os.path.join(engine_dir, f"sge.{task_name}.sh")
        with open(script, "w", encoding="utf-8") as f:
            f.write("#!/bin/bash\n" + " ".join(shlex.quote(c) for c in call) + "\n")
        ids = []
        for first, last in contiguous_runs(task_ids):
            _, out, _ = run_command(self.command(["qsub"] + self.qsub_args(rqmt, name, logpath, task_name,
                                                                            first, last) + [script]))
            ids.append(out.strip().split(".")[0])
        self.reset_cache()
        return self.name, ",".join(ids)

    def list_queue(self) -> Dict[Tuple[str, int], str]:
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or "root"
        rc, out, err = run_command(self.command(["qstat", "-xml", "-r", "-u", user]), check=False)
        if rc != 0:
            raise RuntimeError(f"qstat failed: {err.strip()}")
        states: Dict[Tuple[str, int], str] = {}
        root = ET.fromstring(out)
        for job in root.iter("job_list"):
            name = job.findtext("full_job_name") or job.findtext("JB_name") or ""
            state = map_sge_state(job.findtext("state") or "")
            for i in expand_tasks(job.findtext("tasks")):
                states[(name, i)] = state
        return states

    def cancel(self, task: Any) -> None:
        run_command(self.command(["qdel", self.job_name(task)]), check=False)
