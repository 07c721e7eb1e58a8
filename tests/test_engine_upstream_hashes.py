"""Hashes of delayed operations and paths equal upstream Sisyphus' (vectors computed with upstream).

``tests/data/upstream_hash_vectors.json`` maps a Python expression to upstream's
``short_hash(sis_hash_helper(value))``: equal strings mean equal encodings, so jobs taking these values as
arguments get the same ids under both engines.
"""
import json
import os

import pytest

from sisyphus import Job, Task, tk
from sisyphus.delayed_ops import (DelayedAdd, DelayedFormat, DelayedFunctionV2, DelayedJoin, DelayedRound,
                                  DelayedSlice, DelayedTrueDiv)
from sisyphus.hash import sis_hash_helper, short_hash
from tests.engine_jobs import ConcatJob, WriteTextJob

VECTORS_FILE = os.path.join(os.path.dirname(__file__), "data", "upstream_hash_vectors.json")
with open(VECTORS_FILE, encoding="utf-8") as _f:
    VECTORS = json.load(_f)
NAMESPACE = {"tk": tk, "DelayedFormat": DelayedFormat, "DelayedJoin": DelayedJoin, "DelayedAdd": DelayedAdd}


def test_the_vector_file_is_complete():
    assert len(VECTORS) == 23


@pytest.mark.parametrize("expression", sorted(VECTORS))
def test_hash_equals_upstream(expression):
    value = eval(expression, dict(NAMESPACE))  # noqa: S307 - expressions from the checked-in vector file
    assert short_hash(sis_hash_helper(value)) == VECTORS[expression]


def test_all_vectors_equal_at_once():
    got = {e: short_hash(sis_hash_helper(eval(e, dict(NAMESPACE)))) for e in VECTORS}  # noqa: S307
    assert sum(got[e] == h for e, h in VECTORS.items()) == len(VECTORS)


def test_upstream_class_and_field_names():
    v = tk.Variable("out.txt")
    assert type(v / 2) is DelayedTrueDiv
    assert type(round(v)) is DelayedRound
    assert set(vars(DelayedFormat("{}", v))) == {"string", "args", "kwargs"}
    assert set(vars(v.function(len))) == {"string", "func", "args", "kwargs"}
    assert set(vars(DelayedJoin([v], ","))) == {"iterable", "separator"}
    assert sis_hash_helper(tk.Delayed(5)) == sis_hash_helper(5)  # Delayed hashes as the value it wraps


def test_join_right_keeps_hash_overwrite_and_state():
    p = tk.Path("/opt/returnn", hash_overwrite="RETURNN_ROOT")
    q = p.join_right("tools")
    assert q.path == "/opt/returnn/tools" and q.hash_overwrite == (None, "RETURNN_ROOT/tools")
    assert p.hash_overwrite == (None, "RETURNN_ROOT")  # the original is unchanged
    job = WriteTextJob("x")
    r = job.out_file.join_right("sub")
    assert r.creator is job and r.get_path() == job.out_file.get_path() + "/sub"


def test_delayed_values_resolve(run_job):
    c = ConcatJob([WriteTextJob("abcde").out_file])
    n = c.out_length
    exprs = {
        "div": n / 2, "rdiv": 10 / n, "rfloordiv": 12 // n, "rpow": 2 ** n, "powmod": pow(n, 2, 7),
        "round": round(n / 3, 2), "format": tk.Delayed("n={}").format(n), "rformat": n.rformat("<{}>"),
        "function": n.function(str), "fallback": tk.Delayed(n).fallback(0), "join": DelayedJoin([n, "x"], "-"),
        "slice": DelayedSlice(tk.Delayed("abcdef"), 1, n), "call": tk.Delayed(max)(n, 7),
        "v2": DelayedFunctionV2(min, (n, 3), {}), "replace": tk.Delayed("a-b").replace("-", "+"),
    }
    assert exprs["fallback"].get() == 0  # not computed yet: the fallback
    assert not exprs["format"].is_set()
    run_job(c)
    got = {k: v.get() for k, v in exprs.items()}
    assert got == {"div": 2.5, "rdiv": 2.0, "rfloordiv": 2, "rpow": 32, "powmod": 4, "round": 1.67,
                   "format": "n=5", "rformat": "<5>", "function": "5", "fallback": 5, "join": "5-x",
                   "slice": "bcde", "call": 7, "v2": 3, "replace": "a+b"}
    assert str(n + 1) == "6" and exprs["format"].is_set()


class DelayedArgJob(Job):
    """Takes a delayed value as argument: its inputs must include the paths inside it."""

    def __init__(self, text):
        self.text = text
        self.out = self.output_path("out.txt")

    def tasks(self):
        yield Task("run")

    def run(self):
        with open(self.out.get_path(), "w") as f:
            f.write(self.text.get())


def test_delayed_argument_makes_a_dependency(run_job):
    a = WriteTextJob("hello")
    j = DelayedArgJob(DelayedFormat("file={}", a.out_file))
    assert any(p.creator is a for p in j._sis_inputs)
    run_job(j)
    with open(j.out.get_path()) as f:
        assert f.read() == f"file={a.out_file.get_path()}"


def test_unset_variable_raises_variable_not_set_and_is_no_path():
    v = tk.Variable("/nonexistent/value")
    with pytest.raises(tk.VariableNotSet):
        v.get()
    with pytest.raises(FileNotFoundError):  # also what this engine raised before
        v.get()
    assert not isinstance(v, tk.Path) and isinstance(v, tk.AbstractPath)
    assert not tk.is_path(v) and tk.is_path(tk.Path("/x"))
    assert tk.Variable("/nonexistent/value", backup=3).get() == 3
    c = ConcatJob([WriteTextJob("a").out_file])
    assert c.out_length.get() is None  # output_var's default backup is None, as upstream
