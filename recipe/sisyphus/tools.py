"""Small helpers used by jobs and the engine."""
from __future__ import annotations

import errno
import logging
import os
import subprocess
from typing import Any, Iterable, Optional, Set

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


def describe_os_error(exc: OSError, path: Optional[str] = None) -> str:
    """A message for a file-system error that says what to do: disk full, name too long, read-only, ..."""
    path = path or exc.filename or "?"
    hints = {
        errno.ENOSPC: "the disk is full; free space there, then start the manager again",
        errno.EDQUOT: "the disk quota is exhausted; free space there, then start the manager again",
        errno.ENAMETOOLONG: "the file name is too long for the file system; use a shorter alias or output name",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
    }
    hint = hints.get(exc.errno, exc.strerror or str(exc))
    return f"cannot write {path}: {hint} ({os.strerror(exc.errno) if exc.errno else exc})"


class FileSystemError(OSError):
    """An OSError whose message names the path and the cause in plain words (see :func:`describe_os_error`)."""

    def __str__(self) -> str:
        return self.strerror


def atomic_touch(path: str, content: str = "") -> None:
    """Creates a marker file atomically, so readers never see a half-written one; no temp file is left behind."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(content)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise FileSystemError(exc.errno, describe_os_error(exc, path), path) from exc


def flatten(items: Iterable) -> list:
    out = []
    for x in items:
        if isinstance(x, (list, tuple)):
            out.extend(flatten(x))
        else:
            out.append(x)
    return out
