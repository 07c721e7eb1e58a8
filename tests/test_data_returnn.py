"""PackOggZipJob / PackRawAudioHdfJob output loads with RETURNN's own OggZipDataset / HDFDataset."""
import ast
import os
import zipfile

import numpy as np
import pytest
import soundfile as sf

from sisyphus import tk

from llmasr.data.audio import AudioFormat
from llmasr.data.corpus import CorpusEntry, write_corpus
from llmasr.data.returnn_data import PackOggZipJob, PackRawAudioHdfJob


def make_corpus(tmp_path, n=3):
    rng = np.random.default_rng(1)
    entries, signals = [], {}
    for i in range(n):
        x = (0.2 * np.sin(np.arange(1600 * (i + 2)) * (0.05 + 0.02 * i))).astype("float32")
        x += 0.01 * rng.standard_normal(len(x)).astype("float32")
        path = str(tmp_path / f"u{i}.flac")
        sf.write(path, x, 16000)
        signals[f"spk-1-{i:04d}"] = sf.read(path, dtype="float32")[0]
        entries.append(CorpusEntry(id=f"spk-1-{i:04d}", audio=path, duration=len(x) / 16000, speaker="spk",
                                   text=f"UTTERANCE NUMBER {i} IT'S"))
    corpus = str(tmp_path / "corpus.jsonl.gz")
    write_corpus(entries, corpus)
    return tk.Path(corpus), entries, signals


def test_ogg_zip_loads_in_returnn(tmp_path, run_job):
    corpus, entries, signals = make_corpus(tmp_path)
    job = run_job(PackOggZipJob(corpus))
    path = job.out_ogg_zip.get_path()
    assert job.out_num_seqs.get() == 3
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["data.txt"] + [f"data/{e.id}.flac" for e in entries]
        listing = ast.literal_eval(zf.read("data.txt").decode())
    assert listing[0] == {"file": "spk-1-0000.flac", "seq_name": "spk-1-0000", "text": "UTTERANCE NUMBER 0 IT'S",
                          "duration": entries[0].duration}

    from returnn.datasets.audio import OggZipDataset

    ds = OggZipDataset(path=path, audio={"features": "raw", "sample_rate": 16000, "peak_normalization": False}, targets=None)
    ds.initialize()
    ds.init_seq_order(epoch=1)
    for i in range(3):
        ds.load_seqs(i, i + 1)
        tag = ds.get_tag(i)
        data = ds.get_data(i, "data")
        assert data.shape[0] == len(signals[tag])
        np.testing.assert_allclose(data[:, 0], signals[tag], atol=1e-4)
        orth = ds.get_data(i, "orth")
        assert bytes(orth.astype("uint8")).decode() == f"UTTERANCE NUMBER {int(tag[-4:])} IT'S"
    assert not ds.is_less_than_num_seqs(3)


def test_ogg_zip_reencode_and_errors(tmp_path, run_job):
    corpus, entries, _ = make_corpus(tmp_path)
    job = run_job(PackOggZipJob(corpus, audio_format=AudioFormat.OGG, name="dev"))
    with zipfile.ZipFile(job.out_ogg_zip.get_path()) as zf:
        assert "dev.txt" in zf.namelist() and "dev/spk-1-0001.ogg" in zf.namelist()
    os.unlink(entries[1].audio)
    job = PackOggZipJob(corpus, name="broken")
    with pytest.raises(FileNotFoundError, match=r"u1.flac of utterance 'spk-1-0001' is missing"):
        run_job(job)
    assert not job._sis_finished() and not os.path.exists(job.out_ogg_zip.get_path())


def test_raw_audio_hdf(tmp_path, run_job):
    corpus, entries, signals = make_corpus(tmp_path, n=2)
    job = run_job(PackRawAudioHdfJob(corpus))
    from returnn.datasets.hdf import HDFDataset

    ds = HDFDataset(files=[job.out_hdf.get_path()])
    ds.initialize()
    ds.init_seq_order(epoch=1)
    ds.load_seqs(0, 2)
    for i in range(2):
        tag = ds.get_tag(i)
        np.testing.assert_allclose(ds.get_data(i, "data")[:, 0], signals[tag], atol=1e-6)
        assert bytes(ds.get_data(i, "orth").astype("uint8")).decode().startswith("UTTERANCE NUMBER")
