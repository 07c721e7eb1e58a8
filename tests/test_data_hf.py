"""Loquacious and Open ASR Leaderboard jobs on tiny parquet datasets written here with pyarrow."""
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sisyphus import tk

from llmasr.data.audio import AudioFormat, SampleRatePolicy
from llmasr.data.corpus import read_corpus
from llmasr.data.loquacious import LoquaciousCorpusJob, LoquaciousSubset, SplitCorpusBySourceJob
from llmasr.data.open_asr import OPEN_ASR_TEST_SETS, OpenAsrTestSetJob

AUDIO_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def encode(seconds, sr=16000, fmt="WAV", seed=0):
    buf = io.BytesIO()
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr)).astype("float32")
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


def write_parquet(path, columns):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path)


LOQ_DEV = [  # ID, seconds, spk, text
    ("commonvoice_a1", 0.5, "s1", "HELLO WORLD"),
    ("voxpopuli_b1", 1.0, "s2", "the european parliament"),
    ("commonvoice_a2", 0.75, "s3", "GOOD MORNING"),
    ("yodas_c1", 0.25, "s4", "YES"),
]


def make_loquacious(root, rows=LOQ_DEV, folder="dev", sr=16000):
    half = len(rows) // 2
    for i, part in enumerate((rows[:half], rows[half:])):
        write_parquet(os.path.join(root, folder, f"{folder}-0000{i}-of-00002.parquet"), {
            "ID": [r[0] for r in part],
            "duration": [r[1] for r in part],
            "wav": pa.array([{"bytes": encode(r[1], sr=sr), "path": r[0] + ".wav"} for r in part], AUDIO_TYPE),
            "spk_id": [r[2] for r in part],
            "text": [r[3] for r in part],
        })
    return tk.Path(root)


def test_loquacious_dev_and_split_by_source(tmp_path, run_job):
    local = make_loquacious(str(tmp_path / "loq"))
    job = LoquaciousCorpusJob(LoquaciousSubset.DEV, local_dir=local, cpu=2)  # process pool
    split = SplitCorpusBySourceJob(job.out_corpus, ["commonvoice", "voxpopuli", "yodas"])
    run_job(split)
    entries = read_corpus(job.out_corpus.get_path())
    assert [(e.id, e.speaker, e.text, e.corpus) for e in entries] == [
        (r[0], r[2], r[3], r[0].split("_")[0]) for r in LOQ_DEV]
    for e, r in zip(entries, LOQ_DEV):
        assert e.duration == pytest.approx(r[1])
        info = sf.info(e.audio)
        assert info.samplerate == 16000 and info.format == "FLAC" and info.frames == int(r[1] * 16000)
    assert job.out_num_utterances.get() == 4
    parts = {s: [e.id for e in read_corpus(p.get_path())] for s, p in split.out_corpora.items()}
    assert parts == {"commonvoice": ["commonvoice_a1", "commonvoice_a2"], "voxpopuli": ["voxpopuli_b1"],
                     "yodas": ["yodas_c1"]}
    wrong = SplitCorpusBySourceJob(job.out_corpus, ["commonvoice", "voxpopuli"])
    with pytest.raises(ValueError, match="'yodas_c1' has source 'yodas'"):
        run_job(wrong)


def test_loquacious_train_subset_ogg_resample_normalise(tmp_path, run_job):
    rows = [("librispeech_x", 0.5, "s1", "It's 2 o'clock."), ("peoples_y", 0.5, "s2", "fine, thanks")]
    local = make_loquacious(str(tmp_path / "loq"), rows=rows, folder="small", sr=22050)
    job = run_job(LoquaciousCorpusJob(LoquaciousSubset.SMALL, local_dir=local, audio_format=AudioFormat.OGG,
                                      normalize_text=True, cpu=1))
    entries = read_corpus(job.out_corpus.get_path())
    assert [e.text for e in entries] == ["IT'S TWO O'CLOCK", "FINE THANKS"]
    assert all(e.audio.endswith(".ogg") and sf.info(e.audio).samplerate == 16000 for e in entries)
    assert [e.duration for e in entries] == [pytest.approx(0.5, abs=2e-3)] * 2
    reject = LoquaciousCorpusJob(LoquaciousSubset.SMALL, local_dir=local, sample_rate_policy=SampleRatePolicy.REJECT,
                                 cpu=1)
    with pytest.raises(ValueError, match="utterance 'librispeech_x'.* has sample rate 22050 Hz"):
        run_job(reject)
    assert not reject._sis_finished()


@pytest.mark.parametrize("damage, message", [
    ("corrupt_audio", r"small-00000-of-00002.parquet utterance 'a_1'.* is unreadable"),
    ("empty_text", r"small-00001-of-00002.parquet utterance 'a_2': empty transcription"),
    ("bad_utf8", r"utterance 'a_1': transcription is not valid UTF-8"),
    ("duplicate", r"duplicate utterance id 'a_1'"),
    ("missing_column", r"lacks columns \['spk_id'\]"),
])
def test_loquacious_bad_input(tmp_path, run_job, damage, message):
    root = str(tmp_path / "loq")
    ids = ["a_1", "a_2" if damage != "duplicate" else "a_1"]
    cols = {
        "ID": ids,
        "duration": [0.5, 0.5],
        "wav": pa.array([{"bytes": encode(0.5) if damage != "corrupt_audio" else b"RIFF....junk", "path": None},
                         {"bytes": encode(0.5), "path": None}], AUDIO_TYPE),
        "spk_id": ["s", "s"],
        "text": ["ONE", "" if damage == "empty_text" else "TWO"],
    }
    if damage == "bad_utf8":
        cols["text"] = pa.array([b"\xff\xfeX", b"TWO"], pa.binary())
    if damage == "missing_column":
        del cols["spk_id"]
    for i in range(2):
        write_parquet(os.path.join(root, "small", f"small-0000{i}-of-00002.parquet"),
                      {k: v[i:i + 1] for k, v in cols.items()})
    job = LoquaciousCorpusJob(LoquaciousSubset.SMALL, local_dir=tk.Path(root), cpu=1)
    with pytest.raises(ValueError, match=message):
        run_job(job)
    assert not job._sis_finished()


def make_open_asr(root):
    """librispeech test.other with 4 rows (one to drop) + test.clean, as on the hub: <config>/<split>-*.parquet."""
    rows = [("1089-1", 0.5, "HE HOPED THERE WOULD BE STEW"), ("1089-2", 1.5, "Mr. Smith's 2 cats"),
            ("1089-3", 1.0, "ignore time segment in scoring"), ("1089-4", 0.75, "uh")]
    write_parquet(os.path.join(root, "librispeech", "test.other-00000-of-00001.parquet"), {
        "dataset": ["librispeech"] * len(rows),
        "audio": pa.array([{"bytes": encode(r[1], fmt="FLAC", seed=i), "path": None} for i, r in enumerate(rows)],
                          AUDIO_TYPE),
        "text": [r[2] for r in rows],
        "id": [r[0] for r in rows],
    })
    write_parquet(os.path.join(root, "librispeech", "test.clean-00000-of-00001.parquet"), {
        "dataset": ["librispeech"], "audio": pa.array([{"bytes": encode(0.3), "path": None}], AUDIO_TYPE),
        "text": ["CLEAN"], "id": ["c-1"]})
    return tk.Path(root)


def test_open_asr_test_set(tmp_path, run_job):
    local = make_open_asr(str(tmp_path / "esb"))
    job = run_job(OpenAsrTestSetJob("librispeech_test_other", local_dir=local, cpu=1))
    entries = read_corpus(job.out_corpus.get_path())
    # dropped: the tedlium-style ignore marker and a reference that normalises to nothing; longest first
    assert [(e.id, e.text) for e in entries] == [("1089-2", "Mr. Smith's 2 cats"),
                                                 ("1089-1", "HE HOPED THERE WOULD BE STEW")]
    assert [e.duration for e in entries] == [pytest.approx(1.5), pytest.approx(0.5)]
    assert all(e.corpus == "librispeech_test_other" for e in entries)
    assert job.out_num_dropped.get() == 2
    clean = run_job(OpenAsrTestSetJob("librispeech_test_clean", local_dir=local, cpu=1))
    assert [e.id for e in read_corpus(clean.out_corpus.get_path())] == ["c-1"]


def test_open_asr_names():
    assert set(OPEN_ASR_TEST_SETS) == {"ami", "earnings22", "gigaspeech", "librispeech_test_clean",
                                       "librispeech_test_other", "spgispeech", "tedlium", "voxpopuli"}
    with pytest.raises(ValueError, match="unknown Open ASR test set 'chime'"):
        OpenAsrTestSetJob("chime")


def test_hub_code_path_with_datasets_streaming(tmp_path, run_job, monkeypatch):
    """The hub branch (datasets streaming, audio left undecoded), fed from local parquet instead of the hub."""
    import datasets

    root = str(tmp_path / "loq")
    make_loquacious(root)
    real_load = datasets.load_dataset
    calls = []

    def fake_load(name, config=None, split=None, streaming=False, **kwargs):
        calls.append((name, config, split, streaming))
        files = sorted(os.path.join(root, split, f) for f in os.listdir(os.path.join(root, split)))
        ds = real_load("parquet", data_files={split: files}, split=split, streaming=True)
        return ds.cast_column("wav", datasets.Audio())  # as on the hub: an Audio feature

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    job = run_job(LoquaciousCorpusJob(LoquaciousSubset.DEV, max_utterances=3, cpu=1))
    assert calls == [("speechbrain/LoquaciousSet", "small", "dev", True)]
    entries = read_corpus(job.out_corpus.get_path())
    assert [e.id for e in entries] == [r[0] for r in LOQ_DEV[:3]]
    assert [e.duration for e in entries] == [pytest.approx(r[1]) for r in LOQ_DEV[:3]]
