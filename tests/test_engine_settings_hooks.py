"""Hooks a setup's settings.py may define (upstream's names) are honoured, and JOB_AUTO_CLEANUP packs finished jobs."""
import io
import os
import tarfile

from sisyphus import gs, tk
from sisyphus.console import Console
from sisyphus.engine import EngineBase
from sisyphus.graph import graph
from sisyphus.job import created_jobs
from sisyphus.localengine import LocalEngine
from sisyphus.manager import Manager
from tests.engine_jobs import ConcatJob, FlakyJob, ReadInputJob, WriteTextJob

MAX_TIME = 600  # the manager runs real workers; generous for a loaded machine


def run_manager(engine=None):
    out = io.StringIO()
    rc = Manager(graph, engine or LocalEngine(cpus=2, mem=4), poll=0.1, out=out).run(max_time=MAX_TIME)
    return rc, out.getvalue()


class RecordingEngine(EngineBase):
    """Runs nothing: records the resources of each submission."""

    name = "recording"

    def __init__(self):
        self.submitted = []

    def submit_call(self, call, logpath, rqmt, name, task_name, task_ids):
        self.submitted.append(dict(rqmt))
        return self.name, len(self.submitted)

    def task_state(self, task, task_id):
        return gs.STATE_UNKNOWN


def _set_up(job):
    job._sis_setup_directory()
    return job._sis_tasks()[0]


def _write_usage(task, hours, rss_gb):
    import json

    with open(task.path(gs.JOB_USAGE, 1), "w") as f:
        json.dump({"wall_seconds": hours * 3600, "max_rss_gb": rss_gb}, f)
    os.utime(task.path(gs.JOB_USAGE, 1), (1, 1))  # old: the worker is gone


def test_update_engine_rqmt_default_doubles_what_ran_out():
    job = ConcatJob([WriteTextJob("x").out_file])  # rqmt cpu 1, mem 0.5, time 1 (default)
    task = _set_up(job)
    engine = RecordingEngine()
    engine.submit(task, [1])
    _write_usage(task, hours=0.95, rss_gb=0.45)  # close to both limits
    engine.submit(task, [1], update=True)
    assert engine.submitted[0]["mem"] == 0.5 and engine.submitted[0]["time"] == 1
    assert engine.submitted[1]["mem"] == 1.0 and engine.submitted[1]["time"] == 2


def test_update_engine_rqmt_from_settings_is_used_by_the_manager_for_interrupted_tasks(monkeypatch):
    calls = []

    def update_engine_rqmt(last_rqmt, last_usage):
        calls.append((dict(last_rqmt), dict(last_usage)))
        return dict(last_rqmt, mem=7)

    monkeypatch.setattr(gs, "update_engine_rqmt", update_engine_rqmt)
    a = WriteTextJob("x")
    task = _set_up(a)
    engine = RecordingEngine()
    engine.submit(task, [1])  # first submission: no update
    _write_usage(task, hours=0.01, rss_gb=0.1)  # started, then vanished: interrupted
    tk.register_output("a.txt", a.out_file)
    Manager(graph, engine, poll=0, out=io.StringIO()).step()
    assert len(calls) == 1 and calls[0][1]["max"]["rss"] == 0.1
    assert engine.submitted[-1]["mem"] == 7
    assert task.submit_log()[-1]["rqmt"]["mem"] == 7  # what was submitted is recorded


def test_check_engine_limits_caps_every_submission(monkeypatch):
    seen = []

    def check_engine_limits(rqmt, task):
        seen.append(task.name())
        rqmt["mem"] = min(rqmt["mem"], 2)
        return rqmt

    monkeypatch.setattr(gs, "check_engine_limits", check_engine_limits)
    job = WriteTextJob("big").update_rqmt("run", {"mem": 8, "cpu": 1})
    task = _set_up(job)
    engine = RecordingEngine()
    engine.submit(task, [1])
    assert seen == ["run"] and engine.submitted[0]["mem"] == 2
    assert task.submit_log()[0]["rqmt"]["mem"] == 2


def test_file_caching_is_used_for_cached_inputs_inside_tasks(sis_setup_dir):
    src = sis_setup_dir / "corpus.txt"
    src.write_text("original")
    other = sis_setup_dir / "other.txt"  # another file: ``cached`` is not part of a path's hash
    other.write_text("original")
    (sis_setup_dir / "settings.py").write_text(
        "def file_caching(path):\n"
        "    cached = path + '.cache'\n"
        "    with open(path) as f, open(cached, 'w') as g:\n"
        "        g.write('cached:' + f.read())\n"
        "    return cached\n")
    cached_job = ReadInputJob(tk.Path(str(src), cached=True))
    plain_job = ReadInputJob(tk.Path(str(other)))
    assert plain_job is not cached_job
    tk.register_output("cached.txt", cached_job.out_file)
    tk.register_output("plain.txt", plain_job.out_file)
    assert str(tk.Path(str(src), cached=True)) == str(src)  # outside tasks, no caching
    rc, log = run_manager()
    assert rc == 0, log
    assert (sis_setup_dir / "output" / "cached.txt").read_text() == "cached:original"
    assert (sis_setup_dir / "output" / "plain.txt").read_text() == "original"


def test_on_job_finished_is_called_once_per_job(monkeypatch):
    finished = []
    monkeypatch.setattr(gs, "on_job_finished", lambda job: finished.append(job.job_id()))
    a = WriteTextJob("a")
    c = ConcatJob([a.out_file])
    tk.register_output("c.txt", c.out_file)
    rc, log = run_manager()
    assert rc == 0, log
    assert sorted(finished) == sorted([a.job_id(), c.job_id()])


def test_on_job_failure_can_repair_and_retry(sis_setup_dir, monkeypatch):
    marker = sis_setup_dir / "repaired"
    failures = []

    def on_job_failure(job):
        failures.append(job.job_id())
        marker.write_text("")
        for task in job._sis_tasks():
            for i in task.task_ids():
                task.reset(i)

    monkeypatch.setattr(gs, "on_job_failure", on_job_failure)
    monkeypatch.setattr(gs, "HEARTBEAT_TIMEOUT", 2.0)
    flaky = FlakyJob(str(marker))
    tk.register_output("ok.txt", flaky.out_file)
    rc, log = run_manager()
    assert rc == 0, log
    assert failures == [flaky.job_id()]
    assert (sis_setup_dir / "output" / "ok.txt").read_text() == "ok"


def test_job_auto_cleanup_packs_finished_jobs_and_the_engine_reads_them_back(sis_setup_dir, monkeypatch):
    monkeypatch.setattr(gs, "JOB_AUTO_CLEANUP", True)
    a = WriteTextJob("hello")
    c = ConcatJob([a.out_file])
    tk.register_output("c.txt", c.out_file)
    rc, log = run_manager()
    assert rc == 0, log
    for job in (a, c):
        d = job._sis_path(abspath=True)
        assert sorted(os.listdir(d)) == ["finished.tar.gz", "info", "input", "output"], os.listdir(d)
        with tarfile.open(os.path.join(d, "finished.tar.gz")) as tar:
            names = set(tar.getnames())
        assert {"job.save", "finished", "log.run.1", "finished.run.1", "usage.run.1"} <= names, names
    assert (sis_setup_dir / "output" / "c.txt").read_text() == "hello"  # c read a's output after a was packed
    # a fresh graph (a new manager) sees both jobs finished and reads their logs and saved jobs
    graph.clear()
    created_jobs.clear()
    a2 = WriteTextJob("hello")
    c2 = ConcatJob([a2.out_file])
    tk.register_output("c.txt", c2.out_file)
    assert a2._sis_finished() and c2._sis_finished()
    assert c2.out_length.get() == 5
    assert tk.load_job(c2._sis_path(abspath=True)).job_id() == c2.job_id()
    assert "finished" in Console(graph, LocalEngine(cpus=1, mem=1)).log(c2)
    engine = LocalEngine(cpus=2, mem=4)
    rc, log = run_manager(engine)
    assert rc == 0, log
    assert not any(os.path.exists(os.path.join(j._sis_path(abspath=True), "submit_log.run")) for j in (a2, c2))
