"""Small helpers used by jobs and the engine."""
from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from typing import Any, Dict, Iterable, Optional, Set

import sisyphus.global_settings as gs


def sis_hash(obj: Any) -> str:
    """The hash used in job ids: ``gs.SIS_HASH`` (upstream's short_hash unless settings.py replaces it)."""
    return gs.SIS_HASH(obj)


def extract_paths(obj: Any) -> Set[Any]:
    """All Paths reachable inside ``obj`` (containers, objects' attributes), without entering jobs."""
    from sisyphus.delayed_ops import DelayedBase
    from sisyphus.job import Job
    from sisyphus.job_path import AbstractPath

    found = set()
    seen: Dict[int, Any] = {}  # holds what it saw: a temporary (a __sis_state__ dict) freed early could pass its id on
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen[id(o)] = o
        if isinstance(o, AbstractPath):
            found.add(o)
        elif isinstance(o, Job) or o is None or isinstance(o, (str, bytes, int, float, bool, complex, type)):
            continue
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
        elif isinstance(o, DelayedBase):  # callable (upstream's __call__) but holds paths
            stack.append(vars(o))
        elif hasattr(o, "__sis_state__"):
            stack.append(o.__sis_state__())
        elif hasattr(o, "__dict__") and not callable(o):
            stack.append(vars(o))
        elif hasattr(o, "__slots__"):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return found


def sh(command: str, *args: Any, capture_output: bool = False, pipefail: bool = True,
       executable: Optional[str] = None, except_return_codes: Iterable[int] = (0,), sis_quiet: bool = False,
       sis_replace: Optional[dict] = None, include_stderr: bool = False, **kwargs: Any) -> Any:
    """Runs a shell command after ``str.format`` with the job's attributes (upstream's ``tools.sh``).

    The first extra positional argument is ``capture_output`` as upstream (``self.sh(cmd, True)`` returns the
    output); a bad exit code raises ``CalledProcessError``; exit code 0 is always accepted, and so are the codes
    in ``except_return_codes`` (e.g. 141 for ``head`` closing a pipe). With ``capture_output`` the output is
    returned (decoded), also for an accepted non-zero exit code.
    """
    if args:
        if len(args) > 3:
            raise TypeError(f"sh({command!r}): at most 3 positional options (capture_output, pipefail, "
                            f"executable), got {args!r}")
        capture_output, pipefail, executable = (list(args) + [capture_output, pipefail, executable][len(args):])
    replace = dict(sis_replace or {})
    replace.update(kwargs)
    command = command.format(**replace)
    if not sis_quiet:
        logging.info("Run in Shell%s: %s", " (capture output)" if capture_output else "", command)
    sys.stdout.flush()
    sys.stderr.flush()
    if executable is None:
        executable = "/bin/bash"
        if pipefail:
            command = "set -ueo pipefail && " + command  # a failing command inside a pipe fails the job
    stdout = subprocess.PIPE if capture_output else None
    stderr = subprocess.STDOUT if (capture_output and include_stderr) else None
    proc = subprocess.run(command, shell=True, executable=executable, stdout=stdout, stderr=stderr, check=False)
    if proc.returncode != 0 and proc.returncode not in tuple(except_return_codes):
        raise subprocess.CalledProcessError(proc.returncode, command, proc.stdout)
    return proc.stdout.decode() if capture_output else None


def try_get(value: Any) -> Any:
    """``value.get()`` for delayed values (paths, variables, delayed operations), else the value itself."""
    from sisyphus.delayed_ops import DelayedBase

    return value.get() if isinstance(value, DelayedBase) else value


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
