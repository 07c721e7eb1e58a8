"""The engine's guarantees under restarts, second managers, killed workers, full disks and bad names.

Real managers and workers (subprocesses), real signals; each test fails on an engine without the guarantee.
"""
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sisyphus import tk
from sisyphus.graph import graph
from sisyphus.localengine import LocalEngine
from tests.engine_jobs import KillSelfJob, SleepJob, WriteTextJob
from tests.test_engine_manager import _sis, _write_config, run_manager


def _wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(pattern):
    return len([line for line in _text(pattern).splitlines() if line.strip()])


def _text(pattern):
    return "".join(open(p).read() for p in glob.glob(pattern))


def _started(task):
    return bool(task.claimed(1)) or task.attempts(1) > 0


# 1. restarts do not consume retries ------------------------------------------------------------------------------
def test_manager_restarts_while_tasks_wait_for_a_cpu_cost_no_retries(sis_setup_dir):
    record = sis_setup_dir / "record"
    record.mkdir()
    jobs = [SleepJob(f"s{i}", 8, str(record)) for i in range(5)]
    for j in jobs:
        tk.register_output(f"sleep/{j.name}", j.out_done)
    # Each manager's engine has one cpu and knows nothing of the workers of earlier managers: it starts one
    # task, the others stay in its (in-memory) queue until the manager stops. The last task waits through
    # four restarts without ever starting.
    for restart in range(1, 5):
        rc, _ = run_manager(LocalEngine(cpus=1, mem=4), max_time=0.3)
        assert rc == 2
        _wait_for(lambda: sum(_started(j._sis_tasks()[0]) for j in jobs) == restart, timeout=120,
                  what=f"{restart} workers")
    rc, log = run_manager(LocalEngine(cpus=5, mem=4), max_time=60)
    assert rc == 0, log
    assert [j._sis_tasks()[0].attempts(1) for j in jobs] == [1] * 5
    assert "interrupted" not in log
    assert len(os.listdir(record)) == 5


def test_cleared_errors_get_a_fresh_retry_budget(sis_setup_dir):
    from sisyphus.console import Console
    from tests.engine_jobs import FailJob

    f = FailJob("fails", tries=2)
    tk.register_output("fail.txt", f.out_file)
    assert run_manager()[0] == 1
    task = f._sis_tasks()[0]
    assert task.attempts(1) == 2 and task.failures(1) == 2
    Console(graph, LocalEngine(cpus=1, mem=1)).clear_errors(f)
    rc, log = run_manager()
    assert rc == 1 and "retry" in log
    assert task.attempts(1) == 2  # counted since the reset: two more real attempts
    assert sum(1 for e in task.history(1) if e["event"] == "start") == 2


# 2. a task id never runs twice at once ------------------------------------------------------------------------------
SLOW_CONFIG = """
from sisyphus import tk
from tests.slow_import_jobs import RecordRunsJob

def py():
    tk.register_output("runs/out.txt", RecordRunsJob({runs!r}, 120.0).out_file)
"""


def test_restarted_manager_does_not_start_a_task_whose_worker_is_still_importing(sis_setup_dir):
    runs = str(sis_setup_dir / "runs.txt")
    _write_config(sis_setup_dir, SLOW_CONFIG.format(runs=runs))
    env = dict(os.environ, SIS_TEST_IMPORT_DELAY="10")
    first = _sis(sis_setup_dir, "manager", "-r", "config/exp.py", env=env)
    job_dirs = str(sis_setup_dir / "work" / "tests" / "slow_import_jobs" / "RecordRunsJob.*")
    _wait_for(lambda: _worker_pids(sis_setup_dir), what="the worker process")
    os.killpg(first.pid, signal.SIGKILL)  # the manager only: its worker lives in its own session
    first.wait()
    log2 = str(sis_setup_dir / "manager2.log")
    second = subprocess.Popen([sys.executable, "-m", "sisyphus", "manager", "-r", "config/exp.py"], cwd=sis_setup_dir,
                              stdout=open(log2, "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def settled():  # the task runs until released: release it once a second copy had its chance
        if _lines(runs) == 2 or "already running" in _text(job_dirs + "/engine/local.run.1"):
            return True
        return _lines(job_dirs + "/submit_log.run") == 1 and "running: 1" in _text(log2)

    _wait_for(settled, timeout=120, what="the second manager to settle")
    open(runs + ".release", "w").close()
    assert second.wait(timeout=120) == 0, _text(log2)
    assert _lines(runs) == 1, _text(log2)


def _worker_pids(setup):
    """Pids of worker processes of this test's setup (found by their command line)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmd and any(str(setup).encode() in c for c in cmd):
            pids.append(int(pid))
    return pids


def test_two_workers_started_for_one_task_id_run_it_once(sis_setup_dir):
    runs = str(sis_setup_dir / "runs.txt")
    _write_config(sis_setup_dir, SLOW_CONFIG.format(runs=runs))
    from tests.slow_import_jobs import RecordRunsJob

    job = RecordRunsJob(runs, 120.0)
    job._sis_setup_directory()
    cmd = [sys.executable, "-m", "sisyphus", "worker", job._sis_path(abspath=True), "run", "1"]
    logs = [str(sis_setup_dir / f"worker{i}.log") for i in range(2)]
    workers = [subprocess.Popen(cmd, cwd=sis_setup_dir, stdout=open(log, "w"), stderr=subprocess.STDOUT)
               for log in logs]
    _wait_for(lambda: _lines(runs) == 2 or any(w.poll() is not None for w in workers), timeout=120,
              what="both workers to start the task, or one to give up")
    open(runs + ".release", "w").close()
    for w in workers:
        w.wait(timeout=120)
    outs = [_text(log) for log in logs]
    assert [w.returncode for w in workers] == [0, 0], outs
    assert _lines(runs) == 1, outs
    assert any("already running" in o for o in outs), outs


# 3. one manager per work directory ----------------------------------------------------------------------------------
def test_second_manager_on_a_work_directory_refuses_naming_the_first(sis_setup_dir):
    runs = str(sis_setup_dir / "runs.txt")
    _write_config(sis_setup_dir, SLOW_CONFIG.format(runs=runs))
    first = _sis(sis_setup_dir, "manager", "-r", "config/exp.py", env=dict(os.environ, SIS_TEST_IMPORT_DELAY="3"))
    _wait_for(lambda: os.path.isdir(sis_setup_dir / "work" / "tests"), what="the first manager")
    second = _sis(sis_setup_dir, "manager", "-r", "config/exp.py")
    out2 = second.communicate(timeout=60)[0].decode()
    open(runs + ".release", "w").close()
    out1 = first.communicate(timeout=120)[0].decode()
    assert second.returncode == 3, out2
    assert "another manager is running" in out2 and f"pid {first.pid}" in out2 and socket.gethostname() in out2
    assert first.returncode == 0, out1
    with open(runs) as f:
        assert len(f.read().split()) == 1


def test_lock_of_a_dead_manager_is_taken_over(sis_setup_dir):
    work = sis_setup_dir / "work"
    work.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (work / ".manager.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0}))
    tk.register_output("a.txt", WriteTextJob("a").out_file)
    rc, log = run_manager()
    assert rc == 0, log
    assert f"pid {dead.pid}" in log and "without releasing" in log


# 4. a dead worker is reported at once, with its signal ------------------------------------------------------------
def test_worker_killed_by_a_signal_is_reported_at_once_with_the_signal(sis_setup_dir, monkeypatch):
    import sisyphus.global_settings as gs

    # a heartbeat that never times out: only the engine seeing the exit, or the released claim, tells
    monkeypatch.setattr(gs, "HEARTBEAT_TIMEOUT", 10 ** 6)
    job = KillSelfJob("oom")
    tk.register_output("killed.txt", job.out_file)
    rc, log = run_manager(max_time=300)
    assert rc == 1, log
    assert "killed by signal SIGKILL (9)" in log
    task = job._sis_tasks()[0]
    assert task.attempts(1) == 4  # the first start and MAX_SUBMIT_RETRIES resumptions
    with open(task.log_path(1)) as f:
        assert "killed by signal SIGKILL" in f.read()


# 5. a full disk ---------------------------------------------------------------------------------------------------
@pytest.fixture
def small_work_disk(sis_setup_dir):
    """work/ on a 1 MiB tmpfs (needs the right to mount; skipped with the reason otherwise)."""
    work = sis_setup_dir / "work"
    work.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the full-disk test: {p.stderr.strip()}")
    yield work
    subprocess.run(["umount", "-l", str(work)], check=False)


def _fill(folder):
    try:
        with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


def _leftover_tmp_files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if ".tmp" in f]


def test_task_that_fills_the_disk_fails_cleanly(small_work_disk):
    from tests.engine_jobs import FillDiskJob

    job = FillDiskJob(4 * 1024 * 1024)
    tk.register_output("big.bin", job.out_file)
    rc, log = run_manager(max_time=120)
    assert rc == 1, log
    job_dir = job._sis_path(abspath=True)
    assert f"the disk holding {job_dir} is full" in log
    assert os.path.exists(os.path.join(job_dir, "error.run.1"))
    assert not os.path.exists(os.path.join(job_dir, "finished"))
    assert _leftover_tmp_files(small_work_disk) == []


def test_manager_on_a_full_disk_names_the_file_it_could_not_write(small_work_disk):
    _fill(small_work_disk)
    job = WriteTextJob("x" * 10000)
    tk.register_output("x.txt", job.out_file)
    rc, log = run_manager(max_time=60)
    assert rc == 1, log
    assert f"cannot write {job._sis_path(abspath=True)}/" in log and "the disk is full" in log
    assert _leftover_tmp_files(small_work_disk) == []


# 6. and 7. names a config chooses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "/tmp/abs.txt", "a/../../x", "..", ""])
def test_output_file_names_stay_inside_the_job(name):
    from sisyphus import Job
    from sisyphus.safe_names import UnsafeNameError

    class EscapingJob(Job):
        def __init__(self, name):
            self.out = self.output_path(name)

    with pytest.raises(UnsafeNameError, match="output file"):
        EscapingJob(name)


@pytest.mark.parametrize("name", ["../..", "../x", "/abs/x", "a/" + "b" * 300])
def test_aliases_and_output_names_stay_inside_their_folders(sis_setup_dir, name):
    from sisyphus.safe_names import UnsafeNameError

    job = WriteTextJob("a")
    with pytest.raises(UnsafeNameError, match="alias"):
        job.add_alias(name)
    with pytest.raises(UnsafeNameError, match="output name"):
        tk.register_output(name, job.out_file)
    assert not os.path.exists(sis_setup_dir / "alias") and not os.path.exists(sis_setup_dir / "output")


def test_long_names_fail_when_declared_not_after_the_job_ran(sis_setup_dir):
    from sisyphus.safe_names import UnsafeNameError

    job = WriteTextJob("a")
    with pytest.raises(UnsafeNameError, match="more than the 255"):
        job.add_alias("results/" + "x" * 256)
    with pytest.raises(UnsafeNameError, match="more than the 255"):
        tk.register_output("y" * 300 + ".txt", job.out_file)


def test_register_output_keeps_a_users_link_and_folders_that_lead_out(sis_setup_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (sis_setup_dir / "output").mkdir()
    os.symlink(str(elsewhere / "mine.txt"), sis_setup_dir / "output" / "mine.txt")  # the user's own link
    os.symlink(str(elsewhere), sis_setup_dir / "output" / "outside")  # a folder that leads out of output/
    tk.register_output("mine.txt", WriteTextJob("a").out_file)
    tk.register_output("outside/x.txt", WriteTextJob("b").out_file)
    tk.register_output("fine.txt", WriteTextJob("c").out_file)
    rc, log = run_manager()
    assert rc == 1, log
    assert os.readlink(sis_setup_dir / "output" / "mine.txt") == str(elsewhere / "mine.txt")
    assert "not one the manager made" in log and "outside" in log
    assert os.listdir(elsewhere) == []
    assert open(sis_setup_dir / "output" / "fine.txt").read() == "c"


def test_manager_without_r_and_stdin_closed_does_not_start(sis_setup_dir):
    _write_config(sis_setup_dir, """
from sisyphus import tk
from tests.engine_jobs import WriteTextJob
def main():
    tk.register_output("a.txt", WriteTextJob("a").out_file)
""")
    p = _sis(sis_setup_dir, "manager", "config/exp.py", stdin=subprocess.DEVNULL)
    out = p.communicate(timeout=60)[0].decode()
    assert p.returncode == 0 and "Traceback" not in out and "use -r" in out, out
    assert not os.path.exists(sis_setup_dir / "output" / "a.txt")
