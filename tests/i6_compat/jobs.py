"""Text jobs in i6_core's style (see the package docstring)."""
import shutil
import subprocess

from sisyphus import *  # noqa: F401,F403 - the import most i6_core modules start with
from sisyphus.delayed_ops import DelayedBase, DelayedFormat
from sisyphus.http_server import object_to_html
from sisyphus.tools import try_get


class WriteLinesJob(Job):  # noqa: F405
    """Writes ``num_lines`` numbered lines (a stand-in for a corpus text)."""

    def __init__(self, num_lines, prefix="line"):
        self.num_lines = num_lines
        self.prefix = prefix
        self.out_txt = self.output_path("lines.txt")

    def tasks(self):
        yield Task("run", mini_task=True)  # noqa: F405

    def run(self):
        with open(self.out_txt.get_path(), "w") as f:
            f.writelines(f"{self.prefix} {i}\n" for i in range(self.num_lines))


class CountLinesJob(Job):  # noqa: F405
    """Counts lines with ``wc -l``, reading the command's output through ``self.sh(cmd, True)``."""

    def __init__(self, text_file):
        self.text_file = text_file
        self.out_num_lines = self.output_var("num_lines")

    def tasks(self):
        yield Task("run", mini_task=True)  # noqa: F405

    def run(self):
        output = self.sh("wc -l < {text_file}", True)  # second positional argument: capture_output
        self.out_num_lines.set(int(output.strip()))


class HeadJob(Job):  # noqa: F405
    """The first lines of a text, with ``head`` closing the pipe early: exit code 141 is accepted, 0 as well."""

    def __init__(self, text_file, num_lines=3, *, endless=False):
        self.text_file = text_file
        self.num_lines = num_lines
        self.endless = endless
        self.out = self.output_path("head.txt")

    def tasks(self):
        yield Task("run", mini_task=True)  # noqa: F405

    def run(self):
        source = "while true; do cat {text_file}; done" if self.endless else "cat {text_file}"
        self.sh(source + " | head -n {num_lines} > {out}", except_return_codes=(141,))


class WriteDelayedTextJob(Job):  # noqa: F405
    """Writes a text known only once other jobs ran (a ``DelayedFormat`` argument, as i6_core configs pass)."""

    def __init__(self, text):
        assert isinstance(text, (str, DelayedBase)), f"WriteDelayedTextJob: text must be str or delayed: {text!r}"
        self.text = text
        self.out = self.output_path("text.txt")

    def tasks(self):
        yield Task("run", mini_task=True)  # noqa: F405

    def run(self):
        with open(self.out.get_path(), "w") as f:
            f.write(try_get(self.text) + "\n")

    def html(self):
        return object_to_html({"text": self.text})


class PythonVersionJob(Job):  # noqa: F405
    """Runs the setup's Python (``gs.SIS_COMMAND[0]``, as i6_core's helpers find it) and records its version."""

    def __init__(self, python_exe):
        assert tk.is_path(python_exe), f"PythonVersionJob: python_exe must be a tk.Path, got {python_exe!r}"  # noqa: F405
        self.python_exe = python_exe
        self.out_version = self.output_path("version.txt")

    def tasks(self):
        yield Task("run", mini_task=True)  # noqa: F405

    def run(self):
        exe = tk.uncached_path(self.python_exe)  # noqa: F405
        version = subprocess.check_output([exe, "-c", "import sys; print(sys.version_info[0])"]).decode().strip()
        with open(self.out_version.get_path(), "w") as f:
            f.write(version + "\n")


def system_python():
    """``tk.Path`` of the Python running the engine, found as i6_core finds it."""
    return tk.Path(shutil.which(gs.SIS_COMMAND[0]), hash_overwrite="SYSTEM_PYTHON")  # noqa: F405


def build():
    """The graph: lines -> count -> a text formatted from the count; head twice; the python version."""
    lines = WriteLinesJob(20)
    count = CountLinesJob(lines.out_txt)
    text = WriteDelayedTextJob(DelayedFormat("the corpus has {} lines ({})", count.out_num_lines, "counted"))
    head = HeadJob(lines.out_txt, 3)
    head_endless = HeadJob(lines.out_txt, 4, endless=True)
    version = PythonVersionJob(system_python())
    tk.register_output("i6/count_text.txt", text.out)  # noqa: F405
    tk.register_output("i6/head.txt", head.out)  # noqa: F405
    tk.register_output("i6/head_endless.txt", head_endless.out)  # noqa: F405
    tk.register_output("i6/python_version.txt", version.out_version)  # noqa: F405
    return {"lines": lines, "count": count, "text": text, "head": head, "head_endless": head_endless,
            "version": version}


def py():
    build()
