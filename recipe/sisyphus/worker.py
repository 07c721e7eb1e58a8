"""The worker: runs one task id of one job and records the outcome as marker files in the job directory.

``sis worker JOBDIR TASK [ID]``; the id may also come from SLURM_ARRAY_TASK_ID / SGE_TASK_ID.
"""
from __future__ import annotations

import json
import logging
import os
import resource
import socket
import sys
import threading
import time
import traceback
from typing import Optional

import sisyphus.global_settings as gs
from sisyphus import tools


def _rotate(path: str) -> None:
    """Keeps the log of an earlier attempt as ``<log>.old.N``."""
    if os.path.exists(path):
        n = 1
        while os.path.exists(f"{path}.old.{n}"):
            n += 1
        os.replace(path, f"{path}.old.{n}")


class _Heartbeat(threading.Thread):
    """Updates ``usage.<task>.<id>`` every few seconds: alive marker plus peak memory and cpu time."""

    def __init__(self, path: str, started: float, resumed: bool):
        super().__init__(daemon=True)
        self.path = path
        self.started = started
        self.resumed = resumed
        self.stop = threading.Event()

    def write(self) -> None:
        self_usage = resource.getrusage(resource.RUSAGE_SELF)
        child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        info = {
            "host": socket.gethostname(), "pid": os.getpid(), "started": self.started, "updated": time.time(),
            "resumed": self.resumed,
            "max_rss_gb": max(self_usage.ru_maxrss, child_usage.ru_maxrss) / 1024 / 1024,
            "cpu_seconds": self_usage.ru_utime + self_usage.ru_stime + child_usage.ru_utime + child_usage.ru_stime,
            "wall_seconds": time.time() - self.started,
        }
        tools.atomic_touch(self.path, json.dumps(info) + "\n")

    def run(self) -> None:
        while not self.stop.wait(gs.HEARTBEAT_PERIOD):
            try:
                self.write()
            except OSError:
                pass


def run_task(job_dir: str, task_name: str, task_id: Optional[int] = None, redirect_log: bool = True) -> int:
    """Runs the task; returns 0 on success, 1 on failure (after writing the error marker)."""
    from sisyphus.engine import EngineBase
    from sisyphus.job import load_job

    os.environ["SIS_WORKER"] = "1"
    job_dir = os.path.abspath(job_dir)
    task_id = EngineBase().get_task_id(task_id)
    job = load_job(job_dir)
    from sisyphus.job_path import AbstractPath

    AbstractPath.cacheing_enabled = True  # cached inputs are read through gs.file_caching inside tasks
    # The job dir is <WORK_DIR>/<job id>: take WORK_DIR from it, so paths resolve as in the manager.
    suffix = os.sep + job._sis_id()
    if job_dir.endswith(suffix):
        gs.WORK_DIR = job_dir[: -len(suffix)]
    tasks = {t.name(): t for t in job._sis_tasks()}
    if task_name not in tasks:
        print(f"{job_dir}: job has no task {task_name!r} (tasks: {sorted(tasks)})", file=sys.stderr)
        return 2
    task = tasks[task_name]
    log_path = os.path.join(job_dir, f"{gs.JOB_LOG}.{task_name}.{task_id}")
    finished = os.path.join(job_dir, f"{gs.STATE_FINISHED}.{task_name}.{task_id}")
    error = os.path.join(job_dir, f"{gs.STATE_ERROR}.{task_name}.{task_id}")
    usage = os.path.join(job_dir, f"{gs.JOB_USAGE}.{task_name}.{task_id}")
    if os.path.exists(finished) and not task.continuable:
        print(f"{job_dir}: task {task_name}.{task_id} already finished", file=sys.stderr)
        return 0
    # An earlier attempt that was interrupted (no error marker) is resumed; one that raised starts afresh.
    resumed = (os.path.exists(log_path) or os.path.exists(usage)) and not os.path.exists(error)
    if redirect_log:
        _rotate(log_path)
        log = open(log_path, "a", buffering=1, encoding="utf-8")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s", force=True)
    if os.path.exists(error):
        os.remove(error)
    started = time.time()
    heartbeat = _Heartbeat(usage, started, resumed)
    heartbeat.write()
    heartbeat.start()
    os.chdir(os.path.join(job_dir, gs.JOB_WORK_DIR))
    mode = "resume" if (resumed and task.resume()) else "start"
    print(f"+------------ {job._sis_id()} task {task_name}.{task_id} ({mode}) on {os.uname().nodename}", flush=True)
    for key, value in job._sis_environment.items():
        os.environ[key] = str(value)
    try:
        task.run(task_id, resume=(mode == "resume"))
    except BaseException as exc:  # noqa: B902 - every failure must leave an error marker
        traceback.print_exc()
        print(f"+------------ task {task_name}.{task_id} FAILED: {type(exc).__name__}: {exc}", flush=True)
        heartbeat.stop.set()
        tools.atomic_touch(error, f"{type(exc).__name__}: {exc}\n")
        return 1
    heartbeat.stop.set()
    heartbeat.write()
    print(f"+------------ task {task_name}.{task_id} finished in {time.time() - started:.1f} s", flush=True)
    tools.atomic_touch(finished)
    return 0
