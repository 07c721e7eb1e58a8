"""File locks that make the engine's guarantees hold: one worker per task id, one manager per work directory.

Both use ``flock`` on a file in the shared work directory: the kernel (or the NFS server) drops the lock when
its holder dies, even by ``kill -9``, so a lock is never left stale, and the file's text names the owner for
error messages. A task id's claim also keeps its history (``attempts.<task>.<id>``): one JSON line per real
start and outcome, so retries count only attempts that really ran, never manager restarts.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from typing import List, Optional

CLAIM = "claim"  # <jobdir>/claim.<task>.<id>: locked by the worker while it runs the task id
HISTORY = "attempts"  # <jobdir>/attempts.<task>.<id>: events start / error / finished / reset / exit
MANAGER_LOCK = ".manager.lock"  # <work dir>/.manager.lock: locked by the running manager


def _owner_text() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})


def describe_owner_text(text: str) -> str:
    """``host H, pid P, since T`` from a lock file's text."""
    try:
        info = json.loads(text or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"host {info['host']}, pid {info['pid']}, since {since}"
    except (ValueError, KeyError, TypeError):
        return "owner unknown"


def describe_owner(path: str) -> str:
    """The owner named in a lock file (see :func:`describe_owner_text`)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return describe_owner_text(f.read())
    except OSError:
        return "owner unknown"


class FileLock:
    """An exclusive ``flock`` on ``path`` held until :meth:`release` or the holder's death."""

    def __init__(self, path: str):
        self.path = path
        self._fd: Optional[int] = None
        self.previous_owner: Optional[str] = None  # text of a stale lock this one replaced

    def acquire(self, wait: float = 0.0) -> bool:
        """Tries for ``wait`` seconds (at least once); True if this process now holds the lock."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)  # a probe (see is_locked) holds a shared lock for microseconds only
        old = os.pread(fd, 4096, 0)
        self.previous_owner = old.decode("utf-8", "replace") if old.strip() else None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _owner_text().encode(), 0)
        except OSError:  # a full disk: the lock holds all the same, only the owner's name is missing
            pass
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # an empty file: the next holder knows the last one ended cleanly
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def is_locked(path: str) -> Optional[bool]:
    """True while some process holds the lock on ``path``; False if not; None if there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# task history -------------------------------------------------------------------------------------------------
def append_event(path: str, event: str, **fields) -> None:
    """Appends one event line (``start``, ``error``, ``finished``, ``reset``, ``exit``) to a task's history."""
    record = {"event": event, "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_events(path: str) -> List[dict]:
    """The events since the last ``reset`` (an unreadable line, e.g. cut by a full disk, is skipped)."""
    events: List[dict] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") == "reset":
                    events = []
                else:
                    events.append(rec)
    except FileNotFoundError:
        pass
    return events


class ManagerAlreadyRunning(RuntimeError):
    """Raised when a second manager is started on a work directory that has one."""


class ManagerLock(FileLock):
    """``<work dir>/.manager.lock``: at most one manager per work directory, on any host sharing it."""

    def __init__(self, work_dir: str):
        self.work_dir = os.path.abspath(work_dir)
        super().__init__(os.path.join(self.work_dir, MANAGER_LOCK))

    def acquire(self, wait: float = 0.0) -> bool:
        """Takes the lock or raises :class:`ManagerAlreadyRunning` naming the running manager."""
        os.makedirs(self.work_dir, exist_ok=True)
        if not super().acquire(wait):
            raise ManagerAlreadyRunning(
                f"another manager is running on work directory {self.work_dir} ({describe_owner(self.path)}); "
                f"stop it first, or give this setup its own WORK_DIR in settings.py")
        return True
