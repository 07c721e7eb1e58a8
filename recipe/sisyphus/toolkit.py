"""``tk``: the functions configs use to register outputs and reports (upstream's sisyphus.toolkit)."""
from __future__ import annotations

import asyncio
import gzip
import os
import pickle
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import sisyphus.global_settings as gs
from sisyphus.block import block, set_root_block, sub_block  # noqa: F401  (upstream's tk.block, ...)
from sisyphus.delayed_ops import Delayed, DelayedBase  # noqa: F401
from sisyphus.graph import OutputPath, OutputReport, graph as sis_graph
from sisyphus.job import Job
from sisyphus.job_path import AbstractPath, Path, Variable, VariableNotSet  # noqa: F401
from sisyphus.tools import extract_paths, sh  # noqa: F401
from sisyphus.safe_names import check_relative_name


class BlockedWorkflow(Exception):
    """Upstream's exception for a workflow that cannot continue (kept for recipes that raise or catch it)."""


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
    if callable(values) and not isinstance(values, DelayedBase) and report_fn is None:  # paths are callable
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


def input_path(path: Union[str, Path]) -> Path:
    """A Path for a string; a Path is returned as it is."""
    if isinstance(path, str):
        return Path(path)
    assert isinstance(path, Path), f"input_path: expected str or tk.Path, got {type(path).__name__}: {path!r}"
    return path


def is_path(path: Any) -> bool:
    """True for a ``tk.Path`` (a Variable is not a Path, as upstream)."""
    return isinstance(path, Path)


def zipped(filename: Union[str, Path]) -> bool:
    """True if the file starts with the gzip magic bytes."""
    with open(str(filename), "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class mktemp:
    """``with tk.mktemp() as name:`` a temporary file name (below gs.TMP_PREFIX), removed at the end."""

    def __enter__(self) -> str:
        fd, self.temp_path = tempfile.mkstemp(prefix=os.path.basename(gs.TMP_PREFIX),
                                              dir=os.path.dirname(gs.TMP_PREFIX) or None)
        os.close(fd)
        os.remove(self.temp_path)
        return self.temp_path

    def __exit__(self, exc_type, exc, tb) -> None:
        if os.path.isdir(self.temp_path) and not os.path.islink(self.temp_path):
            shutil.rmtree(self.temp_path)
        elif os.path.lexists(self.temp_path):
            os.unlink(self.temp_path)


def dump(obj: Any, filename: str) -> None:
    """Pickles ``obj`` into a gzipped file, creating its directory."""
    directory = os.path.dirname(filename)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with gzip.open(filename, "wb") as f:
        pickle.dump(obj, f)


def load_file(path: str) -> Any:
    """Unpickles a file written by ``dump`` (gzipped or plain)."""
    opener = gzip.open if zipped(path) else open
    with opener(path, "rb") as f:
        return pickle.load(f)


def running_in_worker() -> bool:
    """True inside a worker running a task."""
    return os.environ.get("SIS_WORKER") == "1"


_running_in_manager = False


def running_in_manager() -> bool:
    """True in the manager and the console."""
    return _running_in_manager


async def async_gather(*aws: Any) -> list:
    """``asyncio.gather`` for ``async def py()`` configs that build several parts concurrently."""
    return list(await asyncio.gather(*aws))


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


# ---------------------------------------------------------------------------------------------------------------
# console helpers (upstream's names)

def load_job(path: str) -> Job:
    """The job saved in a job directory, also after cleanup (``job.save`` inside ``finished.tar.gz``)."""
    from sisyphus.job import load_job as _load

    if os.path.isfile(path):
        if path.endswith(gs.JOB_FINISHED_ARCHIVE):
            return _load(os.path.dirname(path))
        return load_file(path)
    return _load(path)


def setup_job_directory(job: Job) -> None:
    """Creates the job's directory (output/, work/, input/ links, job.save, info) without running it."""
    job._sis_setup_directory()


def find_job(pattern: str) -> List[Job]:
    """Jobs of the loaded graph whose id or alias contains ``pattern``."""
    return sis_graph.find(pattern)


def find_path(pattern: str) -> List[AbstractPath]:
    """Outputs of the graph's jobs whose path contains ``pattern``."""
    return [p for j in sis_graph.jobs() for p in j._sis_outputs.values() if pattern in p.get_path()]


def _descendants(sources: Sequence[Union[str, AbstractPath, Job]]) -> List[Job]:
    """Jobs of the graph that are one of ``sources``, create one of them, or (transitively) read one of them."""
    source_ids = {s._sis_id() for s in sources if isinstance(s, Job)}
    source_paths = {uncached_path(s) for s in sources if isinstance(s, (str, AbstractPath))}
    source_paths = {os.path.abspath(p) for p in source_paths}
    affected: List[Job] = []
    affected_ids = set()
    for job in sis_graph.jobs():  # inputs before users
        hit = (job._sis_id() in source_ids or os.path.abspath(job._sis_path(abspath=True)) in source_paths
               or any(p.get_path() in source_paths for p in job._sis_outputs.values()))
        for p in list(job._sis_inputs):
            if hit:
                break
            hit = (p.creator is not None and p.creator._sis_id() in affected_ids) or p.get_path() in source_paths
        if hit:
            affected.append(job)
            affected_ids.add(job._sis_id())
    return affected


def remove_job_and_descendants(jobs: Union[str, AbstractPath, Job, Sequence[Union[str, AbstractPath, Job]]],
                               mode: str = "remove", ask: bool = True) -> List[Job]:
    """Removes (``mode="move"``: moves aside) the directories of the given jobs/paths and of every job using them.

    ``mode="dryrun"`` only lists them; as upstream, it asks before deleting unless ``ask=False``.
    Returns the affected jobs that had a directory.
    """
    assert mode in ("remove", "move", "dryrun"), f"remove_job_and_descendants: mode {mode!r} is not remove/move/dryrun"
    if isinstance(jobs, (str, AbstractPath, Job)):
        jobs = [jobs]
    affected = [j for j in _descendants(list(jobs)) if j._sis_setup()]
    if not affected:
        print("No job depending on the input is set up")
        return []
    print("Directories to delete:" if mode != "move" else "Directories to move aside:")
    for job in affected:
        print(job._sis_path(abspath=True))
    if mode == "dryrun":
        return affected
    if ask and input("Start deleting? (y/N): ").strip().lower() != "y":
        print("Abort")
        return []
    for job in affected:
        job._sis_move() if mode == "move" else job._sis_delete()
    return affected


def _hardlink_tree(src: str, dst: str) -> None:
    """Copies a directory tree with hard links (a copy where the file system refuses links)."""
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy)


def import_work_directory(directories: Union[str, Sequence[str]], mode: str = "dryrun",
                          use_alias: bool = False) -> List[Tuple[str, str]]:
    """Takes finished jobs of the graph from other work directories (``copy``, ``symlink``, ``hardlink``).

    A job is found there under its id (job ids are equal across setups), or with ``use_alias`` through the
    alias links of that setup. Jobs already set up here are left alone. Returns (job id, source) pairs.
    """
    from sisyphus.job import job_finished

    assert mode in ("copy", "symlink", "hardlink", "dryrun"), f"import_work_directory: unsupported mode {mode!r}"
    if isinstance(directories, str):
        directories = [directories]
    imported: List[Tuple[str, str]] = []
    for job in sis_graph.jobs():
        if job._sis_setup():
            continue
        for directory in directories:
            if use_alias:
                targets = {os.path.realpath(os.path.join(directory, a)) for a in (job.get_aliases() or ())
                           if os.path.islink(os.path.join(directory, a))}
                if len(targets) != 1:
                    continue
                source = targets.pop()
            else:
                source = os.path.realpath(os.path.join(directory, job._sis_id()))
            if not (os.path.isdir(source) and job_finished(source)):
                continue
            local = job._sis_path(abspath=True)
            if mode != "dryrun":
                os.makedirs(os.path.dirname(local), exist_ok=True)
                if os.path.islink(local):
                    os.unlink(local)  # a dangling link from an earlier import
                if mode == "copy":
                    shutil.copytree(source, local, symlinks=True)
                elif mode == "symlink":
                    os.symlink(source, local, target_is_directory=True)
                else:
                    _hardlink_tree(source, local)
            print(f"{'would import' if mode == 'dryrun' else 'imported'} {job._sis_id()} from {source} ({mode})")
            imported.append((job._sis_id(), source))
            break
    return imported


def compare_graph(obj1: Any, obj2: Any, traceback: Optional[list] = None,
                  visited: Optional[set] = None) -> Iterator[list]:
    """Yields, for each difference between two graphs (jobs, paths, values), the chain of objects leading to it.

    E.g. ``next(tk.compare_graph(job_a, job_b))`` shows the first argument where two versions of a job differ.
    """
    from sisyphus.hash import short_hash

    visited = set() if visited is None else visited
    traceback = ([] if traceback is None else traceback) + [(obj1, obj2)]
    try:
        key = short_hash(obj1)
    except Exception:  # noqa: BLE001 - objects that cannot be hashed are compared, not skipped
        key = None
    if key is not None:
        if key in visited:
            return
        visited.add(key)
    if type(obj1) is not type(obj2):
        yield traceback + [(type(obj1), type(obj2))]
    elif isinstance(obj1, Job):
        if obj1._sis_id() != obj2._sis_id():
            yield from compare_graph(obj1._sis_kwargs, obj2._sis_kwargs, traceback, visited)
    elif isinstance(obj1, AbstractPath):
        if obj1.path != obj2.path:
            yield traceback + [(obj1.path, obj2.path)]
        else:
            yield from compare_graph(obj1.creator, obj2.creator, traceback, visited)
    elif isinstance(obj1, (list, tuple, set, frozenset)):
        if len(obj1) != len(obj2):
            yield traceback + [(len(obj1), len(obj2))]
        else:
            if isinstance(obj1, (set, frozenset)):
                obj1, obj2 = sorted(obj1, key=short_hash), sorted(obj2, key=short_hash)
            for a, b in zip(obj1, obj2):
                yield from compare_graph(a, b, traceback, visited)
    elif isinstance(obj1, dict):
        for k, v1 in obj1.items():
            if k not in obj2:
                yield traceback + [(k, None)]
            else:
                yield from compare_graph(v1, obj2[k], traceback, visited)
        for k in obj2:
            if k not in obj1:
                yield traceback + [(None, k)]
    elif hasattr(obj1, "__dict__") and not isinstance(obj1, type):
        yield from compare_graph(vars(obj1), vars(obj2), traceback, visited)
    elif obj1 != obj2:
        yield traceback


def export_graph(output_file: Optional[str] = None) -> List[Tuple[str, list]]:
    """Writes one line per job of the graph: its id and the steps that reach it from a registered output.

    A step is an output name, ``"creator"``, a constructor argument name, or a list index/dict key, so the
    lines say where in a config each job comes from (and let two versions of a graph be matched up).
    """
    lines: List[Tuple[str, list]] = []
    seen = set()
    queue: List[Tuple[Any, list]] = [(t.path, [t.name]) for t in sis_graph.targets if isinstance(t, OutputPath)]
    while queue:
        obj, steps = queue.pop(0)
        if isinstance(obj, AbstractPath):
            if obj.creator is not None:
                queue.append((obj.creator, steps + ["creator"]))
        elif isinstance(obj, Job):
            if obj._sis_id() in seen:
                continue
            seen.add(obj._sis_id())
            lines.append((obj._sis_id(), steps))
            queue.extend((v, steps + [k]) for k, v in sorted(obj._sis_kwargs.items()))
        elif isinstance(obj, (list, tuple)):
            queue.extend((v, steps + [i]) for i, v in enumerate(obj))
        elif isinstance(obj, dict):
            queue.extend((v, steps + [k]) for k, v in obj.items())
        elif isinstance(obj, (set, frozenset)):
            queue.extend((v, steps + ["<set>"]) for v in obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, str)):
            queue.extend((v, steps + [k]) for k, v in vars(obj).items())
    text = "".join(f"{job_id} {steps!r}\n" for job_id, steps in lines)
    if output_file:
        with open(output_file, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return lines


__all__ = [
    "Path", "AbstractPath", "Variable", "VariableNotSet", "Job", "Delayed", "DelayedBase", "register_output",
    "register_report", "register_callback", "uncached_path", "cached_path", "setup_path", "input_path", "is_path",
    "sis_graph", "async_run", "async_gather", "running_in_worker", "running_in_manager", "gs", "block", "sub_block",
    "set_root_block", "dump", "load_file", "zipped", "mktemp", "load_job", "setup_job_directory", "find_job",
    "find_path", "remove_job_and_descendants", "import_work_directory", "compare_graph", "export_graph",
    "run_job", "sh", "extract_paths", "BlockedWorkflow",
]
