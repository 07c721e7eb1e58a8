"""An interactive console on the loaded graph: inspect states and logs, rerun or clean jobs."""
from __future__ import annotations

import code
import os
from typing import Any, Dict, List, Optional

import sisyphus.global_settings as gs
from sisyphus.cleaner import remove_dirs, unused_job_dirs
from sisyphus.manager import job_state


class Console:
    """The helpers available in ``sis console`` (also usable from scripts)."""

    def __init__(self, graph: Any, engine: Any):
        self.graph = graph
        self.engine = engine

    def jobs(self, pattern: str = "") -> List[Any]:
        """Jobs of the graph whose id or alias contains ``pattern``."""
        return self.graph.find(pattern) if pattern else self.graph.jobs()

    def states(self) -> Dict[str, List[str]]:
        """Job ids grouped by state."""
        out: Dict[str, List[str]] = {}
        for j in self.graph.jobs():
            out.setdefault(job_state(self.engine, j)[0], []).append(j._sis_id())
        return out

    def print_states(self) -> None:
        for state, ids in sorted(self.states().items()):
            print(f"{state}: {len(ids)}")
            for i in ids:
                print(f"    {i}")

    def log(self, job: Any, task: Optional[str] = None, task_id: int = 1, lines: int = 40) -> str:
        """The last lines of a task's log."""
        job = self._job(job)
        t = job._sis_tasks()[0] if task is None else next(x for x in job._sis_tasks() if x.name() == task)
        path = t.log_path(task_id)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        packed = job._sis_archived_file(os.path.basename(path))  # after JOB_AUTO_CLEANUP
        if packed is None:
            return f"(no log {path})"
        return "".join(packed.decode("utf-8", errors="replace").splitlines(keepends=True)[-lines:])

    def rerun(self, job: Any) -> str:
        """Moves a job's directory aside so the next manager run computes it again."""
        job = self._job(job)
        return job._sis_move() if job._sis_setup() else ""

    def clear_errors(self, job: Any) -> None:
        """Removes error markers so failed tasks are retried, with a fresh budget of ``tries``."""
        job = self._job(job)
        for t in job._sis_tasks():
            for i in t.task_ids():
                if t.error(i):
                    t.reset(i)
                    t.clear_history(i)

    def unused(self) -> List[str]:
        """Job directories no registered output needs."""
        return unused_job_dirs(self.graph.jobs())

    def clean(self, dry_run: bool = True) -> List[str]:
        """Lists (and with dry_run=False removes) the unused job directories."""
        dirs = self.unused()
        if not dry_run:
            remove_dirs(dirs)
        return dirs

    def _job(self, job: Any) -> Any:
        if isinstance(job, str):
            found = self.graph.find(job)
            if len(found) != 1:
                raise KeyError(f"{job!r} matches {len(found)} jobs")
            return found[0]
        return job


def start(graph: Any, engine: Any, command: Optional[str] = None) -> None:
    """Runs ``command`` in the console namespace, or opens IPython (or the plain Python console)."""
    import sisyphus.toolkit as tk

    console = Console(graph, engine)
    ns = {name: getattr(console, name) for name in dir(console) if not name.startswith("_")}
    ns.update({"tk": tk, "gs": gs, "graph": graph, "engine": engine, "console": console})
    # upstream's console helpers, under their own names (tk.* works as well)
    for name in ("remove_job_and_descendants", "import_work_directory", "compare_graph", "export_graph", "dump",
                 "load_file", "load_job", "find_job", "find_path", "setup_job_directory", "run_job"):
        ns.setdefault(name, getattr(tk, name))
    if command is not None:
        exec(command, ns)
        return
    banner = ("sis console: jobs(), states(), print_states(), log(job), rerun(job), clear_errors(job), unused(), "
              "clean(); upstream's tk.* helpers: tk.remove_job_and_descendants, tk.import_work_directory, "
              "tk.compare_graph, tk.export_graph, tk.dump, tk.load_file, ...")
    try:
        from IPython import start_ipython

        print(banner)
        start_ipython(argv=[], user_ns=ns)
    except ImportError:
        code.interact(banner=banner, local=ns)
