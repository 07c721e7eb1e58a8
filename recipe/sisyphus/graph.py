"""The experiment graph: registered outputs (targets) and the jobs they need."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

import sisyphus.global_settings as gs
from sisyphus.job_path import AbstractPath
from sisyphus.safe_names import check_inside, is_inside


class OutputTarget:
    """A registered output: a name below ``output/`` and the paths it needs."""

    def __init__(self, name: str, inputs: Iterable[AbstractPath]):
        self.name = name
        self.required = set(inputs)

    def is_done(self) -> bool:
        return all(p.available() for p in self.required)

    def update_links(self) -> None:
        """Links ``output/<name>`` to the path once it is available."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class OutputPath(OutputTarget):
    def __init__(self, name: str, path: AbstractPath):
        super().__init__(name, [path])
        self.path = path

    def update_links(self) -> None:
        if not self.path.available():
            return
        root = os.path.join(gs.BASE_DIR, gs.OUTPUT_DIR)
        _relink(os.path.join(root, gs.ALIAS_AND_OUTPUT_SUBDIR, self.name), self.path.get_path(), root)


class OutputReport(OutputTarget):
    """A text report written to ``output/<name>``; updated each manager loop until its inputs are done."""

    def __init__(self, name: str, values: Any, template: Optional[str] = None,
                 report_fn: Optional[Callable[[Any], str]] = None, required: Optional[Iterable] = None):
        from sisyphus.tools import extract_paths

        super().__init__(name, required if required is not None else extract_paths(values))
        self.values = values
        self.template = template
        self.report_fn = report_fn

    def update_links(self) -> None:
        from sisyphus.delayed_ops import instanciate_delayed

        try:
            if self.report_fn is not None:
                text = self.report_fn(self.values)
            elif self.template is not None:
                if not self.is_done():
                    raise RuntimeError("waiting for its inputs")
                text = self.template.format(**instanciate_delayed(self.values))
            else:
                text = repr(instanciate_delayed(self.values)) if self.is_done() else "not finished yet"
        except Exception as exc:  # a report must not stop the manager
            text = f"report not ready: {exc}"
        root = os.path.join(gs.BASE_DIR, gs.OUTPUT_DIR)
        path = os.path.join(root, gs.ALIAS_AND_OUTPUT_SUBDIR, self.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        check_inside(os.path.dirname(path), root, "report folder")
        if os.path.islink(path):
            raise FileExistsError(f"{path} is a symlink (to {os.readlink(path)}); a report is not written through it")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, path)


def _relink(link: str, target: str, root: str) -> None:
    """Points ``link`` (inside ``root``) at ``target``; replaces only links the manager made (into work/)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    check_inside(os.path.dirname(link), root, "link folder")
    if os.path.islink(link):
        current = os.readlink(link)
        if current == target:
            return
        work = os.path.join(gs.BASE_DIR, gs.WORK_DIR)
        if not os.path.isabs(current) or not is_inside(os.path.dirname(current), work):
            raise FileExistsError(f"{link} is a link to {current}, not one the manager made (those point into "
                                  f"{work}); remove it or choose another name")
        os.unlink(link)
    elif os.path.exists(link):
        raise FileExistsError(f"{link} exists and is not a link made by the manager")
    os.symlink(target, link)


class SISGraph:
    """Holds the targets of the loaded configs and answers which jobs they need."""

    def __init__(self):
        self.targets: List[OutputTarget] = []
        self._lock = threading.RLock()

    def add_target(self, target: OutputTarget) -> None:
        with self._lock:
            for t in self.targets:
                if t.name == target.name and type(t) is type(target):
                    if isinstance(t, OutputPath) and isinstance(target, OutputPath) and t.path != target.path:
                        raise ValueError(f"output {target.name} registered twice with different paths")
                    self.targets.remove(t)
                    break
            self.targets.append(target)

    def clear(self) -> None:
        with self._lock:
            self.targets = []

    @property
    def output(self) -> Dict[str, AbstractPath]:
        return {t.name: t.path for t in self.targets if isinstance(t, OutputPath)}

    def jobs(self) -> List[Any]:
        """All jobs the targets need, each once, inputs before users (topological order)."""
        order: List[Any] = []
        seen: Set[str] = set()
        with self._lock:
            roots = [p.creator for t in self.targets for p in t.required if p.creator is not None]
        for root in sorted(set(roots)):
            self._visit(root, seen, order)
        return order

    def _visit(self, job: Any, seen: Set[str], order: List[Any]) -> None:
        stack = [(job, False)]
        while stack:
            j, expanded = stack.pop()
            jid = j._sis_id()
            if expanded:
                order.append(j)
                continue
            if jid in seen:
                continue
            seen.add(jid)
            stack.append((j, True))
            for p in sorted(j._sis_inputs, key=lambda p: (p.creator._sis_id() if p.creator else "", p.path)):
                if p.creator is not None and p.creator._sis_id() not in seen:
                    stack.append((p.creator, False))

    def waiting_jobs(self, jobs: Optional[List[Any]] = None) -> Dict[str, int]:
        """Job id -> how many jobs of the graph need its outputs, directly or through others: the jobs that wait for
        it. Engines start the queued task with the most waiting jobs first (a critical-path heuristic)."""
        jobs = self.jobs() if jobs is None else jobs
        index = {job._sis_id(): i for i, job in enumerate(jobs)}
        below = [0] * len(jobs)  # bit set of the jobs that wait for each job
        for i in reversed(range(len(jobs))):  # users before their inputs: a user's set is complete when it is read
            for p in jobs[i]._sis_inputs:
                j = index.get(p.creator._sis_id()) if p.creator is not None else None
                if j is not None:
                    below[j] |= below[i] | (1 << i)
        return {jid: bin(below[i]).count("1") for jid, i in index.items()}

    def find(self, pattern: str) -> List[Any]:
        """Jobs whose id or alias contains ``pattern``."""
        return [j for j in self.jobs() if pattern in j._sis_id() or any(pattern in a for a in (j.get_aliases() or ()))]

    def update_outputs(self) -> Dict[str, str]:
        """Refreshes ``output/`` links and reports and ``alias/`` links; returns {name: error} for those that failed.

        A link that cannot be made (a full disk, a foreign file in the way) is reported, not raised, so one bad
        name never stops the manager.
        """
        errors: Dict[str, str] = {}
        for t in list(self.targets):
            try:
                t.update_links()
            except (OSError, ValueError) as exc:
                errors[f"output/{t.name}"] = _describe(exc, f"output {t.name}")
        alias_root = os.path.join(gs.BASE_DIR, gs.ALIAS_DIR)
        for j in self.jobs():
            for alias in j.get_aliases() or ():
                link = os.path.join(alias_root, gs.ALIAS_AND_OUTPUT_SUBDIR, alias)
                try:
                    if j._sis_setup():
                        _relink(link, j._sis_path(abspath=True), alias_root)
                except (OSError, ValueError) as exc:
                    errors[f"alias/{alias}"] = _describe(exc, f"alias {alias}")
        return errors


def _describe(exc: Exception, what: str) -> str:
    from sisyphus.tools import describe_os_error

    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, FileExistsError):
        return f"{what}: {describe_os_error(exc)}"
    return f"{what}: {exc}"


graph = SISGraph()
