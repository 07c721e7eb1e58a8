"""Small helpers used by jobs and the engine."""
from __future__ import annotations

import logging
import os
import subprocess
from typing import Any, Iterable, Set

from sisyphus.hash import sis_hash  # noqa: F401  (re-exported as upstream's tools.sis_hash)


def extract_paths(obj: Any) -> Set[Any]:
    """All Paths reachable inside ``obj`` (containers, objects' attributes), without entering jobs."""
    from sisyphus.job import Job
    from sisyphus.job_path import AbstractPath

    found = set()
    seen = set()
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, AbstractPath):
            found.add(o)
        elif isinstance(o, Job) or o is None or isinstance(o, (str, bytes, int, float, bool, complex, type)):
            continue
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif hasattr(o, "__sis_state__"):
            stack.append(o.__sis_state__())
        elif hasattr(o, "__dict__") and not callable(o):
            stack.append(vars(o))
        elif hasattr(o, "__slots__"):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return found


def sh(command: str, *args, sis_quiet: bool = False, sis_replace: dict | None = None, except_return_codes=(0,),
       pipefail: bool = True, capture_output: bool = False, **kwargs) -> Any:
    """Runs a shell command after ``str.format`` with the job's attributes; raises on a bad exit code."""
    replace = dict(sis_replace or {})
    replace.update(kwargs)
    command = command.format(*args, **replace)
    if not sis_quiet:
        logging.info("$ %s", command)
    shell = ["bash", "-c", ("set -eo pipefail; " if pipefail else "") + command]
    if capture_output:
        out = subprocess.run(shell, stdout=subprocess.PIPE, check=False)
        if out.returncode not in except_return_codes:
            raise subprocess.CalledProcessError(out.returncode, command, out.stdout)
        return out.stdout.decode()
    rc = subprocess.call(shell)
    if rc not in except_return_codes:
        raise subprocess.CalledProcessError(rc, command)
    return rc


def atomic_touch(path: str, content: str = "") -> None:
    """Creates a marker file atomically, so readers never see a half-written one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)


def flatten(items: Iterable) -> list:
    out = []
    for x in items:
        if isinstance(x, (list, tuple)):
            out.extend(flatten(x))
        else:
            out.append(x)
    return out
