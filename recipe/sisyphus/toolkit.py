"""``tk``: the functions configs use to register outputs and reports (upstream's sisyphus.toolkit)."""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Optional

import sisyphus.global_settings as gs
from sisyphus.graph import OutputPath, OutputReport, graph as sis_graph
from sisyphus.job import Job
from sisyphus.job_path import AbstractPath, Path, Variable
from sisyphus.delayed_ops import DelayedBase
from sisyphus.safe_names import check_relative_name


def register_output(name: str, value: AbstractPath, export_graph: bool = False) -> None:
    """Marks ``value`` as a result: the manager computes it and links it to ``output/<name>``."""
    if not isinstance(value, AbstractPath):
        raise TypeError(f"register_output({name!r}): expected a tk.Path, got {type(value).__name__}: {value!r}")
    check_relative_name(name, "output name", f"{gs.OUTPUT_DIR}/")
    sis_graph.add_target(OutputPath(name, value))


def register_report(name: str, values: Any, template: Optional[str] = None, required: Any = None,
                    update_frequency: float = 300, report_fn: Optional[Callable] = None) -> None:
    """Writes a text report to ``output/<name>``: ``values`` formatted with ``template`` or ``report_fn``."""
    check_relative_name(name, "report name", f"{gs.OUTPUT_DIR}/")
    if callable(values) and report_fn is None:
        report_fn, values = (lambda v: values()), None
    sis_graph.add_target(OutputReport(name, values, template=template, report_fn=report_fn, required=required))


def register_callback(f: Callable, *args, **kwargs) -> None:
    f(*args, **kwargs)


def uncached_path(path: Any) -> str:
    """The string path of a Path (or the string itself)."""
    return path.get_path() if isinstance(path, AbstractPath) else str(path)


cached_path = uncached_path


def setup_path(package: str) -> Callable[[str], Path]:
    """``setup_path(__package__)("file")``: a Path relative to the folder of the calling config package."""
    base = os.path.join(*package.split(".")) if package else ""

    def make(path: str, *args, **kwargs) -> Path:
        return Path(path if os.path.isabs(path) else os.path.join(base, path), *args, **kwargs)

    return make


def input_path(path: str) -> Path:
    return Path(path)


def running_in_worker() -> bool:
    return os.environ.get("SIS_WORKER") == "1"


async def async_run(obj: Any, poll: float = 1.0) -> Any:
    """In ``async def py()`` configs: waits until the paths inside ``obj`` are computed by the manager."""
    from sisyphus.tools import extract_paths

    paths = extract_paths(obj) if not isinstance(obj, AbstractPath) else {obj}
    for p in paths:  # hidden targets, so the manager computes them
        sis_graph.add_target(OutputPath(f".async/{p.creator._sis_id() if p.creator else 'input'}/{p.path}", p))
    while not all(p.available() for p in paths):
        await asyncio.sleep(poll)
    return obj


def run_job(job: Job, dependencies: bool = True) -> Job:
    """Runs a job's tasks in this process (and first its unfinished input jobs): for debugging and tests.

    Errors propagate as exceptions; the job is marked finished only if every task succeeded.
    """
    from sisyphus.graph import SISGraph

    order = [job]
    if dependencies:
        g = SISGraph()
        g.add_target(OutputPath(f".run_job/{job._sis_id()}", Path("", job)))
        order = g.jobs()
    cwd = os.getcwd()
    try:
        for j in order:
            if j._sis_finished():
                continue
            missing = [str(p) for p in j._sis_inputs if not p.available()]
            if missing:
                raise FileNotFoundError(f"{j._sis_id()}: inputs not available: {missing}")
            j._sis_runnable()
            j._sis_setup_directory()
            for task in j._sis_tasks():
                for i in task.task_ids():
                    if task.finished(i):
                        continue
                    os.chdir(j._sis_path(gs.JOB_WORK_DIR, abspath=True))
                    task.run(i)
                    from sisyphus.tools import atomic_touch

                    atomic_touch(task.path(gs.STATE_FINISHED, i))
            j._sis_mark_finished_if_done()
    finally:
        os.chdir(cwd)
    return job


def bundle_to_str(bundle: Any) -> str:
    return " ".join(uncached_path(p) for p in bundle)


def zipper_jobs() -> list:
    return sis_graph.jobs()


__all__ = [
    "Path", "Variable", "Job", "DelayedBase", "register_output", "register_report", "uncached_path", "cached_path",
    "setup_path", "input_path", "sis_graph", "async_run", "running_in_worker", "gs",
]
