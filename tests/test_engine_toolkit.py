"""Upstream's console/toolkit helpers: remove_job_and_descendants, import_work_directory, compare_graph,
export_graph, dump/load_file, blocks."""
import os

from sisyphus import gs, tk
from sisyphus.block import Block
from sisyphus.graph import graph
from sisyphus.job import created_jobs
from tests.engine_jobs import ConcatJob, WriteTextJob


def _diamond():
    a = WriteTextJob("a")
    b = WriteTextJob("b")
    c = ConcatJob([a.out_file, b.out_file])
    d = ConcatJob([c.out_file])
    tk.register_output("d.txt", d.out_file)
    return a, b, c, d


def test_remove_job_and_descendants_removes_users_only(run_job, monkeypatch):
    a, b, c, d = _diamond()
    run_job(d)
    assert tk.remove_job_and_descendants(a, mode="dryrun") == [a, c, d]
    assert all(j._sis_finished() for j in (a, b, c, d))  # dryrun changes nothing
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert tk.remove_job_and_descendants(a) == []  # declined
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    removed = tk.remove_job_and_descendants([a.out_file])
    assert removed == [a, c, d]
    assert not any(os.path.exists(j._sis_path(abspath=True)) for j in (a, c, d))
    assert b._sis_finished()
    moved = tk.remove_job_and_descendants(b, mode="move", ask=False)
    assert moved == [b] and os.path.isdir(b._sis_path(abspath=True) + ".cleared.0001")


def test_import_work_directory_takes_finished_jobs_by_id(sis_setup_dir, run_job, monkeypatch):
    other_work = sis_setup_dir / "other" / "work"
    monkeypatch.setattr(gs, "WORK_DIR", str(other_work))
    a, b, c, d = _diamond()
    run_job(c)  # d is not computed in the other setup
    graph.clear()
    created_jobs.clear()
    monkeypatch.setattr(gs, "WORK_DIR", str(sis_setup_dir / "work"))
    a, b, c, d = _diamond()
    assert tk.import_work_directory(str(other_work), mode="dryrun") and not a._sis_setup()
    imported = tk.import_work_directory([str(other_work)], mode="symlink")
    assert sorted(i for i, _ in imported) == sorted(j.job_id() for j in (a, b, c))
    assert os.path.islink(c._sis_path(abspath=True)) and c._sis_finished() and not d._sis_setup()
    assert c.out_length.get() == 2
    run_job(d)
    assert d.out_length.get() == 2


def test_compare_graph_points_at_the_differing_argument():
    a = ConcatJob([WriteTextJob("x").out_file, WriteTextJob("same").out_file])
    b = ConcatJob([WriteTextJob("y").out_file, WriteTextJob("same").out_file])
    diffs = list(tk.compare_graph(a, b))
    assert len(diffs) == 1
    assert diffs[0][-1] == ("x", "y")
    assert list(tk.compare_graph(a, ConcatJob([WriteTextJob("x").out_file, WriteTextJob("same").out_file]))) == []


def test_export_graph_lists_every_job_with_its_way_from_an_output(tmp_path):
    a, b, c, d = _diamond()
    out = tmp_path / "graph.txt"
    lines = tk.export_graph(str(out))
    assert {job_id for job_id, _ in lines} == {j.job_id() for j in (a, b, c, d)}
    assert dict(lines)[a.job_id()] == ["d.txt", "creator", "inputs", 0, "creator", "inputs", 0, "creator"]
    assert out.read_text().splitlines()[0] == f"{d.job_id()} ['d.txt', 'creator']"


def test_dump_and_load_file_round_trip(tmp_path):
    value = {"x": [1, 2.5, "three"], "path": tk.Path("/data/x")}
    tk.dump(value, str(tmp_path / "sub" / "obj.pkl.gz"))
    assert tk.load_file(str(tmp_path / "sub" / "obj.pkl.gz")) == value
    import pickle

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps([1, 2]))
    assert tk.load_file(str(tmp_path / "plain.pkl")) == [1, 2]  # unzipped pickles too


def test_blocks_group_jobs_and_change_no_ids(monkeypatch):
    import sisyphus.block as block_module

    monkeypatch.setattr(block_module, "active_blocks", set())  # restored after the test
    monkeypatch.setattr(block_module, "all_root_blocks", [])
    plain_id = WriteTextJob("outside").job_id()
    root = block_module.set_root_block("exp")
    with tk.block("data") as data_block:
        a = WriteTextJob("inside")
        sub = tk.sub_block("empty")
    assert isinstance(data_block, Block) and data_block.jobs() == [a] and sub in data_block.get_sub_blocks()
    assert root.get_sub_blocks() == [data_block]

    @tk.block(cache=True)
    def make(text):
        return WriteTextJob(text)

    assert make("z") is make("z")
    assert WriteTextJob("outside").job_id() == plain_id


class _StateHolder:
    """An input object whose ``__sis_state__`` builds a new dict at every call (as the config dataclasses do)."""

    def __init__(self, path):
        self.path = path

    def __sis_state__(self):
        return {"path": self.path}


def test_paths_inside_fresh_sis_states_are_all_found():
    """Every path behind a ``__sis_state__`` is found, however the temporary state dicts' ids are reused."""
    from sisyphus.tools import extract_paths

    paths = [tk.Path(f"/in/{i}.txt") for i in range(200)]
    found = extract_paths({"holders": [_StateHolder(p) for p in paths]})
    assert {p.get_path() for p in found} == {p.get_path() for p in paths}
