"""Runs tasks as local subprocesses, in parallel within the machine's cpu, memory and gpu limits."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import sisyphus.global_settings as gs
from sisyphus.engine import EngineBase
from sisyphus.tools import describe_os_error


def _total_mem_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 8.0


class LocalEngine(EngineBase):
    """A process pool that starts a task only while the sum of running tasks' rqmt fits the limits.

    Queued tasks start in the order of their jobs' priorities (:meth:`set_priorities`: the manager gives the number of
    jobs waiting for each job, so a long chain such as a training and its searches is not held up by side jobs that
    became runnable at the same moment), then first in, first out. A task that does not fit yet is not overtaken.

    :param cpus: cores to use (default: all)
    :param mem: memory in GB (default: the machine's)
    :param gpus: GPUs to hand out (CUDA_VISIBLE_DEVICES is set per task)
    :param cpu: upstream's name for ``cpus`` (``LocalEngine(cpu=8)`` in upstream settings files)
    :param gpu: upstream's name for ``gpus``
    """

    name = "local"

    def __init__(self, cpus: Optional[int] = None, mem: Optional[float] = None, gpus: int = 0, *,
                 cpu: Optional[int] = None, gpu: Optional[int] = None):
        cpus = cpu if cpu is not None else cpus
        gpus = gpu if gpu is not None else gpus
        self.cpus = cpus or os.cpu_count() or 1
        self.mem = mem if mem is not None else _total_mem_gb()
        self.gpus = gpus
        self._queue: List[Tuple[List[str], Dict[str, Any], str, int, str]] = []
        self._running: Dict[Tuple[str, int], Tuple[subprocess.Popen, Dict[str, Any], List[int], str, str]] = {}
        self._exits: Dict[Tuple[str, int], str] = {}  # why a worker ended without success, until asked once
        self._free_gpus = list(range(gpus))
        self._priorities: Dict[str, int] = {}  # job directory -> priority (higher first)
        self._lock = threading.RLock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._ended = threading.Event()  # a task ended since the manager last waited
        self.max_used = {"cpu": 0, "mem": 0.0, "gpu": 0}  # peak usage, for inspection

    # scheduling -----------------------------------------------------------------------------------------
    def start_engine(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="LocalEngine", daemon=True)
            self._thread.start()

    def stop_engine(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def kill_all(self) -> None:
        """Kills every running task (used when the manager is interrupted)."""
        with self._lock:
            self._queue.clear()
            for proc, _, _, _, _ in self._running.values():
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass

    def _clamp(self, rqmt: Dict[str, Any], what: str) -> Dict[str, Any]:
        r = {"cpu": int(rqmt.get("cpu", 1)), "mem": float(rqmt.get("mem", 1)), "gpu": int(rqmt.get("gpu", 0) or 0)}
        if r["cpu"] > self.cpus:
            logging.warning("%s asks for %d cpus, the local engine has %d: using %d", what, r["cpu"], self.cpus, self.cpus)
            r["cpu"] = self.cpus
        if r["mem"] > self.mem:
            logging.warning("%s asks for %.1f GB, the local engine has %.1f: using all", what, r["mem"], self.mem)
            r["mem"] = self.mem
        if r["gpu"] > self.gpus:
            raise RuntimeError(f"{what} needs {r['gpu']} GPU(s) but the local engine has {self.gpus}; "
                               f"set gpus= in settings.py or run it on a cluster engine")
        return r

    def _used(self) -> Dict[str, float]:
        used = {"cpu": 0, "mem": 0.0, "gpu": 0}
        for _, r, _, _, _ in self._running.values():
            for k in used:
                used[k] += r[k]
        return used

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._step()
            time.sleep(0.2)

    def wait_for_change(self, timeout: float) -> None:
        """Returns as soon as a task ends (its users can then be submitted at once), at the latest after ``timeout``."""
        if self._ended.wait(timeout):
            self._ended.clear()

    def set_priorities(self, priorities: Dict[str, int]) -> None:
        with self._lock:
            self._priorities = dict(priorities)

    def _step(self) -> None:
        with self._lock:
            for key, (proc, _, _, _, _) in list(self._running.items()):
                if proc.poll() is not None:
                    self._reap(key)
            # stable sort: first in, first out among equal priorities
            self._queue.sort(key=lambda item: -self._priorities.get(item[2], 0))
            remaining = []
            for item in self._queue:
                call, r, logpath, task_id, task_name = item
                used = self._used()
                fits = (used["cpu"] + r["cpu"] <= self.cpus and used["mem"] + r["mem"] <= self.mem + 1e-9
                        and used["gpu"] + r["gpu"] <= self.gpus)
                if fits and not remaining:  # in queue order: no overtaking by smaller tasks
                    try:
                        self._start(call, r, logpath, task_id, task_name)
                    except OSError as exc:  # e.g. a full disk: the manager hears of it, the engine goes on
                        self._exits[(" ".join(call), task_id)] = f"could not start the worker: {describe_os_error(exc)}"
                else:
                    remaining.append(item)
            self._queue = remaining
            used = self._used()
            for k in self.max_used:
                self.max_used[k] = max(self.max_used[k], used[k])

    def _reap(self, key: Tuple[str, int]) -> None:
        proc, _, gpus, logpath, task_name = self._running.pop(key)
        self._ended.set()
        self._free_gpus.extend(gpus)
        if proc.returncode != 0:
            self._record_exit(key, proc, logpath, task_name)

    def _record_exit(self, key: Tuple[str, int], proc: subprocess.Popen, logpath: str, task_name: str) -> None:
        """Keeps why a worker ended badly, and notes it in the task log if the worker could not."""
        rc = proc.returncode
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            reason = f"worker pid {proc.pid} killed by signal {name} ({-rc})"
        else:
            reason = f"worker pid {proc.pid} exited with code {rc}"
        task_id = key[1]
        markers = [os.path.join(logpath, f"{kind}.{task_name}.{task_id}") for kind in (gs.STATE_FINISHED, gs.STATE_ERROR)]
        if not any(os.path.exists(m) for m in markers):
            try:
                with open(os.path.join(logpath, f"{gs.JOB_LOG}.{task_name}.{task_id}"), "a", encoding="utf-8") as f:
                    hint = " (the out-of-memory killer sends SIGKILL)" if rc == -signal.SIGKILL else ""
                    f.write(f"+------------ {reason}, without recording an outcome{hint}\n")
            except OSError:
                pass
            self._exits[key] = reason

    def exit_reason(self, task: Any, task_id: int) -> Optional[str]:
        """Why the last worker of this task id ended without success (once; None if it did not)."""
        with self._lock:
            return self._exits.pop((" ".join(task.get_worker_call()), task_id), None)

    def _start(self, call: List[str], r: Dict[str, Any], logpath: str, task_id: int, task_name: str) -> None:
        env = dict(os.environ)
        gpus = [self._free_gpus.pop(0) for _ in range(r["gpu"])]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        env["SIS_TASK_ID"] = str(task_id)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(r["cpu"])
        engine_log = os.path.join(logpath, gs.JOB_LOG_ENGINE, f"local.{task_name}.{task_id}")
        try:
            os.makedirs(os.path.dirname(engine_log), exist_ok=True)
            with open(engine_log, "ab") as out:
                proc = subprocess.Popen(call + [str(task_id)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                        cwd=gs.BASE_DIR, start_new_session=True)
        except OSError:
            self._free_gpus.extend(gpus)
            raise
        self._running[(" ".join(call), task_id)] = (proc, r, gpus, logpath, task_name)

    # interface -------------------------------------------------------------------------------------------
    def submit_call(self, call: List[str], logpath: str, rqmt: Dict[str, Any], name: str, task_name: str,
                    task_ids: List[int]) -> Tuple[str, Any]:
        r = self._clamp(rqmt, name)
        with self._lock:
            for i in task_ids:
                self._queue.append((call, r, logpath, i, task_name))
        self.start_engine()
        return self.name, os.getpid()

    def task_state(self, task: Any, task_id: int) -> str:
        key = (" ".join(task.get_worker_call()), task_id)
        with self._lock:
            if key in self._running:
                if self._running[key][0].poll() is None:
                    return gs.STATE_RUNNING
                self._reap(key)  # ended just now: its exit is known before the manager asks why
            call = task.get_worker_call()
            if any(c == call and i == task_id for c, _, _, i, _ in self._queue):
                return gs.STATE_QUEUE
        return gs.STATE_UNKNOWN

    def wait_idle(self, timeout: float = 60) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            with self._lock:
                self._step()
                if not self._queue and not self._running:
                    return True
            time.sleep(0.1)
        return False
