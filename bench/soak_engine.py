"""Soak test of the engine: random ``kill -9`` of the manager and of workers while a small graph runs.

Usage: ``python bench/soak_engine.py [--kills 50] [--seed 1]`` (not run by the tests; minutes of wall time).

The graph has resumable tasks (counting with progress kept in work/), an array task and a job that joins their
outputs. A reference run goes uninterrupted; then managers are started on a second setup and, at random
moments, the manager or a running worker is killed with SIGKILL (a killed manager is restarted at once; a run
that finishes is compared with the reference and started again from an empty work/). Printed at the end:
kills, runs completed, outputs differing from the reference, duplicate executions (a task id started while
another worker of it was alive) and stuck runs (no progress to the end within the time limit).

The settings raise MAX_SUBMIT_RETRIES: every kill of a worker is a real interrupted attempt, and this bench is
about outputs and duplicates, not about the retry budget.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipe"))

JOBS = '''
import glob
import os
import time

from sisyphus import Job, Task


def _enter(key):
    """Marks this execution as running; notes a duplicate if another live process runs the same task id."""
    folder = os.environ["SOAK_RECORDS"]
    for other in glob.glob(os.path.join(folder, key + ".*")):
        pid = int(other.rsplit(".", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        with open(os.path.join(folder, "DUPLICATES"), "a") as f:
            f.write(f"{key} {pid} {os.getpid()}\\n")
    marker = os.path.join(folder, f"{key}.{os.getpid()}")
    open(marker, "w").close()
    with open(os.path.join(folder, "executions"), "a") as f:
        f.write(key + "\\n")
    return marker


class CountJob(Job):
    """Appends n numbers slowly to work/progress.txt, resuming where a killed attempt stopped."""

    def __init__(self, n, step):
        self.n = n
        self.step = step
        self.out = self.output_path("numbers.txt")

    def tasks(self):
        yield Task("run", resume="run", rqmt={"cpu": 1, "mem": 0.1})
        yield Task("finalize", mini_task=True)

    def run(self):
        marker = _enter(f"{self.job_id().replace('/', '_')}.run.1")
        done = 0
        if os.path.exists("progress.txt"):
            with open("progress.txt") as f:
                lines = f.read().split("\\n")
            done = len(lines) - 1  # a line cut by the kill is written again
            with open("progress.txt", "w") as f:
                f.write("".join(line + "\\n" for line in lines[:done]))
        with open("progress.txt", "a") as f:
            for i in range(done, self.n):
                f.write(f"{i * i + self.n}\\n")
                f.flush()
                time.sleep(self.step)
        os.remove(marker)

    def finalize(self):
        with open("progress.txt") as f:
            text = f.read()
        tmp = self.out.get_path() + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.out.get_path())


class PartsJob(Job):
    """An array task: each id writes one part (temp file and rename), after a pause."""

    def __init__(self, n, seconds):
        self.n = n
        self.seconds = seconds
        self.out = self.output_path("parts", directory=True)

    def tasks(self):
        yield Task("run", args=list(range(self.n)), rqmt={"cpu": 1, "mem": 0.1})

    def run(self, index):
        marker = _enter(f"{self.job_id().replace('/', '_')}.run.{index + 1}")
        time.sleep(self.seconds)
        path = os.path.join(self.out.get_path(), f"{index}.txt")
        with open(path + ".tmp", "w") as f:
            f.write(f"part {index} of {self.n}\\n" * (index + 1))
        os.replace(path + ".tmp", path)
        os.remove(marker)


class JoinJob(Job):
    """Concatenates the count outputs and the parts."""

    def __init__(self, counts, parts, n_parts):
        self.counts = counts
        self.parts = parts
        self.n_parts = n_parts
        self.out = self.output_path("all.txt")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        text = ""
        for p in self.counts:
            text += open(p.get_path()).read()
        for i in range(self.n_parts):
            text += open(os.path.join(self.parts.get_path(), f"{i}.txt")).read()
        with open(self.out.get_path() + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.out.get_path() + ".tmp", self.out.get_path())
'''

CONFIG = '''
from sisyphus import tk
from soak_jobs import CountJob, JoinJob, PartsJob


def py():
    counts = [CountJob(n, 0.15) for n in (20, 35, 50)]
    parts = PartsJob(4, 1.5)
    join = JoinJob([c.out for c in counts], parts.out, 4)
    for i, c in enumerate(counts):
        tk.register_output(f"count{i}.txt", c.out)
    tk.register_output("parts", parts.out)
    tk.register_output("all.txt", join.out)
'''

SETTINGS = '''
def engine():
    from sisyphus.localengine import LocalEngine
    return LocalEngine(cpus=2, mem=4)
WAIT_PERIOD_BETWEEN_CHECKS = 0.2
HEARTBEAT_PERIOD = 0.5
MAX_SUBMIT_RETRIES = 10 ** 6
'''


def make_setup(base: str) -> str:
    """A setup folder with the jobs, the config and the settings."""
    os.makedirs(os.path.join(base, "config"))
    for name, text in (("soak_jobs.py", JOBS), ("config/__init__.py", ""), ("config/soak.py", CONFIG),
                       ("settings.py", SETTINGS)):
        with open(os.path.join(base, name), "w") as f:
            f.write(text)
    os.makedirs(os.path.join(base, "records"))
    return base


def env_for(setup: str) -> Dict[str, str]:
    env = dict(os.environ, SOAK_RECORDS=os.path.join(setup, "records"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "recipe"), env.get("PYTHONPATH", "")])
    return env


def start_manager(setup: str, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sisyphus", "manager", "-r", "config/soak.py"], cwd=setup,
                            env=env_for(setup), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def running_workers(setup: str) -> List[int]:
    """Pids of the workers holding a claim (read from the claim files, which name their owner)."""
    from sisyphus.locks import is_locked

    pids = []
    for dirpath, _, files in os.walk(os.path.join(setup, "work")):
        for name in files:
            if name.startswith("claim."):
                path = os.path.join(dirpath, name)
                try:
                    text = open(path).read()
                    if text and is_locked(path):
                        pids.append(json.loads(text)["pid"])
                except (OSError, ValueError, KeyError):
                    continue
    return pids


def outputs_equal(a: str, b: str) -> bool:
    """Byte equality of every file under output/ (links followed)."""
    cmp = filecmp.dircmp(os.path.join(a, "output"), os.path.join(b, "output"))

    def same(c) -> bool:
        if c.left_only or c.right_only or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        return not mismatch and not errors and all(same(s) for s in c.subdirs.values())

    return same(cmp)


def clean_run(setup: str) -> None:
    for d in ("work", "output", "alias"):
        shutil.rmtree(os.path.join(setup, d), ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-gap", type=float, default=2.5, help="longest pause between kills (seconds)")
    ap.add_argument("--stuck-after", type=float, default=300, help="a run without kills that takes longer is stuck")
    ap.add_argument("--keep", action="store_true", help="keep the temporary setups")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    base = tempfile.mkdtemp(prefix="soak_engine.")
    reference = make_setup(os.path.join(base, "reference"))
    soak = make_setup(os.path.join(base, "soak"))
    log = open(os.path.join(base, "managers.log"), "ab")

    t0 = time.time()
    ref = start_manager(reference, log)
    if ref.wait(timeout=args.stuck_after) != 0:
        print(f"reference run failed; see {log.name}")
        return 2
    print(f"reference run: {time.time() - t0:.0f} s")

    kills = {"manager": 0, "worker": 0}
    runs, differing, stuck = 0, 0, 0
    manager, started, min_age = start_manager(soak, log), time.time(), rng.uniform(2, 10)
    while sum(kills.values()) < args.kills:
        time.sleep(rng.uniform(0.2, args.max_gap))
        rc = manager.poll()
        if rc is not None:  # the run ended: compare, then start a fresh one
            runs += 1
            if rc != 0 or not outputs_equal(reference, soak):
                differing += 1
                print(f"run {runs}: manager exit {rc}, outputs differ" + ("" if rc else " from the reference"))
            clean_run(soak)
            manager, started, min_age = start_manager(soak, log), time.time(), rng.uniform(2, 10)
            continue
        workers = running_workers(soak)
        manager_age = time.time() - started
        if workers and (rng.random() < 0.6 or manager_age < min_age):
            pid = rng.choice(workers)
            try:
                os.kill(pid, signal.SIGKILL)
                kills["worker"] += 1
            except ProcessLookupError:
                pass
        elif manager_age >= min_age and rng.random() < 0.4:  # a manager gets time to load and submit first
            os.killpg(manager.pid, signal.SIGKILL)  # the manager's own group; its workers live in their own
            manager.wait()
            kills["manager"] += 1
            manager, started, min_age = start_manager(soak, log), time.time(), rng.uniform(2, 10)
    try:
        rc = manager.wait(timeout=args.stuck_after)
        runs += 1
        if rc != 0 or not outputs_equal(reference, soak):
            differing += 1
    except subprocess.TimeoutExpired:
        stuck += 1
        os.killpg(manager.pid, signal.SIGKILL)
        manager.wait()
    for pid in running_workers(soak):  # nothing of this bench keeps running
        os.kill(pid, signal.SIGKILL)
    duplicates_file = os.path.join(soak, "records", "DUPLICATES")
    duplicates = len(open(duplicates_file).read().split("\n")) - 1 if os.path.exists(duplicates_file) else 0
    executions = len(open(os.path.join(soak, "records", "executions")).read().split())
    print(f"kills: {sum(kills.values())} (manager {kills['manager']}, worker {kills['worker']})")
    print(f"runs completed: {runs}")
    print(f"task executions: {executions}")
    print(f"outputs differing from the uninterrupted run: {differing}")
    print(f"duplicate executions: {duplicates}")
    print(f"stuck runs: {stuck}")
    print(f"wall time: {time.time() - t0:.0f} s")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"setups kept in {base}")
    return 0 if differing == duplicates == stuck == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
