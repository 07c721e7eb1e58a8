"""The SGE engine against a real single-node Grid Engine (qmaster + execd started by the tests)."""
import io
import os
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

import sisyphus.global_settings as gs
from sisyphus import tk
from sisyphus.graph import graph
from sisyphus.job import created_jobs
from sisyphus.manager import Manager, job_state
from sisyphus.son_of_grid_engine import SonOfGridEngine as SGE, contiguous_runs, expand_tasks, map_sge_state
from tests.cluster_util import start_daemons
from tests.engine_jobs import ArrayJob, ConcatJob, FailJob, SleepJob, WriteTextJob


@pytest.fixture(scope="module")
def sge():
    os.environ.setdefault("SGE_ROOT", "/var/lib/gridengine")
    os.environ.setdefault("SGE_CELL", "default")
    start_daemons("start_sge.sh", "qsub")
    yield


@pytest.fixture
def shared_dir(sis_setup_dir, monkeypatch):
    monkeypatch.setattr(gs, "HEARTBEAT_TIMEOUT", 30)
    return sis_setup_dir


def manager(engine, max_time=180):
    out = io.StringIO()
    return Manager(graph, engine, poll=0.3, out=out).run(max_time=max_time), out.getvalue()


def _wait(cond, timeout=60, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _sge_state(job_id: str) -> str:
    """State column of ``job_id`` in qstat ("" when not listed)."""
    for line in subprocess.run(["qstat"], capture_output=True, text=True).stdout.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[0] == job_id:
            return fields[4]
    return ""


def _sge_state_by_name(name: str) -> str:
    """Raw qstat state of the job called ``name`` ("" when not listed)."""
    out = subprocess.run(["qstat", "-xml"], capture_output=True, text=True).stdout
    for job in ET.fromstring(out).iter("job_list"):
        if (job.findtext("JB_name") or job.findtext("full_job_name")) == name:
            return job.findtext("state") or ""
    return ""


def test_parsing_and_arguments():
    assert map_sge_state("qw") == gs.STATE_QUEUE and map_sge_state("r") == gs.STATE_RUNNING
    assert map_sge_state("Eqw") == gs.STATE_QUEUE_ERROR and map_sge_state("hqw") == gs.STATE_QUEUE
    assert expand_tasks("2-6:2") == [2, 4, 6] and expand_tasks("1,3") == [1, 3] and expand_tasks(None) == [1]
    assert contiguous_runs([5, 1, 2, 3]) == [(1, 3), (5, 5)]
    args = SGE().qsub_args({"cpu": 4, "mem": 8, "time": 1.5, "gpu": 1}, "n", "/w/j", "run", 1, 3)
    assert "h_vmem=2.000G,h_rt=1:30:00,gpu=1" in args and "-pe" in args and "1-3" in args


def test_graph_failure_and_arrays_through_sge(sge, shared_dir):
    c = ConcatJob([WriteTextJob("grid ").out_file, WriteTextJob("engine").out_file])
    arr = ArrayJob(["a", "b", "c"])
    bad = FailJob("transcript of utt 7 is not UTF-8")
    bad.set_rqmt("run", {"cpu": 1, "mem": 0.5, "time": 0.05})
    for name, p in (("c", c.out_file), ("arr", arr.out_dir), ("bad", bad.out_file)):
        tk.register_output(f"sge/{name}", p)
    rc, log = manager(SGE())
    assert rc == 1, log
    assert open(c.out_file.get_path()).read() == "grid engine"
    assert sorted(os.listdir(arr.out_dir.get_path())) == ["0.txt", "1.txt", "2.txt"]
    rec = arr._sis_tasks()[0].submit_log()
    assert len(rec) == 1 and rec[0]["engine"] == "sge" and rec[0]["task_ids"] == [1, 2, 3]
    assert job_state(SGE(), bad)[0] == gs.STATE_ERROR
    assert "transcript of utt 7 is not UTF-8" in log
    assert os.path.join(bad._sis_path(abspath=True), "log.run.1") in log


def test_restart_while_queued_cancel_and_time_limit(sge, shared_dir, monkeypatch):
    blocker = subprocess.run(["qsub", "-terse", "-N", "blocker", "-o", "/dev/null", "-j", "y", "-b", "y", "-pe",
                              "smp", str(os.cpu_count()), "sleep", "300"], capture_output=True, text=True,
                             check=True).stdout.strip()
    try:
        # the blocker itself must run: a job of an earlier test that qstat still lists as running could hold a
        # slot, and the 1-cpu job would then start next to a waiting blocker
        _wait(lambda: _sge_state(blocker) == "r", what="blocker")
        j = SleepJob("queued", 0.5, str(shared_dir), cpu=1)
        tk.register_output("q/done", j.out_done)
        assert manager(SGE(), max_time=3)[0] == 2
        assert job_state(SGE(), j)[0] == gs.STATE_QUEUE
        graph.clear()
        created_jobs.clear()
        j = SleepJob("queued", 0.5, str(shared_dir), cpu=1)
        tk.register_output("q/done", j.out_done)
        assert manager(SGE(), max_time=3)[0] == 2
        assert len(j._sis_tasks()[0].submit_log()) == 1  # no duplicate submission after the restart
    finally:
        subprocess.run(["qdel", blocker], capture_output=True)
    rc, log = manager(SGE())
    assert rc == 0, log
    assert len(j._sis_tasks()[0].submit_log()) == 1

    # cancelled and over-time tasks end without a marker: with no resubmissions allowed they are errors
    monkeypatch.setattr(gs, "MAX_SUBMIT_RETRIES", 0)
    graph.clear()
    created_jobs.clear()
    # both sleep far longer than the manager may wait, so neither can end with a marker by itself
    cancelled = SleepJob("cancel-me", 900, str(shared_dir), cpu=1)
    too_long = SleepJob("too-long", 900, str(shared_dir), cpu=1)
    too_long.set_rqmt("run", {"cpu": 1, "mem": 0.5, "time": 5 / 3600})  # h_rt 5 s
    tk.register_output("c/done", cancelled.out_done)
    tk.register_output("t/done", too_long.out_done)
    m = Manager(graph, SGE(), poll=0.3, out=io.StringIO())
    m.step()
    # qdel only once the worker has recorded its start: a task deleted before that never ran, so the manager
    # resubmits it without using up a retry (and on a loaded machine the worker's start takes seconds)
    task = cancelled._sis_tasks()[0]
    _wait(lambda: _sge_state_by_name(SGE().job_name(task)) == "r" and task.attempts(1) > 0, what="worker to start")
    SGE().cancel(cancelled._sis_tasks()[0])
    # h_rt is enforced by the execd's periodic limit check, which is slow on a loaded machine: allow minutes
    rc, log = manager(SGE(), max_time=300)
    assert rc == 1, log + subprocess.run(["qstat"], capture_output=True, text=True).stdout
    assert not cancelled._sis_finished() and not too_long._sis_finished()
    for j in (cancelled, too_long):
        assert len(j._sis_tasks()[0].submit_log()) == 1
        assert f"ERROR: {j.job_id()} task run.1 failed" in log
