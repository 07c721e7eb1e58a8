"""A job whose module takes SIS_TEST_IMPORT_DELAY seconds to import in a worker (like the RETURNN jobs), for the engine tests."""
import os
import time

from sisyphus import Job, Task

if os.environ.get("SIS_WORKER") == "1":  # in workers only: the manager loads its config at full speed
    time.sleep(float(os.environ.get("SIS_TEST_IMPORT_DELAY", "0")))


class RecordRunsJob(Job):
    """Appends its pid to ``runs`` (a file outside the job) at start, then waits for ``<runs>.release`` (at most
    ``seconds``) before it writes its output: a test decides when a run ends, not the clock."""

    def __init__(self, runs, seconds):
        self.runs = runs
        self.seconds = seconds
        self.out_file = self.output_path("out.txt")

    def tasks(self):
        yield Task("run", resume="run", rqmt={"cpu": 1, "mem": 0.1})

    def run(self):
        with open(self.runs, "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.time() + self.seconds
        while not os.path.exists(self.runs + ".release") and time.time() < deadline:
            time.sleep(0.1)
        with open(self.out_file.get_path(), "w") as f:
            f.write("done\n")
