"""The Slurm engine against a real single-node Slurm (slurmctld + slurmd + munge started by the tests)."""
import io
import os
import subprocess
import time

import pytest

import sisyphus.global_settings as gs
from sisyphus import tk
from sisyphus.cluster_engine import torchrun_command
from sisyphus.engine import EngineSelector
from sisyphus.graph import graph
from sisyphus.job import created_jobs
from sisyphus.localengine import LocalEngine
from sisyphus.manager import Manager, job_state
from sisyphus.simple_linux_utility_for_resource_management_engine import (
    SimpleLinuxUtilityForResourceManagementEngine as Slurm, map_slurm_state, parse_job_id, read_jobcomp)
from tests.cluster_util import start_daemons
from tests.engine_jobs import ArrayJob, ConcatJob, FailJob, SleepJob, WriteTextJob


@pytest.fixture(scope="module")
def slurm():
    start_daemons("start_slurm.sh", "sbatch")
    yield


@pytest.fixture
def shared_dir(sis_setup_dir, monkeypatch):
    monkeypatch.setattr(gs, "HEARTBEAT_TIMEOUT", 30)
    return sis_setup_dir


def manager(engine, max_time=180):
    out = io.StringIO()
    m = Manager(graph, engine, poll=0.3, out=out)
    return m.run(max_time=max_time), out.getvalue()


def test_state_mapping_and_job_ids():
    assert map_slurm_state("PENDING") == gs.STATE_QUEUE
    assert map_slurm_state("RUNNING") == gs.STATE_RUNNING
    assert map_slurm_state("CANCELLED by 0") == gs.STATE_QUEUE_ERROR
    for s in ("COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"):
        assert map_slurm_state(s) == gs.STATE_UNKNOWN  # the worker's markers decide
    assert parse_job_id("12_3") == ("12", [3])
    assert parse_job_id("12_[1-3,5%2]") == ("12", [1, 2, 3, 5])
    assert parse_job_id("12") == ("12", [None])


def test_sbatch_arguments():
    e = Slurm(partition="gpu", account="asr")
    args = e.sbatch_args({"cpu": 4, "mem": 10.5, "time": 2.5, "gpu": 2}, "run.x", "/w/job", "run", [1, 2, 3])
    assert "--cpus-per-task=4" in args and "--mem=10752M" in args and "--time=150" in args
    assert "--gres=gpu:2" in args and "--partition=gpu" in args and "--account=asr" in args
    assert "--array=1,2,3" in args


def test_jobcomp_file_and_gateway(tmp_path):
    comp = tmp_path / "jobcomp.log"
    comp.write_text(
        "JobId=7 UserId=root(0) Name=run.a.X JobState=TIMEOUT ArrayJobId=7 ArrayTaskId=2 ExitCode=0:0\n"
        "JobId=8 UserId=root(0) Name=run.a.X JobState=CANCELLED ArrayJobId=8 ArrayTaskId=3 ExitCode=0:15\n"
        "JobId=9 UserId=root(0) Name=run.b.Y JobState=FAILED ArrayJobId= ArrayTaskId=4294967294 ExitCode=1:0\n"
        "garbage line\n")
    assert read_jobcomp(str(comp)) == {("run.a.X", 2): gs.STATE_UNKNOWN, ("run.a.X", 3): gs.STATE_QUEUE_ERROR,
                                       ("run.b.Y", 1): gs.STATE_UNKNOWN}
    e = Slurm(gateway="login1")
    assert e.command(["squeue", "-o", "%i|%j"]) == ["ssh", "-x", "login1", "squeue -o '%i|%j'"]
    assert Slurm().command(["squeue"]) == ["squeue"]


def test_torchrun_command_for_multi_gpu():
    cmd = ["/usr/bin/python3", "-m", "returnn", "returnn.config"]
    assert torchrun_command(cmd, 1) == cmd
    assert torchrun_command(cmd, 4) == ["/usr/bin/python3", "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node=4", "-m", "returnn", "returnn.config"]


def test_graph_failure_and_arrays_through_slurm(slurm, shared_dir):
    a = WriteTextJob("slurm ")
    b = WriteTextJob("works")
    c = ConcatJob([a.out_file, b.out_file])
    arr = ArrayJob(["x", "y", "z"])
    bad = FailJob("bad input: corpus.jsonl line 3 has no text")
    tk.register_output("s/concat.txt", c.out_file)
    tk.register_output("s/parts", arr.out_dir)
    tk.register_output("s/bad", bad.out_file)
    engine = EngineSelector({"short": LocalEngine(cpus=1, mem=1), "long": Slurm()}, default_engine="long")
    rc, log = manager(engine)
    assert rc == 1, log  # the failing job stops the graph
    assert open(c.out_file.get_path()).read() == "slurm works"
    assert sorted(os.listdir(arr.out_dir.get_path())) == ["0.txt", "1.txt", "2.txt"]
    # the array job went through Slurm as one array submission
    rec = arr._sis_tasks()[0].submit_log()
    assert len(rec) == 1 and rec[0]["engine"] == "slurm" and rec[0]["task_ids"] == [1, 2, 3]
    assert c._sis_tasks()[0].submit_log()[0]["engine"] == "slurm"
    assert bad._sis_tasks()[0].submit_log()[0]["engine"] == "local"  # mini task -> short engine
    assert "bad input: corpus.jsonl line 3 has no text" in log
    assert os.path.join(bad._sis_path(abspath=True), "log.run.1") in log
    assert not bad._sis_finished()


def test_failed_slurm_task_is_an_error(slurm, shared_dir):
    bad = FailJob("broken audio file x.flac")
    bad.set_rqmt("run", {"cpu": 1, "mem": 0.3, "time": 0.1})
    tk.register_output("f/bad", bad.out_file)
    rc, log = manager(Slurm())
    assert rc == 1
    assert job_state(Slurm(), bad)[0] == gs.STATE_ERROR
    assert "broken audio file x.flac" in log


def _wait(cond, timeout=60, what=""):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _blocker(cpus):
    out = subprocess.run(["sbatch", "--parsable", "-J", "blocker", "-o", "/dev/null", f"--cpus-per-task={cpus}", "--mem=100M",
                          "--wrap", "sleep 300"], capture_output=True, text=True, check=True).stdout.strip()
    _wait(lambda: "RUNNING" in subprocess.run(["squeue", "-h", "-j", out, "-o", "%T"], capture_output=True,
                                              text=True).stdout, what="blocker to run")
    return out


def test_manager_restart_while_queued_and_cancel(slurm, shared_dir, monkeypatch):
    cpus = os.cpu_count()
    blocker = _blocker(cpus)  # occupies the node: the next job stays pending
    try:
        j = SleepJob("queued", 0.5, str(shared_dir), cpu=1)
        tk.register_output("q/done", j.out_done)
        rc, log = manager(Slurm(), max_time=3)
        assert rc == 2  # stopped by max_time while the job is queued
        assert job_state(Slurm(), j)[0] == gs.STATE_QUEUE
        # a new manager (new engine, no memory) must find the queued job and not submit again
        graph.clear()
        created_jobs.clear()
        j = SleepJob("queued", 0.5, str(shared_dir), cpu=1)
        tk.register_output("q/done", j.out_done)
        rc, log = manager(Slurm(), max_time=3)
        assert rc == 2
        assert len(j._sis_tasks()[0].submit_log()) == 1
    finally:
        subprocess.run(["scancel", blocker])
    rc, log = manager(Slurm())
    assert rc == 0, log
    assert len(j._sis_tasks()[0].submit_log()) == 1

    # a cancelled job ends in an error state, not in endless resubmission
    graph.clear()
    created_jobs.clear()
    long = SleepJob("cancel-me", 120, str(shared_dir), cpu=1)
    tk.register_output("c/done", long.out_done)
    m = Manager(graph, Slurm(), poll=0.3, out=io.StringIO())
    m.engine.start_engine()
    m.step()
    _wait(lambda: job_state(Slurm(), long)[0] == gs.STATE_RUNNING, what="job to run")
    Slurm().cancel(long._sis_tasks()[0])
    rc, log = manager(Slurm(), max_time=60)
    assert rc == 1, log
    assert len(long._sis_tasks()[0].submit_log()) == 1


def test_time_limit(slurm, shared_dir, monkeypatch):
    monkeypatch.setattr(gs, "MAX_SUBMIT_RETRIES", 0)
    j = SleepJob("too-long", 150, str(shared_dir), cpu=1)
    j.set_rqmt("run", {"cpu": 1, "mem": 0.2, "time": 1 / 60})  # 1 minute
    tk.register_output("t/done", j.out_done)
    rc, log = manager(Slurm(), max_time=150)
    assert rc == 1, log
    engine_logs = os.listdir(os.path.join(j._sis_path(abspath=True), "engine"))
    text = "".join(open(os.path.join(j._sis_path(abspath=True), "engine", f)).read() for f in engine_logs)
    assert "TIME LIMIT" in text
    assert not j._sis_finished()
