"""Finds job directories in ``work/`` that no registered output needs, and removes them on request."""
from __future__ import annotations

import os
import shutil
from typing import Iterable, List, Set

import sisyphus.global_settings as gs


def job_dirs(work_dir: str) -> List[str]:
    """All job directories below ``work_dir`` (directories holding a ``job.save``), relative to it."""
    found = []
    for root, dirs, files in os.walk(work_dir):
        if gs.JOB_SAVE in files or gs.JOB_INFO in files:
            found.append(os.path.relpath(root, work_dir))
            dirs[:] = []
    return sorted(found)


def unused_job_dirs(jobs: Iterable) -> List[str]:
    """Job directories not belonging to any job of the graph."""
    work_dir = os.path.join(gs.BASE_DIR, gs.WORK_DIR)
    if not os.path.isdir(work_dir):
        return []
    used: Set[str] = {j._sis_id() for j in jobs}
    return [os.path.join(work_dir, d) for d in job_dirs(work_dir) if d not in used]


def remove_dirs(dirs: Iterable[str]) -> int:
    """Deletes the given job directories; returns how many."""
    work_dir = os.path.realpath(os.path.join(gs.BASE_DIR, gs.WORK_DIR))
    n = 0
    for d in dirs:
        real = os.path.realpath(d)
        if not real.startswith(work_dir + os.sep):
            raise ValueError(f"refusing to remove {d}: not inside {work_dir}")
        shutil.rmtree(real)
        n += 1
    return n
