"""The manager: finds runnable tasks in the graph, submits them, follows their state until the graph is done."""
from __future__ import annotations

import glob
import os
import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

import sisyphus.global_settings as gs
from sisyphus.graph import SISGraph
from sisyphus.locks import ManagerAlreadyRunning, ManagerLock, describe_owner_text
from sisyphus.tools import FileSystemError, describe_os_error


def task_state(engine: Any, task: Any, task_id: int) -> str:
    """State of one task id from the job directory's markers, the worker's claim and the engine's queue."""
    for recheck in (False, True):
        if task.finished(task_id):
            return gs.STATE_FINISHED
        if task.error(task_id):
            return gs.STATE_RETRY_ERROR if task.failures(task_id) < task.tries else gs.STATE_ERROR
        if recheck:
            break  # a worker that just ended wrote its marker before it let go of its claim
        state = engine.task_state(task, task_id)
        if state in (gs.STATE_QUEUE, gs.STATE_RUNNING, gs.STATE_QUEUE_ERROR):
            return state
        claimed = task.claimed(task_id)
        if claimed:
            return gs.STATE_RUNNING  # a worker (of this or an earlier manager, on any host) holds the task
        if claimed is None:  # job directories of older engine versions: only the heartbeat tells
            age = task.heartbeat_age(task_id)
            if age is not None and age < gs.HEARTBEAT_TIMEOUT:
                return gs.STATE_RUNNING
    if task.attempts(task_id) > 0 or (claimed is None and task.started(task_id)):
        return gs.STATE_INTERRUPTED_RESUMABLE if task.resume() else gs.STATE_INTERRUPTED_NOT_RESUMABLE
    return gs.STATE_RUNNABLE  # never started: a submission lost with a restarted manager costs no retry


def job_state(engine: Any, job: Any) -> Tuple[str, Optional[Any], List[int]]:
    """(state, current task, its task ids in that state): the first unfinished task decides."""
    if job._sis_finished():
        return gs.STATE_FINISHED, None, []
    if not job._sis_runnable():
        return gs.STATE_WAITING, None, []
    if job._sis_hold_job:
        return gs.STATE_HOLD, None, []
    if not job._sis_setup():
        return gs.STATE_RUNNABLE, job._sis_tasks()[0], job._sis_tasks()[0].task_ids()
    for task in job._sis_tasks():
        if task.finished():
            continue
        states: Dict[str, List[int]] = {}
        for i in task.task_ids():
            states.setdefault(task_state(engine, task, i), []).append(i)
        for s in (gs.STATE_ERROR, gs.STATE_QUEUE_ERROR, gs.STATE_RETRY_ERROR, gs.STATE_INTERRUPTED_NOT_RESUMABLE,
                  gs.STATE_INTERRUPTED_RESUMABLE, gs.STATE_RUNNABLE, gs.STATE_RUNNING, gs.STATE_QUEUE):
            if s in states:
                return s, task, states[s]
    job._sis_mark_finished_if_done()
    return gs.STATE_FINISHED, None, []


def disk_full_note(path: str) -> str:
    """`` (the disk holding PATH is full: N bytes free)`` when it nearly is, else "": a failed task's log
    may have lost its last lines to that."""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f" (the disk holding {path} is full: {free} bytes free)" if free < 256 * 1024 else ""


class Manager:
    """Loops over the graph: set up runnable jobs, submit, resubmit interrupted/retry tasks, mark finished jobs.

    :param graph: the graph with the registered outputs
    :param engine: the engine from settings.py
    :param interactive: ask before starting (``sis m`` without ``-r``)
    """

    def __init__(self, graph: SISGraph, engine: Any, interactive: bool = False, poll: Optional[float] = None,
                 config_done: Any = None, out=sys.stdout):
        self.graph = graph
        self.engine = engine
        self.interactive = interactive
        self.poll = gs.WAIT_PERIOD_BETWEEN_CHECKS if poll is None else poll
        self.config_done = config_done or (lambda: True)
        self.out = out
        self._last_summary = None
        self._submitted: Dict[Tuple[str, str, int], int] = {}  # task id -> its attempts when this manager submitted it
        self._lost: Counter = Counter()  # submissions of this manager whose worker never started the task
        self._job_errors: Dict[str, str] = {}  # job id -> why the manager itself could not go on with it
        self._output_errors: Dict[str, str] = {}  # output link or report -> why it could not be written
        self._priority_jobs = -1  # graph size the engine's priorities were computed for

    def _print(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def _submit(self, job: Any, task: Any, ids: List[int], update: bool = False) -> None:
        job._sis_setup_directory()  # (re)writes job.save, so a resubmission runs with the current code
        for i in ids:
            self._submitted[(job._sis_id(), task.name(), i)] = task.attempts(i)
        self.engine.submit(task, ids, update=update)

    def _exit_note(self, task: Any, ids: List[int]) -> str:
        reasons = [r for r in (self.engine.exit_reason(task, i) for i in ids) if r]
        return f" ({'; '.join(reasons)})" if reasons else ""

    def _lost_launches(self, job: Any, task: Any, ids: List[int]) -> List[int]:
        """Ids this manager submitted whose worker ended without starting the task; too many make an error."""
        if task is None:
            return []
        failed = []
        for i in ids:
            key = (job._sis_id(), task.name(), i)
            if key in self._submitted and self._submitted.pop(key) == task.attempts(i):
                self._lost[key] += 1
                note = self._exit_note(task, [i])
                self._print(f"worker of {job._sis_id()} task {task.name()}.{i} ended before starting it{note}")
                if self._lost[key] > gs.MAX_SUBMIT_RETRIES:
                    self._job_errors[job._sis_id()] = (f"task {task.name()}.{i}: {self._lost[key]} workers ended "
                                                       f"before starting it{note}; see {job._sis_path(gs.JOB_LOG_ENGINE)}")
                    failed.append(i)
        return failed

    def _act(self, job: Any) -> Tuple[str, Any, List[int]]:
        """Finds a job's state and submits what is due; returns (state, task, ids)."""
        if job._sis_id() in self._job_errors:
            return gs.STATE_ERROR, None, []
        state, task, ids = job_state(self.engine, job)
        if state == gs.STATE_RUNNABLE:
            if self._lost_launches(job, task, ids):
                return gs.STATE_ERROR, None, []
            self._submit(job, task, ids)
            state = gs.STATE_QUEUE
        elif state == gs.STATE_RETRY_ERROR:
            for i in ids:
                task.reset(i)
            self._print(f"retry {job._sis_id()} task {task.name()} {ids} (log: {task.log_path(ids[0])})")
            self._submit(job, task, ids)
            state = gs.STATE_QUEUE
        elif state in (gs.STATE_INTERRUPTED_RESUMABLE, gs.STATE_INTERRUPTED_NOT_RESUMABLE):
            note = self._exit_note(task, ids)
            for i in ids:
                self._submitted.pop((job._sis_id(), task.name(), i), None)
            # interruptions after which the task got on (a resuming training at its time limit) are free
            retry_ids = [i for i in ids if task.attempts_without_progress(i) <= gs.MAX_SUBMIT_RETRIES]
            if retry_ids:
                how = "resume" if state == gs.STATE_INTERRUPTED_RESUMABLE else "rerun"
                self._print(f"{how} interrupted {job._sis_id()} task {task.name()} {retry_ids}{note}")
                self._submit(job, task, retry_ids, update=True)
                state = gs.STATE_QUEUE
            else:
                if note:
                    self._print(f"{job._sis_id()} task {task.name()} {ids} interrupted too often{note}")
                state = gs.STATE_ERROR
        return state, task, ids

    def _update_priorities(self, jobs: List[Any]) -> None:
        """Tells the engine how many jobs wait for each job (recomputed when the graph grows)."""
        if len(jobs) == self._priority_jobs:
            return
        waiting = self.graph.waiting_jobs(jobs)
        self.engine.set_priorities({job._sis_path(abspath=True): waiting[job._sis_id()] for job in jobs})
        self._priority_jobs = len(jobs)

    def step(self) -> Dict[str, List[Tuple[Any, Any, List[int]]]]:
        """One loop: returns jobs grouped by state (after acting on them)."""
        self.engine.reset_cache()
        by_state: Dict[str, List[Tuple[Any, Any, List[int]]]] = {}
        jobs = self.graph.jobs()
        self._update_priorities(jobs)
        for job in jobs:
            try:
                state, task, ids = self._act(job)
                if state == gs.STATE_ERROR and job._sis_id() not in self._job_errors:
                    gs.on_job_failure(job)  # may clear error markers to retry (upstream's hook)
                    state, task, ids = self._act(job)
            except OSError as exc:  # e.g. a full disk while writing job.save: stop this job, say why
                message = str(exc) if isinstance(exc, FileSystemError) else describe_os_error(exc)
                self._job_errors[job._sis_id()] = message
                self._print(f"ERROR: {job._sis_id()}: {message}")
                state, task, ids = gs.STATE_ERROR, None, []
            if state == gs.STATE_FINISHED and gs.JOB_AUTO_CLEANUP and job._sis_cleanable():
                job._sis_cleanup()
            by_state.setdefault(state, []).append((job, task, ids))
        self._update_outputs()
        return by_state

    def _update_outputs(self) -> None:
        for name, message in self.graph.update_outputs().items():
            if self._output_errors.get(name) != message:
                self._print(f"ERROR: {message}")
            self._output_errors[name] = message

    def summary(self, by_state: Dict[str, list]) -> str:
        counts = Counter({s: len(v) for s, v in by_state.items()})
        return " ".join(f"{s}: {counts[s]}" for s in sorted(counts))

    def print_errors(self, by_state: Dict[str, list]) -> None:
        for job, task, ids in by_state.get(gs.STATE_ERROR, []):
            if job._sis_id() in self._job_errors:
                self._print(f"ERROR: {job._sis_id()}: {self._job_errors[job._sis_id()]}")
                continue
            if task is None:
                continue
            full = disk_full_note(job._sis_path(abspath=True))
            for i in ids:
                self._print(f"ERROR: {job._sis_id()} task {task.name()}.{i} failed; log: {task.log_path(i)}{full}")
                self._print_log_tail(job, task.log_path(i))

    def _print_log_tail(self, job: Any, log: str) -> None:
        """The last lines of a failed task's log, or of what the engine captured where the worker did not get as far
        as its log."""
        if not os.path.isfile(log):
            engine_logs = sorted(glob.glob(os.path.join(job._sis_path(abspath=True), gs.JOB_LOG_ENGINE, "*")),
                                 key=os.path.getmtime)
            if not engine_logs:
                return
            log = engine_logs[-1]
            self._print(f"    (no task log; engine log: {log})")
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-gs.PRINT_ERROR_LINES:]
        self._print("".join("    " + line for line in tail).rstrip())

    def run(self, max_time: Optional[float] = None) -> int:
        """Runs until all targets are finished (0) or nothing can progress because of errors (1)."""
        if self.interactive and not self._confirm_start():
            return 0
        lock = ManagerLock(os.path.join(gs.BASE_DIR, gs.WORK_DIR))
        try:
            lock.acquire()
        except ManagerAlreadyRunning as exc:
            self._print(f"ERROR: {exc}")
            return 3
        except OSError as exc:
            self._print(f"ERROR: {describe_os_error(exc)}")
            return 1
        if lock.previous_owner:
            self._print(f"note: the last manager on this work directory ended without releasing it "
                        f"({describe_owner_text(lock.previous_owner)}); its workers are checked by their claims")
        self.engine.start_engine()
        try:
            return self._loop(max_time)
        finally:
            self.engine.stop_engine()
            lock.release()

    def _confirm_start(self) -> bool:
        """Shows the graph's states and asks whether to start (``sis m`` without ``-r``)."""
        by_state: Dict[str, list] = {}
        for job in self.graph.jobs():
            by_state.setdefault(job_state(self.engine, job)[0], []).append(job)
        self._print(self.summary(by_state))
        try:
            answer = input("start manager? [y/N] ").strip().lower()
        except EOFError:
            self._print("no answer (stdin is closed): not starting; use -r to start without asking")
            return False
        return answer in ("y", "yes")

    def _loop(self, max_time: Optional[float]) -> int:
        """Steps until the graph is done (0), stuck (1) or ``max_time`` seconds have passed (2)."""
        start = time.time()
        while True:
            by_state = self.step()
            summary = self.summary(by_state)
            if summary != self._last_summary:
                self._print(f"[{time.strftime('%H:%M:%S')}] {summary}")
                self._last_summary = summary
            rc = self._outcome(by_state)
            if rc is not None:
                return rc
            if max_time is not None and time.time() - start > max_time:
                self._print("stopping: time limit of the manager reached")
                return 2
            self.engine.wait_for_change(self.poll)

    def _outcome(self, by_state: Dict[str, list]) -> Optional[int]:
        """The manager's exit code once nothing is left to wait for: 0 when every output is there, 1 when the rest
        cannot be made (failed jobs, jobs on hold, missing inputs); None while tasks are active or the config may
        still add jobs."""
        active = any(by_state.get(s) for s in (gs.STATE_QUEUE, gs.STATE_RUNNING, gs.STATE_RUNNABLE))
        if active or not self.config_done():
            return None
        if all(t.is_done() for t in self.graph.targets):
            self._update_outputs()
            if self._output_errors:
                self._print("stopping: some outputs could not be linked or written (see above)")
                return 1
            self._print("all outputs finished")
            return 0
        if by_state.get(gs.STATE_ERROR) or by_state.get(gs.STATE_QUEUE_ERROR):
            self.print_errors(by_state)
            self._print("stopping: the remaining jobs depend on failed jobs")
            return 1
        if by_state.get(gs.STATE_HOLD):
            self._print("stopping: the remaining jobs are on hold")
            return 1
        return self._missing_inputs(by_state)

    def _missing_inputs(self, by_state: Dict[str, list]) -> Optional[int]:
        """1 with the inputs named where the remaining jobs wait for files that no job makes; None otherwise."""
        if not by_state.get(gs.STATE_WAITING):
            # targets not done, nothing to do: e.g. an input file of the setup is missing
            missing = [str(p) for t in self.graph.targets for p in t.required
                       if p.creator is None and not p.available()]
            self._print(f"stopping: missing inputs {missing}")
            return 1
        waiting = [j for j, _, _ in by_state[gs.STATE_WAITING]]
        absent = [(j, p) for j in waiting for p in j._sis_inputs if p.creator is None and not p.available()]
        if not absent:
            return None
        for j, p in absent:
            self._print(f"ERROR: {j._sis_id()} needs input {p} which does not exist")
        self._print("stopping: missing input files")
        return 1
