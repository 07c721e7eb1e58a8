"""The manager with the local engine: sharing, resuming after SIGKILL, failures, cpu limits, console, cleaner."""
import glob
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sisyphus import tk
from sisyphus.console import Console
from sisyphus.graph import graph
from sisyphus.job import created_jobs
from sisyphus.localengine import LocalEngine
from sisyphus.locks import CLAIM, is_locked
from sisyphus.manager import Manager
from tests.engine_jobs import ArrayJob, ConcatJob, FailJob, OccupancyJob, SleepJob, TimeLimitedJob, WriteTextJob

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_manager(engine=None, max_time=120):
    out = io.StringIO()
    m = Manager(graph, engine or LocalEngine(cpus=2, mem=4), poll=0.1, out=out)
    rc = m.run(max_time=max_time)
    return rc, out.getvalue()


def reset_graph():
    graph.clear()
    created_jobs.clear()


def test_graph_runs_and_outputs_are_linked(sis_setup_dir):
    a = WriteTextJob("hello ")
    b = WriteTextJob("world")
    c = ConcatJob([a.out_file, b.out_file])
    c.add_alias("demo/concat")
    tk.register_output("demo/concat.txt", c.out_file)
    rc, log = run_manager()
    assert rc == 0, log
    with open(sis_setup_dir / "output" / "demo" / "concat.txt") as f:
        assert f.read() == "hello world"
    assert c.out_length.get() == 11
    job_dir = c._sis_path(abspath=True)
    for name in ("finished", "info", "job.save", "log.run.1", "finished.run.1", "usage.run.1"):
        assert os.path.exists(os.path.join(job_dir, name)), name
    assert os.path.islink(sis_setup_dir / "alias" / "demo" / "concat")
    assert os.path.isdir(os.path.join(job_dir, "input"))
    assert len(os.listdir(os.path.join(job_dir, "input"))) == 2


def test_two_configs_share_a_job_and_the_second_run_computes_nothing(sis_setup_dir):
    counter = str(sis_setup_dir / "runs.txt")

    def config_one():
        a = WriteTextJob("shared ")
        c = ConcatJob([a.out_file], run_counter=counter)
        tk.register_output("one/out.txt", c.out_file)
        return c

    def config_two():
        # built differently (keyword argument, other outputs) but the same job
        c = ConcatJob(inputs=[WriteTextJob(text="shared ", repeat=1).out_file], run_counter=counter)
        tk.register_output("two/out.txt", c.out_file)
        tk.register_output("two/extra.txt", WriteTextJob("extra").out_file)
        return c

    c1 = config_one()
    assert run_manager()[0] == 0
    id1 = c1.job_id()
    reset_graph()
    c2 = config_two()
    assert c2.job_id() == id1
    rc, log = run_manager()
    assert rc == 0, log
    with open(counter) as f:
        assert f.read().split() == [id1]  # ConcatJob ran exactly once
    assert os.path.realpath(sis_setup_dir / "output" / "two" / "out.txt") == c2.out_file.get_path()


def test_array_task(sis_setup_dir):
    j = ArrayJob(["a", "b", "c"])
    tk.register_output("parts", j.out_dir)
    assert run_manager()[0] == 0
    assert sorted(os.listdir(j.out_dir.get_path())) == ["0.txt", "1.txt", "2.txt"]


def test_failing_task_is_an_error_with_log_and_nothing_finished(sis_setup_dir):
    f = FailJob("bad input: /data/missing.flac does not exist")
    after = ConcatJob([f.out_file])
    tk.register_output("fail/out.txt", after.out_file)
    rc, log = run_manager()
    assert rc == 1
    job_dir = f._sis_path(abspath=True)
    log_path = os.path.join(job_dir, "log.run.1")
    assert f"log: {log_path}" in log
    assert "bad input: /data/missing.flac does not exist" in log
    assert os.path.exists(os.path.join(job_dir, "error.run.1"))
    assert not os.path.exists(os.path.join(job_dir, "finished"))
    assert not os.path.exists(os.path.join(job_dir, "finished.run.1"))
    assert not after._sis_setup()  # the job after it never started


def test_retry_is_bounded_by_tries(sis_setup_dir):
    f = FailJob("always fails", tries=2)
    tk.register_output("retry/out.txt", f.out_file)
    rc, log = run_manager()
    assert rc == 1
    task = f._sis_tasks()[0]
    assert task.submissions(1) == 2
    assert "retry" in log


def test_interruptions_with_progress_do_not_use_up_the_retries(sis_setup_dir, monkeypatch):
    """A task killed at its time limit 6 times (> MAX_SUBMIT_RETRIES) that resumes with progress each time finishes;
    without progress it stops after MAX_SUBMIT_RETRIES resubmissions, also when progress is not reported."""
    import sisyphus.global_settings as gs

    monkeypatch.setattr(gs, "HEARTBEAT_TIMEOUT", 1.5)  # the killed worker's usage file goes stale quickly
    monkeypatch.setattr(gs, "MAX_SUBMIT_RETRIES", 3)
    ok = TimeLimitedJob(6)
    tk.register_output("limited/ok.txt", ok.out_numbers)
    rc, log = run_manager(max_time=180)
    assert rc == 0, log
    task = ok._sis_tasks()[0]
    assert task.attempts(1) == 7 and task.attempts_without_progress(1) == 1  # the last attempt finished
    assert [e.get("progress") for e in task.history(1) if e["event"] == "start"] == list(range(7))
    with open(ok.out_numbers.get_path()) as f:
        assert f.read().split() == [str(i) for i in range(6)]

    for kwargs in ({"make_progress": False}, {"report_progress": False}):
        reset_graph()
        stuck = TimeLimitedJob(6, **kwargs)
        tk.register_output("limited/stuck.txt", stuck.out_numbers)
        rc, log = run_manager(max_time=180)
        assert rc == 1, log
        assert stuck._sis_tasks()[0].attempts(1) == 1 + gs.MAX_SUBMIT_RETRIES, kwargs


def test_missing_input_file_is_reported(sis_setup_dir):
    c = ConcatJob([tk.Path(str(sis_setup_dir / "no_such_input.txt"))])
    tk.register_output("missing/out.txt", c.out_file)
    rc, log = run_manager()
    assert rc == 1
    assert "no_such_input.txt" in log and "does not exist" in log
    assert c.job_id() in log


def test_local_engine_never_exceeds_cpus(sis_setup_dir):
    """Four 1-cpu tasks and a 2-cpu task on 2 cpus: when any of them starts, the tasks running then hold at most 2
    cpus (each task counts the markers of the running ones as it starts, so no timing is involved)."""
    record = sis_setup_dir / "record"
    record.mkdir()
    jobs = [OccupancyJob(f"s{i}", str(record), cpu=2 if i == 2 else 1) for i in range(5)]
    for j in jobs:
        tk.register_output(f"occupancy/{j.name}", j.out_done)
    engine = LocalEngine(cpus=2, mem=4)
    rc, log = run_manager(engine)
    assert rc == 0, log
    starts = [json.load(open(p)) for p in glob.glob(str(record / "*.json"))]
    assert len(starts) == 5
    assert all(s["cpu"] <= s["cpu_in_use_at_start"] <= 2 for s in starts), starts
    assert engine.max_used["cpu"] <= 2


def test_local_engine_runs_tasks_side_by_side(sis_setup_dir):
    """Two 1-cpu tasks that each wait for the other to have started finish only if the engine runs them at once."""
    record = sis_setup_dir / "record"
    record.mkdir()
    a = OccupancyJob("a", str(record), partner="b")
    b = OccupancyJob("b", str(record), partner="a")
    for j in (a, b):
        tk.register_output(f"pair/{j.name}", j.out_done)
    engine = LocalEngine(cpus=2, mem=4)
    rc, log = run_manager(engine)
    assert rc == 0, log
    assert engine.max_used["cpu"] == 2
    assert {json.load(open(record / f"{n}.json"))["cpu_in_use_at_start"] for n in "ab"} <= {1, 2}


def _write_config(setup, body):
    (setup / "config").mkdir(exist_ok=True)
    (setup / "config" / "__init__.py").write_text("")
    (setup / "config" / "exp.py").write_text(body)
    (setup / "settings.py").write_text(
        "def engine():\n    from sisyphus.localengine import LocalEngine\n    return LocalEngine(cpus=2, mem=4)\n"
        "WAIT_PERIOD_BETWEEN_CHECKS = 0.2\nHEARTBEAT_PERIOD = 0.5\nHEARTBEAT_TIMEOUT = 3\n"
    )


COUNT_CONFIG = """
from sisyphus import tk
from tests.engine_jobs import CountJob

def py():
    j = CountJob(12, step_seconds=0.25, resumable={resumable})
    tk.register_output("count/numbers.txt", j.out_numbers)
"""


def _sis(setup, *args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "sisyphus", *args], cwd=setup, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


@pytest.mark.parametrize("resumable", [True, False])
def test_sigkill_mid_run_then_next_manager_finishes_with_equal_output(sis_setup_dir, resumable):
    setup = sis_setup_dir
    _write_config(setup, COUNT_CONFIG.format(resumable=resumable))
    proc = _sis(setup, "manager", "-r", "config/exp.py")
    progress = glob.glob(str(setup / "work" / "tests" / "engine_jobs" / "CountJob.*"))
    deadline = time.time() + 60
    while time.time() < deadline:
        progress = glob.glob(str(setup / "work" / "tests" / "engine_jobs" / "CountJob.*" / "work" / "progress.txt"))
        if progress and len(open(progress[0]).read().split()) >= 3:
            break
        time.sleep(0.05)
    assert progress, proc.communicate()[0]
    # kill the manager and its worker (the worker runs in its own session: find it by its usage file)
    os.killpg(proc.pid, signal.SIGKILL)
    job_dir = os.path.dirname(os.path.dirname(progress[0]))
    usage = json.load(open(os.path.join(job_dir, "usage.run.1")))
    try:
        os.kill(usage["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    assert not os.path.exists(os.path.join(job_dir, "finished"))
    # the killed worker's claim is released by the kernel as the process ends: wait for that, not for a time
    claim = os.path.join(job_dir, f"{CLAIM}.run.1")
    assert os.path.exists(claim)
    deadline = time.time() + 60
    while is_locked(claim) and time.time() < deadline:
        time.sleep(0.05)
    assert not is_locked(claim)
    rerun = _sis(setup, "manager", "-r", "config/exp.py")
    out = rerun.communicate(timeout=120)[0].decode()
    assert rerun.returncode == 0, out
    assert ("resume interrupted" if resumable else "rerun interrupted") in out
    with open(setup / "output" / "count" / "numbers.txt") as f:
        assert f.read().split() == [str(i * i) for i in range(12)]
    assert os.path.exists(os.path.join(job_dir, "log.run.1.old.1"))


def test_cli_reports_a_bad_config_and_job_failure(sis_setup_dir):
    _write_config(sis_setup_dir, """
from sisyphus import tk
from tests.engine_jobs import ConcatJob

def main():
    tk.register_output("bad/out.txt", ConcatJob([tk.Path("{missing}")]).out_file)
""".format(missing=str(sis_setup_dir / "absent.txt")))
    p = _sis(sis_setup_dir, "m", "-r", "config/exp.py")
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 1
    assert "absent.txt" in out and "ConcatJob" in out
    p = _sis(sis_setup_dir, "m", "-r", "config/nonexistent.py")
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode != 0 and "config/nonexistent.py does not exist" in out


def test_console_and_cleaner(sis_setup_dir):
    a = WriteTextJob("keep")
    tk.register_output("keep.txt", a.out_file)
    old = WriteTextJob("old")
    tk.register_output("old.txt", old.out_file)
    assert run_manager()[0] == 0
    # the config changes: the old output is no longer registered
    reset_graph()
    a = WriteTextJob("keep")
    tk.register_output("keep.txt", a.out_file)
    console = Console(graph, LocalEngine(cpus=1, mem=1))
    assert console.states() == {"finished": [a.job_id()]}
    assert "task run.1" in console.log(a)
    unused = console.unused()
    assert unused == [old._sis_path(abspath=True)]
    assert console.clean(dry_run=True) == unused and os.path.isdir(unused[0])
    console.clean(dry_run=False)
    assert not os.path.exists(unused[0]) and a._sis_setup()
    moved = console.rerun(a)
    assert moved.endswith(".cleared.0001") and not a._sis_setup()
    assert run_manager()[0] == 0 and a._sis_finished()

    _write_config(sis_setup_dir, """
from sisyphus import tk
from tests.engine_jobs import WriteTextJob
def main():
    tk.register_output("keep.txt", WriteTextJob("keep").out_file)
""")
    p = subprocess.run([sys.executable, "-m", "sisyphus", "console", "config/exp.py", "-c", "print_states()"],
                       cwd=sis_setup_dir, capture_output=True, text=True, timeout=60)
    assert "finished: 1" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-m", "sisyphus", "cleaner", "config/exp.py"], cwd=sis_setup_dir,
                       capture_output=True, text=True, timeout=60)
    assert "1 job directories not needed" in p.stdout, p.stdout + p.stderr  # the .cleared copy is a leftover


def test_async_config_waits_for_results(sis_setup_dir):
    _write_config(sis_setup_dir, """
from sisyphus import tk
from tests.engine_jobs import WriteTextJob, ConcatJob

async def py():
    a = WriteTextJob("3")
    await tk.async_run(a.out_file)
    n = int(open(a.out_file.get_path()).read())   # the graph's shape depends on a result
    c = ConcatJob([WriteTextJob(str(i)).out_file for i in range(n)])
    tk.register_output("async/out.txt", c.out_file)
""")
    p = _sis(sis_setup_dir, "m", "-r", "config/exp.py")
    out = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 0, out
    assert open(sis_setup_dir / "output" / "async" / "out.txt").read() == "012"


def test_graph_counts_the_jobs_waiting_for_each_job(sis_setup_dir):
    a = WriteTextJob("a")
    b = ConcatJob([a.out_file])
    c = ConcatJob([a.out_file, b.out_file])
    d = WriteTextJob("d")
    for name, job in (("c", c), ("d", d)):
        tk.register_output(f"waiting/{name}", job.out_file)
    waiting = graph.waiting_jobs()
    assert {j: waiting[j._sis_id()] for j in (a, b, c, d)} == {a: 2, b: 1, c: 0, d: 0}


def test_local_engine_starts_queued_tasks_by_priority_then_in_order(tmp_path):
    """A 1-cpu engine busy with a first task queues four more; they start by their jobs' priorities, equal
    priorities first in, first out."""
    engine = LocalEngine(cpus=1, mem=4)
    order = tmp_path / "order.txt"
    script = "import sys, time; time.sleep(float(sys.argv[3])); open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    dirs = {name: tmp_path / name for name in ("busy", "side1", "side2", "chain", "side3")}
    engine.set_priorities({str(dirs["chain"]): 2, str(dirs["side2"]): 1})
    try:
        for name, d in dirs.items():
            d.mkdir()
            call = [sys.executable, "-c", script, str(order), name, "1.0" if name == "busy" else "0"]
            engine.submit_call(call, str(d), {"cpu": 1, "mem": 1}, name, "run", [1])
        assert engine.wait_idle(60)
    finally:
        engine.stop_engine()
    assert order.read_text().split() == ["busy", "chain", "side2", "side1", "side3"]


def test_manager_runs_the_job_with_most_waiting_jobs_first(sis_setup_dir):
    """After their shared input, a job with two jobs waiting for it starts before three jobs nothing waits for,
    though the graph lists it after them."""
    record = sis_setup_dir / "record"
    record.mkdir()
    # Names with which the graph lists the head last (without priorities it would then start last). Every name
    # carries the variant: job ids depend on the record folder's path, and with fixed side names one side could
    # sort after nearly every head.
    for variant in range(100):
        reset_graph()
        start = WriteTextJob("start")
        sides = [SleepJob(f"side{i}-{variant}", 0.0, str(record), after=start.out_file) for i in range(3)]
        head = SleepJob(f"head{variant}", 0.0, str(record), after=start.out_file)
        tail = SleepJob(f"tail{variant}", 0.0, str(record),
                        after=SleepJob(f"middle{variant}", 0.0, str(record), after=head.out_done).out_done)
        for job in sides + [tail]:
            tk.register_output(f"prio/{job.name}", job.out_done)
        listed = graph.jobs()
        if all(listed.index(head) > listed.index(side) for side in sides):
            break
    else:
        pytest.fail("no variant lists the head last")
    rc, log = run_manager(LocalEngine(cpus=1, mem=4))
    assert rc == 0, log
    starts = {json.load(open(p))["start"]: os.path.basename(p)[:-5] for p in glob.glob(str(record / "*.json"))}
    assert [starts[t] for t in sorted(starts)][0] == head.name, starts


def test_manager_submits_the_next_job_as_soon_as_a_local_task_ends(sis_setup_dir):
    """With a 60 s pause between checks, a chain of three jobs finishes within 30 s only if the manager wakes up
    when the local engine sees a task end."""
    a = WriteTextJob("a")
    c = ConcatJob([ConcatJob([a.out_file]).out_file])
    tk.register_output("chain/c", c.out_file)
    m = Manager(graph, LocalEngine(cpus=2, mem=4), poll=60, out=io.StringIO())
    assert m.run(max_time=30) == 0
