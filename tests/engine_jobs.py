"""Small jobs used by the engine tests (importable by workers as tests.engine_jobs)."""
import json
import os
import signal
import time

from sisyphus import Job, Task, tk


class WriteTextJob(Job):
    """Writes a text to a file."""

    def __init__(self, text, *, repeat=1):
        self.text = text
        self.repeat = repeat
        self.out_file = self.output_path("out.txt")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        with open(self.out_file.get_path(), "w") as f:
            f.write(self.text * self.repeat)


class ConcatJob(Job):
    """Concatenates text files; the log of each run is counted in a file outside the job (run_counter)."""

    def __init__(self, inputs, run_counter=None):
        self.inputs = inputs
        self.run_counter = run_counter
        self.out_file = self.output_path("concat.txt")
        self.out_length = self.output_var("length")

    def tasks(self):
        yield Task("run", rqmt={"cpu": 1, "mem": 0.5})

    def run(self):
        if self.run_counter:
            with open(self.run_counter, "a") as f:
                f.write(self.job_id() + "\n")
        text = ""
        for p in self.inputs:
            if not os.path.isfile(p.get_path()):
                raise FileNotFoundError(f"{type(self).__name__}: input file {p.get_path()} does not exist")
            with open(p.get_path()) as f:
                text += f.read()
        with open(self.out_file.get_path(), "w") as f:
            f.write(text)
        self.out_length.set(len(text))


class SleepJob(Job):
    """Sleeps and records its start and end time in a shared folder (to check the engine's parallelism); ``after``:
    a file it needs first."""

    __sis_hash_exclude__ = {"after": None}

    def __init__(self, name, seconds, record_dir, *, cpu=1, after=None):
        self.name = name
        self.seconds = seconds
        self.record_dir = record_dir
        self.cpu = cpu
        self.after = after
        self.out_done = self.output_path("done")

    def tasks(self):
        yield Task("run", rqmt={"cpu": self.cpu, "mem": 0.1})

    def run(self):
        start = time.time()
        time.sleep(self.seconds)
        with open(os.path.join(self.record_dir, self.name + ".json"), "w") as f:
            json.dump({"start": start, "end": time.time(), "cpu": self.cpu}, f)
        open(self.out_done.get_path(), "w").close()


class OccupancyJob(Job):
    """Records how many cpus the tasks running beside it hold when it starts (each running task keeps a marker file
    with its cpus in ``record_dir/running``), and, with a ``partner``, waits until that task has started too: it ends
    only once both ran side by side (a task that ran alone fails after ``wait`` seconds)."""

    def __init__(self, name, record_dir, *, cpu=1, partner=None, wait=120.0):
        self.name = name
        self.record_dir = record_dir
        self.cpu = cpu
        self.partner = partner
        self.wait = wait
        self.out_done = self.output_path("done")

    def tasks(self):
        yield Task("run", rqmt={"cpu": self.cpu, "mem": 0.1})

    def run(self):
        running = os.path.join(self.record_dir, "running")
        started = os.path.join(self.record_dir, "started")
        for d in (running, started):
            os.makedirs(d, exist_ok=True)
        marker = os.path.join(running, self.name)
        with open(marker + ".tmp", "w") as f:
            f.write(str(self.cpu))
        os.replace(marker + ".tmp", marker)
        try:
            in_use = sum(int(open(os.path.join(running, n)).read()) for n in os.listdir(running)
                         if not n.endswith(".tmp"))
            open(os.path.join(started, self.name), "w").close()
            if self.partner is not None:
                deadline = time.time() + self.wait
                while not os.path.exists(os.path.join(started, self.partner)):
                    if time.time() > deadline:
                        raise RuntimeError(f"{self.name} ran without {self.partner} beside it")
                    time.sleep(0.05)
            with open(os.path.join(self.record_dir, self.name + ".json"), "w") as f:
                json.dump({"cpu": self.cpu, "cpu_in_use_at_start": in_use}, f)
        finally:
            os.remove(marker)
        open(self.out_done.get_path(), "w").close()


class CountJob(Job):
    """Counts to n slowly, keeping its progress in work/, so it can resume after being killed."""

    def __init__(self, n, *, step_seconds=0.2, resumable=True):
        self.n = n
        self.step_seconds = step_seconds
        self.resumable = resumable
        self.out_numbers = self.output_path("numbers.txt")

    def tasks(self):
        yield Task("run", resume="run" if self.resumable else None, rqmt={"cpu": 1, "mem": 0.2})
        yield Task("finalize", mini_task=True)

    def run(self):
        progress = "progress.txt"
        if not self.resumable and os.path.exists(progress):
            os.remove(progress)
        done = 0
        if os.path.exists(progress):
            with open(progress) as f:
                done = len(f.read().split())
        with open(progress, "a") as f:
            for i in range(done, self.n):
                f.write(f"{i * i}\n")
                f.flush()
                time.sleep(self.step_seconds)

    def finalize(self):
        with open("progress.txt") as f:
            numbers = f.read().split()
        assert len(numbers) == self.n, f"expected {self.n} numbers, got {len(numbers)}"
        tmp = self.out_numbers.get_path() + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(numbers) + "\n")
        os.replace(tmp, self.out_numbers.get_path())


class TimeLimitedJob(Job):
    """Does one step per attempt and then dies like a task at its time limit (SIGKILL, no error marker); resumes
    from its progress file. With ``report_progress`` the task names its progress method."""

    def __init__(self, steps, *, report_progress=True, make_progress=True):
        self.steps = steps
        self.report_progress = report_progress
        self.make_progress = make_progress
        self.out_numbers = self.output_path("numbers.txt")

    def tasks(self):
        yield Task("run", resume="run", rqmt={"cpu": 1, "mem": 0.2},
                   progress="steps_done" if self.report_progress else None)

    def steps_done(self):
        path = os.path.join(self._sis_path("work", abspath=True), "progress.txt")
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return len(f.read().split())

    def run(self):
        done = self.steps_done()
        if done < self.steps:
            if self.make_progress:
                with open("progress.txt", "a") as f:
                    f.write(f"{done}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        with open(self.out_numbers.get_path(), "w") as f:
            f.write(open("progress.txt").read())


class ArrayJob(Job):
    """A task with several ids, each writing one part."""

    def __init__(self, parts):
        self.parts = parts
        self.out_dir = self.output_path("parts", directory=True)

    def tasks(self):
        yield Task("run", args=list(range(len(self.parts))), rqmt={"cpu": 1, "mem": 0.1})

    def run(self, index):
        with open(os.path.join(self.out_dir.get_path(), f"{index}.txt"), "w") as f:
            f.write(self.parts[index])


class FailJob(Job):
    """Raises: stands for a job that meets bad input."""

    def __init__(self, message, *, tries=1):
        self.message = message
        self.tries = tries
        self.out_file = self.output_path("never.txt")

    def tasks(self):
        yield Task("run", tries=self.tries, mini_task=True)

    def run(self):
        with open(self.out_file.get_path() + ".partial", "w") as f:
            f.write("partial")
        raise ValueError(self.message)


def build_graph(prefix="a"):
    """A small diamond graph: two texts, their concatenation, a count job."""
    x = WriteTextJob("hello ")
    y = WriteTextJob("world", repeat=2)
    c = ConcatJob([x.out_file, y.out_file])
    c.add_alias(f"{prefix}/concat")
    tk.register_output(f"{prefix}/concat.txt", c.out_file)
    return c


class FlakyJob(Job):
    """Fails until a marker file exists (stands for a job hit by a broken node that a failure hook repairs)."""

    def __init__(self, marker):
        self.marker = marker
        self.out_file = self.output_path("ok.txt")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        if not os.path.exists(self.marker):
            raise RuntimeError(f"FlakyJob: {self.marker} does not exist yet")
        with open(self.out_file.get_path(), "w") as f:
            f.write("ok")


class ReadInputJob(Job):
    """Copies an input file, opened through the path object (so a cached input is read from the cache)."""

    def __init__(self, text_file):
        self.text_file = text_file
        self.out_file = self.output_path("copy.txt")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        with open(self.text_file) as f:
            text = f.read()
        with open(self.out_file.get_path(), "w") as f:
            f.write(text)


class KillSelfJob(Job):
    """Its task dies by SIGKILL, as under the out-of-memory killer."""

    def __init__(self, tag):
        self.tag = tag
        self.out_file = self.output_path("never.txt")

    def tasks(self):
        yield Task("run", rqmt={"cpu": 1, "mem": 0.1})

    def run(self):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class FillDiskJob(Job):
    """Writes ``n_bytes`` to its output, 64 KiB at a time (fills a small disk)."""

    def __init__(self, n_bytes):
        self.n_bytes = n_bytes
        self.out_file = self.output_path("big.bin")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        with open(self.out_file.get_path(), "wb") as f:
            for _ in range(0, self.n_bytes, 65536):
                f.write(b"\0" * 65536)
                f.flush()
