"""CTC log-probs on disk: written one utterance at a time to a RETURNN HDF, read back lazily (sequentially or by
utterance), and the torch files of earlier dumps still read."""
import os

import numpy as np
import pytest
import torch

from llmasr.search.ctc_logprobs import CtcLogProbsFile, CtcLogProbsWriter, read_ctc_logprobs


def _utterances(n=5, vocab=11):
    g = torch.Generator().manual_seed(0)
    return {f"utt/{i}": torch.randn(3 + 7 * i, vocab, generator=g).log_softmax(-1) for i in range(n)}


def test_hdf_round_trip_in_order_and_by_id(tmp_path):
    utts = _utterances()
    path = str(tmp_path / "ctc.hdf")
    with CtcLogProbsWriter(path) as w:
        for k, v in utts.items():
            w.add(k, v)
    assert not os.path.exists(path + ".tmp")
    got = list(read_ctc_logprobs(path))
    assert [k for k, _ in got] == list(utts)
    for k, v in got:
        assert torch.equal(v, utts[k])
    f = CtcLogProbsFile(path)
    assert len(f) == 5 and "utt/3" in f and "utt/9" not in f
    assert torch.equal(f["utt/3"], utts["utt/3"])  # random access
    f.close()


def test_hdf_is_a_returnn_hdf(tmp_path):
    h5py = pytest.importorskip("h5py")
    utts = _utterances(3)
    path = str(tmp_path / "ctc.hdf")
    with CtcLogProbsWriter(path) as w:
        for k, v in utts.items():
            w.add(k, v)
    with h5py.File(path, "r") as f:
        assert f.attrs["numSeqs"] == 3 and f.attrs["inputPattSize"] == 11
        assert f.attrs["numTimesteps"] == sum(v.shape[0] for v in utts.values())
        assert f["seqLengths"][...][:, 0].tolist() == [v.shape[0] for v in utts.values()]
        assert f["inputs"].chunks == (64, 11)  # chunked: an utterance is read without the rest of the set


def test_a_failed_dump_leaves_no_finished_file_and_bad_shapes_are_named(tmp_path):
    path = str(tmp_path / "ctc.hdf")
    with pytest.raises(ValueError, match="utt/b has 7 CTC outputs"):
        with CtcLogProbsWriter(path) as w:
            w.add("utt/a", np.zeros((4, 5), dtype="float32"))
            w.add("utt/b", np.zeros((4, 7), dtype="float32"))
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match=r"must be \[T, V\]"):
        CtcLogProbsWriter(str(tmp_path / "x.hdf")).add("u", np.zeros(3))


def test_torch_files_of_earlier_dumps_are_read(tmp_path):
    utts = _utterances(2)
    torch.save(utts, tmp_path / "ctc.pt")
    got = dict(read_ctc_logprobs(str(tmp_path / "ctc.pt")))
    assert all(torch.equal(got[k], v) for k, v in utts.items())
    with pytest.raises(FileNotFoundError, match="nope"):
        CtcLogProbsFile(str(tmp_path / "nope.hdf"))
