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
from sisyphus.locks import CLAIM, HISTORY, FileLock, append_event, describe_owner, read_events


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


def _say(msg: str) -> None:
    """Prints to the task log; a log on a full disk must not turn a clean failure into a crash."""
    try:
        print(msg, flush=True)
    except OSError:
        pass


def run_task(job_dir: str, task_name: str, task_id: Optional[int] = None, redirect_log: bool = True) -> int:
    """Runs the task; returns 0 on success (or when another worker has it), 1 on failure (error marker written).

    The worker first locks the task id's claim file, before importing the job: a second copy started by a
    restarted or second manager finds it locked and exits, so a task id never runs twice at once.
    """
    from sisyphus.engine import EngineBase

    os.environ["SIS_WORKER"] = "1"
    job_dir = os.path.abspath(job_dir)
    task_id = EngineBase().get_task_id(task_id)
    if not os.path.isfile(os.path.join(job_dir, gs.JOB_SAVE)):
        print(f"{job_dir} is not a job directory (no {gs.JOB_SAVE})", file=sys.stderr)
        return 2
    claim = FileLock(os.path.join(job_dir, f"{CLAIM}.{task_name}.{task_id}"))
    if not claim.acquire(wait=2.0):
        print(f"{job_dir}: task {task_name}.{task_id} is already running ({describe_owner(claim.path)}); "
              f"not starting it again", file=sys.stderr)
        return 0
    try:
        history = os.path.join(job_dir, f"{HISTORY}.{task_name}.{task_id}")
        return _run_claimed(job_dir, task_name, task_id, redirect_log, history)
    finally:
        claim.release()


def _run_claimed(job_dir: str, task_name: str, task_id: int, redirect_log: bool, history: str) -> int:
    from sisyphus.job import load_job

    log_path = os.path.join(job_dir, f"{gs.JOB_LOG}.{task_name}.{task_id}")
    finished = os.path.join(job_dir, f"{gs.STATE_FINISHED}.{task_name}.{task_id}")
    error = os.path.join(job_dir, f"{gs.STATE_ERROR}.{task_name}.{task_id}")
    usage = os.path.join(job_dir, f"{gs.JOB_USAGE}.{task_name}.{task_id}")
    if os.path.exists(error):
        # a failed attempt is retried only after the manager (or clear_errors) removed its marker
        print(f"{job_dir}: task {task_name}.{task_id} has an error marker; not starting it", file=sys.stderr)
        return 0
    events = read_events(history)
    if events:  # the last attempt started but recorded no outcome: it was interrupted
        resumed = events[-1].get("event") == "start"
    else:  # job directories of older engine versions
        resumed = os.path.exists(log_path) or os.path.exists(usage)
    try:
        job = load_job(job_dir)
        from sisyphus.job_path import AbstractPath

        AbstractPath.cacheing_enabled = True  # cached inputs are read through gs.file_caching inside tasks
    except BaseException as exc:  # noqa: B902 - an unloadable job is a failed attempt, not a silent exit
        traceback.print_exc()
        append_event(history, "start")
        append_event(history, "error", message=f"{type(exc).__name__}: {exc}")
        tools.atomic_touch(error, f"cannot load {job_dir}/{gs.JOB_SAVE}: {type(exc).__name__}: {exc}\n")
        return 1
    # The job dir is <WORK_DIR>/<job id>: take WORK_DIR from it, so paths resolve as in the manager.
    suffix = os.sep + job._sis_id()
    if job_dir.endswith(suffix):
        gs.WORK_DIR = job_dir[: -len(suffix)]
    tasks = {t.name(): t for t in job._sis_tasks()}
    if task_name not in tasks:
        print(f"{job_dir}: job has no task {task_name!r} (tasks: {sorted(tasks)})", file=sys.stderr)
        return 2
    task = tasks[task_name]
    if os.path.exists(finished) and not task.continuable:
        print(f"{job_dir}: task {task_name}.{task_id} already finished", file=sys.stderr)
        return 0
    # progress at the start of each attempt: interruptions after which it grew do not use up the retries
    append_event(history, "start", **({"progress": task.progress()} if task.has_progress() else {}))
    if redirect_log:
        _rotate(log_path)
        log = open(log_path, "a", buffering=1, encoding="utf-8")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, encoding="utf-8", closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, encoding="utf-8", closefd=False)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s: %(message)s", force=True)
    started = time.time()
    heartbeat = _Heartbeat(usage, started, resumed)
    heartbeat.write()
    heartbeat.start()
    os.chdir(os.path.join(job_dir, gs.JOB_WORK_DIR))
    mode = "resume" if (resumed and task.resume()) else "start"
    _say(f"+------------ {job._sis_id()} task {task_name}.{task_id} ({mode}) on {os.uname().nodename}")
    os.environ.update(job._sis_environment_values(dict(os.environ)))
    try:
        task.run(task_id, resume=(mode == "resume"))
    except BaseException as exc:  # noqa: B902 - every failure must leave an error marker
        heartbeat.stop.set()
        message = f"{type(exc).__name__}: {exc}"
        try:
            traceback.print_exc()
        except OSError:
            pass
        _say(f"+------------ task {task_name}.{task_id} FAILED: {message}")
        _record_failure(history, error, message)
        return 1
    heartbeat.stop.set()
    try:
        heartbeat.write()
        _say(f"+------------ task {task_name}.{task_id} finished in {time.time() - started:.1f} s")
        append_event(history, "finished")
        tools.atomic_touch(finished)
    except OSError as exc:  # e.g. the disk filled up just now: the task did not finish cleanly
        _record_failure(history, error, tools.describe_os_error(exc))
        return 1
    return 0


def _record_failure(history: str, error: str, message: str) -> None:
    """Writes the error marker and history event; on a full disk an empty marker (it needs no data block)."""
    try:
        append_event(history, "error", message=message)
    except OSError:
        pass
    try:
        tools.atomic_touch(error, message + "\n")
    except OSError:
        tools.atomic_touch(error)
