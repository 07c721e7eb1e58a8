"""A task: one step of a job (a method of the job), possibly an array over several task ids."""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import sisyphus.global_settings as gs


class Task:
    """Names the job method to run and its resources.

    :param start: name of the job method run on the first attempt
    :param resume: method run after an interruption (None: rerun ``start`` from scratch)
    :param rqmt: resources: cpu, mem (GB), time (hours), gpu, engine (name in an EngineSelector)
    :param args: one entry per task id (list: ids 1..len(args)); each entry passed as the method's arguments
    :param mini_task: small bookkeeping step, run on the "short"/local engine
    :param parallel: at most this many task ids per submission (0: all in one array)
    :param tries: how often a task that raised is retried
    :param continuable: the task may be started again after it finished (e.g. training for more epochs)
    :param progress: name of a job method returning a JSON value that grows as the task gets on (e.g. checkpoints
        saved); an interruption after which it changed (a time limit hit by a resuming training) does not count
        against ``MAX_SUBMIT_RETRIES``
    """

    def __init__(
        self,
        start: str,
        resume: Optional[str] = None,
        rqmt: Optional[Dict[str, Any]] = None,
        args: Optional[List[Any]] = None,
        mini_task: bool = False,
        update_rqmt: Any = None,
        parallel: int = 0,
        tries: int = 1,
        continuable: bool = False,
        progress: Optional[str] = None,
    ):
        self._start = start
        self._resume = resume
        self._rqmt = dict(rqmt or {})
        self._args = [[]] if args is None else list(args)
        assert self._args, f"task {start}: args must not be empty"
        self.mini_task = mini_task
        self._update_rqmt = update_rqmt
        self.parallel = parallel
        self.tries = tries
        self.continuable = continuable
        self._progress = progress
        self._job = None

    # identity --------------------------------------------------------------------------------------------
    def set_job(self, job: Any) -> None:
        self._job = job

    def name(self) -> str:
        return self._start

    def resume(self) -> Optional[str]:
        return self._resume

    def task_ids(self) -> List[int]:
        return list(range(1, len(self._args) + 1))

    def rqmt(self) -> Dict[str, Any]:
        r = {"cpu": 1, "mem": 1, "time": 1}
        if self.mini_task:
            r.update({"cpu": 1, "mem": 1, "time": 0.5})
        r.update(self._rqmt)
        return r

    def __repr__(self) -> str:
        return f"<Task {self._start} of {self._job}>"

    # files in the job directory -----------------------------------------------------------------------
    def path(self, kind: str, task_id: Optional[int] = None) -> str:
        """``<jobdir>/<kind>.<task>[.<id>]``: log, finished, error, usage markers of this task."""
        p = os.path.join(self._job._sis_path(abspath=True), f"{kind}.{self._start}")
        return p if task_id is None else f"{p}.{task_id}"

    def log_path(self, task_id: int) -> str:
        return self.path(gs.JOB_LOG, task_id)

    def finished(self, task_id: Optional[int] = None) -> bool:
        if self._job is not None and self._job._sis_is_finished:
            return True  # also after the cleanup packed the task markers into finished.tar.gz
        ids = self.task_ids() if task_id is None else [task_id]
        return all(os.path.isfile(self.path(gs.STATE_FINISHED, i)) for i in ids)

    def error(self, task_id: Optional[int] = None) -> bool:
        ids = self.task_ids() if task_id is None else [task_id]
        return any(os.path.isfile(self.path(gs.STATE_ERROR, i)) for i in ids)

    def started(self, task_id: int) -> bool:
        return os.path.isfile(self.log_path(task_id)) or os.path.isfile(self.path(gs.JOB_USAGE, task_id))

    def heartbeat_age(self, task_id: int) -> Optional[float]:
        """Seconds since the worker last updated its usage file (None: no usage file)."""
        p = self.path(gs.JOB_USAGE, task_id)
        try:
            return time.time() - os.path.getmtime(p)
        except OSError:
            return None

    def claimed(self, task_id: int) -> Optional[bool]:
        """True while a worker holds the task id's claim; None for a job directory without claim files."""
        from sisyphus.locks import CLAIM, is_locked

        return is_locked(self.path(CLAIM, task_id))

    def history(self, task_id: int) -> List[dict]:
        """Events (start, error, finished, exit) of real attempts since the last reset."""
        from sisyphus.locks import HISTORY, read_events

        return read_events(self.path(HISTORY, task_id))

    def attempts(self, task_id: int) -> int:
        """How often a worker really started this task id (submissions that never ran do not count)."""
        return sum(1 for e in self.history(task_id) if e.get("event") == "start")

    def failures(self, task_id: int) -> int:
        """How many attempts raised (at least 1 while an error marker exists)."""
        n = sum(1 for e in self.history(task_id) if e.get("event") == "error")
        return max(n, 1) if self.error(task_id) else n

    def clear_history(self, task_id: int) -> None:
        """Starts a fresh retry budget (``sis console``'s clear_errors)."""
        from sisyphus.locks import HISTORY, append_event

        if os.path.exists(self.path(HISTORY, task_id)):
            append_event(self.path(HISTORY, task_id), "reset")

    def submissions(self, task_id: int) -> int:
        """How often this task id was submitted (from ``submit_log.<task>``)."""
        n = 0
        for rec in self.submit_log():
            if task_id in rec.get("task_ids", []):
                n += 1
        return n

    def progress(self) -> Any:
        """The job's progress value for this task now (None without a ``progress`` method or when it fails)."""
        if self._progress is None:
            return None
        try:
            value = getattr(self._job, self._progress)()
            return json.loads(json.dumps(value))  # as the attempt history stores it
        except Exception:  # noqa: BLE001 - a progress probe must never stop the manager
            return None

    def has_progress(self) -> bool:
        return self._progress is not None

    def attempts_without_progress(self, task_id: int) -> int:
        """Attempts of this task id after which its progress did not change (without a progress method: all).

        The worker records the progress with each attempt's start; the last attempt is compared with now."""
        values = [e.get("progress") for e in self.history(task_id) if e.get("event") == "start"]
        values.append(self.progress())
        return sum(1 for before, after in zip(values, values[1:]) if after is None or before == after)

    def last_usage(self, task_id: int) -> Dict[str, Any]:
        """What the last run of a task id used, in the keys of ``gs.update_engine_rqmt`` ({} if unknown)."""
        try:
            with open(self.path(gs.JOB_USAGE, task_id), encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            return {}
        return {"used_time": info.get("wall_seconds", 0) / 3600, "max": {"rss": info.get("max_rss_gb", 0)},
                "host": info.get("host")}

    def update_rqmt(self, last_rqmt: Dict[str, Any], last_usage: Dict[str, Any]) -> Dict[str, Any]:
        """Resources for resubmitting after an interruption: the task's ``update_rqmt`` or the settings hook."""
        update = self._update_rqmt or gs.update_engine_rqmt
        return update(last_rqmt=dict(last_rqmt), last_usage=last_usage)

    def submit_log(self) -> List[dict]:
        p = self.path(gs.JOB_SUBMIT_LOG)
        if not os.path.isfile(p):
            return []
        out = []
        with open(p, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue
        return out

    def append_submit_log(self, record: dict) -> None:
        with open(self.path(gs.JOB_SUBMIT_LOG), "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def reset(self, task_id: int) -> None:
        """Removes the error marker so the task id can be submitted again."""
        for kind in (gs.STATE_ERROR,):
            p = self.path(kind, task_id)
            if os.path.exists(p):
                os.remove(p)

    def get_worker_call(self, task_id: Optional[int] = None) -> List[str]:
        """Command line that runs this task in a worker (the engine appends or sets the task id)."""
        if gs.SIS_COMMAND:
            cmd = list(gs.SIS_COMMAND)
        else:
            cmd = [sys.executable, "-m", "sisyphus"]
        cmd += ["worker", self._job._sis_path(abspath=True), self._start]
        if task_id is not None:
            cmd.append(str(task_id))
        return gs.worker_wrapper(self._job, self._start, cmd)

    # running ---------------------------------------------------------------------------------------------
    def run(self, task_id: int, resume: bool = False) -> None:
        """Calls the job method for ``task_id`` (the resume method if ``resume`` and one is set)."""
        method_name = self._resume if (resume and self._resume) else self._start
        method = getattr(self._job, method_name)
        args = self._args[task_id - 1]
        if not isinstance(args, (list, tuple)):
            args = [args]
        method(*args)

    def print_error(self, lines: int = 0) -> None:
        for i in self.task_ids():
            if self.error(i):
                log = self.log_path(i)
                print(f"error in {self._job._sis_id()} task {self._start}.{i}, log: {log}")
                if lines and os.path.isfile(log):
                    with open(log, encoding="utf-8", errors="replace") as f:
                        tail = f.readlines()[-lines:]
                    print("".join(tail), end="")


def old_logs(log_path: str) -> List[str]:
    return sorted(glob.glob(log_path + ".old.*"))
