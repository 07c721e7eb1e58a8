"""Checks that a name a config chooses (output file, alias, registered output) stays inside its folder.

Names are checked where they are declared, so a bad one fails while the graph is built, with a message that
names it, instead of writing outside the setup or crashing the manager after a job has run.
"""
from __future__ import annotations

import os

NAME_MAX = 255  # bytes in one path component on ext4, xfs, btrfs, tmpfs, NFS
PATH_MAX = 4096


class UnsafeNameError(ValueError):
    """A name that is absolute, leaves its folder, or does not fit the file system."""


def check_relative_name(name: str, what: str, folder: str) -> str:
    """Returns ``name`` if it is a relative path that stays inside ``folder`` and fits the file system.

    :param what: what the name is, for the message (``output name``, ``alias``, ``output file``)
    :param folder: the folder it belongs in, for the message (``output/``, ``alias/``, a job's ``output/``)
    """
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be a str, got {type(name).__name__}: {name!r}")
    if not name or "\0" in name:
        raise UnsafeNameError(f"{what} {name!r} is empty or holds a NUL byte")
    if os.path.isabs(name):
        raise UnsafeNameError(f"{what} {name!r} is absolute; it must be a path inside {folder}")
    norm = os.path.normpath(name)
    if norm == "." or norm == ".." or norm.startswith(".." + os.sep):
        raise UnsafeNameError(f"{what} {name!r} leads out of {folder}")
    for part in name.split(os.sep):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise UnsafeNameError(f"{what} {name!r}: the part {part[:40]!r}... is "
                                  f"{len(part.encode('utf-8', 'surrogateescape'))} bytes long, more than the "
                                  f"{NAME_MAX} a file name may have")
    if len(name.encode("utf-8", "surrogateescape")) > PATH_MAX // 2:
        raise UnsafeNameError(f"{what} {name[:60]!r}... is longer than {PATH_MAX // 2} bytes")
    return name


def is_inside(path: str, root: str) -> bool:
    """True if ``path`` (symlinks resolved) lies in ``root`` (resolved) or is ``root``."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_inside(path: str, root: str, what: str) -> str:
    """Returns ``path`` if it stays inside ``root`` once symlinks are resolved, else raises naming both."""
    if not is_inside(path, root):
        raise UnsafeNameError(f"{what} {path} resolves to {os.path.realpath(path)}, outside {root}")
    return path
