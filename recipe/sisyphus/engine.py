"""The engine interface the manager submits tasks through, and the per-task engine selector."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import sisyphus.global_settings as gs


class EngineBase:
    """An engine runs worker calls somewhere (local processes, Slurm, SGE) and reports their queue state.

    Whether a task finished or failed is read from the markers the worker writes in the job directory;
    an engine only says whether a task id is queued, running, or unknown to it.
    """

    name = "base"

    def start_engine(self) -> None:
        """Starts background parts (threads, connections)."""

    def stop_engine(self) -> None:
        """Stops background parts; running tasks are left alone unless the engine owns them."""

    def reset_cache(self) -> None:
        """Drops cached queue listings; the manager calls it once per loop."""

    def wait_for_change(self, timeout: float) -> None:
        """The manager's pause between two checks: ``timeout`` seconds, or less where the engine sees a task end."""
        time.sleep(timeout)

    def set_priorities(self, priorities: Dict[str, int]) -> None:
        """Job directory (absolute) -> priority, higher first: the manager gives the number of jobs waiting for each
        job. An engine that orders its own queue may use it; a cluster's scheduler orders its queue itself."""

    def get_default_rqmt(self, task: Any) -> Dict[str, Any]:
        return {}

    def submit_call(self, call: List[str], logpath: str, rqmt: Dict[str, Any], name: str, task_name: str,
                    task_ids: List[int]) -> Tuple[str, Any]:
        """Starts ``call`` for every id in ``task_ids``; returns (engine name, engine job id)."""
        raise NotImplementedError

    def task_state(self, task: Any, task_id: int) -> str:
        """gs.STATE_QUEUE, gs.STATE_RUNNING, gs.STATE_QUEUE_ERROR or gs.STATE_UNKNOWN."""
        raise NotImplementedError

    def exit_reason(self, task: Any, task_id: int) -> Optional[str]:
        """Why the engine saw this task id's worker end without success (e.g. a signal); None if unknown."""
        return None

    def get_task_id(self, task_id: Optional[int]) -> int:
        """The task id a worker runs: given on the command line, else from the array-job environment."""
        if task_id is not None:
            return int(task_id)
        for var in ("SLURM_ARRAY_TASK_ID", "SGE_TASK_ID", "SIS_TASK_ID"):
            value = os.environ.get(var)
            if value and value != "undefined":
                return int(value)
        return 1

    def get_logpath(self, logpath_base: str, task_name: str, task_id: int) -> str:
        return os.path.join(logpath_base, f"{gs.JOB_LOG}.{task_name}.{task_id}")

    def init_worker(self, task: Any) -> None:
        """Called in the worker before the task runs."""

    def job_name(self, task: Any) -> str:
        """A name the cluster shows: task name and job id, with characters clusters accept."""
        return f"{task.name()}.{task._job._sis_id()}".replace("/", ".")

    def get_rqmt(self, task: Any, task_id: int, update: bool = False) -> Dict[str, Any]:
        """Resources of one submission: engine defaults, the task's rqmt, then the settings hooks.

        With ``update`` (resubmitting an interrupted task) values raised for earlier submissions are kept where
        the recipe did not change them, and ``update_engine_rqmt`` may raise them further from the last usage;
        ``check_engine_limits`` caps every submission.
        """
        rqmt = dict(self.get_default_rqmt(task))
        rqmt.update(task.rqmt())
        if update:
            history = [rec["rqmt"] for rec in task.submit_log() if task_id in rec.get("task_ids", []) and "rqmt" in rec]
            if history:
                initial, last = history[0], history[-1]
                missing = object()
                rqmt = {k: (last.get(k, v) if initial.get(k, missing) == v else v) for k, v in rqmt.items()}
                usage = task.last_usage(task_id)
                if usage:
                    rqmt = task.update_rqmt(rqmt, usage)
        return gs.check_engine_limits(dict(rqmt), task)

    def submit(self, task: Any, task_ids: List[int], update: bool = False) -> None:
        """Submits the task ids (in groups of ``task.parallel``) and records each submission."""
        job = task._job
        logpath = job._sis_path(abspath=True)
        groups = [task_ids]
        if task.parallel and len(task_ids) > task.parallel:
            groups = [task_ids[i:i + task.parallel] for i in range(0, len(task_ids), task.parallel)]
        for ids in groups:
            rqmt: Dict[str, Any] = {}
            for i in ids:  # one array job: the largest need of its ids
                for k, v in self.get_rqmt(task, i, update).items():
                    both_numbers = isinstance(v, (int, float)) and isinstance(rqmt.get(k), (int, float))
                    rqmt[k] = max(rqmt[k], v) if both_numbers else v
            call = task.get_worker_call()
            engine_name, engine_id = self.submit_call(call, logpath, rqmt, self.job_name(task), task.name(), ids)
            task.append_submit_log({"time": time.time(), "task_ids": ids, "engine": engine_name,
                                    "engine_id": engine_id, "rqmt": rqmt})
            logging.info("submitted %s %s %s to %s (%s)", job._sis_id(), task.name(), ids, engine_name, engine_id)


class EngineSelector(EngineBase):
    """Chooses an engine per task: ``rqmt["engine"]`` if set, "short" for mini tasks if present, else the default."""

    name = "selector"

    def __init__(self, engines: Dict[str, EngineBase], default_engine: str):
        assert default_engine in engines, f"default_engine {default_engine!r} not in {sorted(engines)}"
        self.engines = engines
        self.default_engine = default_engine

    def get_used_engine(self, task: Any) -> EngineBase:
        name = task._rqmt.get("engine")
        if name is None and task.mini_task and "short" in self.engines:
            name = "short"
        if name is None:
            name = self.default_engine
        if name not in self.engines:
            raise KeyError(f"task {task.name()} of {task._job._sis_id()} asks for engine {name!r}; "
                           f"settings.py defines {sorted(self.engines)}")
        return self.engines[name]

    def start_engine(self) -> None:
        for e in self.engines.values():
            e.start_engine()

    def stop_engine(self) -> None:
        for e in self.engines.values():
            e.stop_engine()

    def reset_cache(self) -> None:
        for e in self.engines.values():
            e.reset_cache()

    def set_priorities(self, priorities: Dict[str, int]) -> None:
        for e in self.engines.values():
            e.set_priorities(priorities)

    def wait_for_change(self, timeout: float) -> None:
        """Waits on the first engine that sees its tasks end (a local one), else the full pause; a task ending on
        another engine is noticed at the latest after ``timeout``, as without waking."""
        watching = [e for e in self.engines.values() if type(e).wait_for_change is not EngineBase.wait_for_change]
        if watching:
            watching[0].wait_for_change(timeout)
        else:
            time.sleep(timeout)

    def submit(self, task: Any, task_ids: List[int], update: bool = False) -> None:
        self.get_used_engine(task).submit(task, task_ids, update)

    def task_state(self, task: Any, task_id: int) -> str:
        return self.get_used_engine(task).task_state(task, task_id)

    def exit_reason(self, task: Any, task_id: int) -> Optional[str]:
        return self.get_used_engine(task).exit_reason(task, task_id)

    def get_task_id(self, task_id: Optional[int]) -> int:
        return EngineBase.get_task_id(self, task_id)
