"""The recipe-facing API: delayed operations, variables, reports, setup_path, bad arguments, run_job."""
import os

import pytest

from sisyphus import Job, Path, Task, gs, setup_path, tk
from sisyphus.delayed_ops import DelayedFormat, DelayedFunction, DelayedJoin
from tests.engine_jobs import ConcatJob, FailJob, WriteTextJob


def test_star_import_gives_upstream_names():
    ns = {}
    exec("from sisyphus import *", ns)
    for name in ("Job", "Task", "Path", "gs", "tk", "setup_path"):
        assert name in ns


def test_delayed_operations_resolve_after_the_job_ran(run_job):
    a = WriteTextJob("abc")
    c = ConcatJob([a.out_file, a.out_file])
    length = c.out_length
    doubled = length * 2 + 1
    text = DelayedFormat("len={} file={}", length, c.out_file)
    joined = DelayedJoin([a.out_file, "x"], ",")
    upper = DelayedFunction(c.out_length, str)
    run_job(c)
    assert length.get() == 6
    assert doubled.get() == 13
    assert text.get() == f"len=6 file={c.out_file.get_path()}"
    assert joined.get() == f"{a.out_file.get_path()},x"
    assert upper.get() == "6"


def test_report_is_written(sis_setup_dir, run_job):
    a = WriteTextJob("abcd")
    c = ConcatJob([a.out_file])
    tk.register_report("rep/summary.txt", {"len": c.out_length}, template="length: {len}")
    run_job(c)
    from sisyphus.graph import graph

    graph.update_outputs()
    assert (sis_setup_dir / "output" / "rep" / "summary.txt").read_text() == "length: 4\n"


def test_setup_path_and_uncached_path():
    p = setup_path("config.librispeech")("lexicon.txt")
    assert isinstance(p, Path) and p.path == os.path.join("config", "librispeech", "lexicon.txt")
    assert tk.uncached_path(p) == os.path.join(gs.BASE_DIR, "config", "librispeech", "lexicon.txt")
    assert tk.uncached_path("/abs/x") == "/abs/x"


def test_bad_job_argument_names_the_job():
    with pytest.raises(TypeError, match="WriteTextJob"):
        WriteTextJob("x", repaet=2)


def test_failed_constructor_leaves_no_job():
    class Picky(Job):
        def __init__(self, size):
            if size < 0:
                raise ValueError(f"Picky: size must be >= 0, got {size}")
            self.out = self.output_path("o")

        def tasks(self):
            yield Task("run")

    Picky.__module__ = "tests.test_engine_api"
    with pytest.raises(ValueError, match="size must be >= 0"):
        Picky(-1)
    from sisyphus.job import created_jobs

    assert not any("Picky" in k for k in created_jobs)


def test_run_job_failure_marks_nothing_finished(run_job):
    f = FailJob("bad value for option 'x'")
    with pytest.raises(ValueError, match="bad value"):
        run_job(f)
    assert not f._sis_finished()
    assert not os.path.exists(os.path.join(f._sis_path(abspath=True), "finished"))


def test_variables_round_trip(run_job):
    c = ConcatJob([WriteTextJob("12").out_file])
    run_job(c)
    assert c.out_length.get() == 2
    assert str(c.out_length) == "2"
    with open(c.out_length.get_path()) as f:
        assert f.read() == "2\n"


def test_report_of_a_single_variable_is_not_taken_for_a_function(sis_setup_dir, run_job):
    c = ConcatJob([WriteTextJob("abc").out_file])
    tk.register_report("rep/len.txt", c.out_length)  # delayed values are callable (upstream's __call__)
    run_job(c)
    from sisyphus.graph import graph

    graph.update_outputs()
    assert (sis_setup_dir / "output" / "rep" / "len.txt").read_text() == "3\n"


def test_set_env_verbatim_or_substituted():
    """``set_env`` values reach the task as given, or (``verbatim=False``) with ``$NAME`` taken from the worker's
    environment, as upstream's; an unknown name is an error naming the variable."""
    job = WriteTextJob("env")
    job.set_env("PLAIN", "$HOME/cache")
    job.set_env("EXPANDED", "${HOME}/cache", verbatim=False)
    assert job._sis_environment_values({"HOME": "/h"}) == {"PLAIN": "$HOME/cache", "EXPANDED": "/h/cache"}
    job.set_env("MISSING", "$NOT_SET_ANYWHERE", verbatim=False)
    with pytest.raises(ValueError, match="MISSING"):
        job._sis_environment_values({"HOME": "/h"})
