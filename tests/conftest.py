"""Fixtures shared by all tests: a fresh setup directory per test and an in-process job runner."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipe")
for _p in (RECIPE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)
# Workers started by the engines import recipe and test modules: give them the same path.
os.environ["PYTHONPATH"] = os.pathsep.join([RECIPE, ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import sisyphus.global_settings as gs  # noqa: E402
from sisyphus import job as _job_module  # noqa: E402
from sisyphus.graph import graph as _graph  # noqa: E402


@pytest.fixture(autouse=True)
def sis_setup_dir(tmp_path, monkeypatch):
    """Each test gets an empty setup directory (work/, output/, alias/ inside tmp_path) and an empty graph."""
    monkeypatch.setattr(gs, "BASE_DIR", str(tmp_path))
    monkeypatch.setattr(gs, "WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setattr(gs, "HEARTBEAT_PERIOD", 1.0)
    _job_module.created_jobs.clear()
    _graph.clear()
    yield tmp_path
    _job_module.created_jobs.clear()
    _graph.clear()


@pytest.fixture
def run_job():
    """``run_job(job)`` runs the job and its unfinished dependencies in this process and returns it."""
    from sisyphus.toolkit import run_job as _run

    return _run
