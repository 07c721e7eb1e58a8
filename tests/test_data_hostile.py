"""Hostile corpus data: truncated audio, ids that collide, inject lines or lead out of folders, parquet cells
that point at local files. Each is refused with an error that names it; nothing is written outside the job."""
import ast
import gzip
import io
import json
import os
import zipfile

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from sisyphus import tk

from llmasr.data.audio import AudioError, check_audio_file, load_audio
from llmasr.data.corpus import CorpusEntry, write_corpus
from llmasr.data.librispeech import LibriSpeechCorpusJob
from llmasr.data.loquacious import LoquaciousCorpusJob, LoquaciousSubset
from llmasr.data.returnn_data import PackOggZipJob
from llmasr.text.extract import CorpusToTextJob
from tests.test_data_hf import AUDIO_TYPE, encode, write_parquet
from tests.test_data_librispeech import make_librispeech


def _noise(seconds, seed=0, sr=16000):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype("float32")


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


# 8. audio shorter than its header says ---------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_wav_is_refused(tmp_path, fraction):
    buf = io.BytesIO()
    sf.write(buf, _noise(1.0), 16000, format="WAV")
    data = buf.getvalue()
    cut = data[: int(len(data) * fraction)]
    path = _write(tmp_path / "cut.wav", cut)
    with pytest.raises(AudioError, match="cut.wav is truncated"):
        load_audio(path)
    with pytest.raises(AudioError, match="truncated"):
        load_audio(cut)
    assert len(load_audio(_write(tmp_path / "whole.wav", data))) == 16000


def test_truncated_ogg_is_refused(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, _noise(10.0), 16000, format="OGG", subtype="VORBIS")
    data = buf.getvalue()
    pages = [i for i in range(len(data)) if data.startswith(b"OggS", i)]
    assert len(pages) > 4
    for cut in (data[: int(len(data) * 0.95)], data[: pages[-1]]):  # mid-page, and at a page boundary
        path = _write(tmp_path / "cut.ogg", cut)
        with pytest.raises(AudioError, match="truncated"):
            check_audio_file(path)
    assert abs(check_audio_file(_write(tmp_path / "whole.ogg", data)) - 10.0) < 0.05


def test_corpus_job_refuses_a_truncated_wav_naming_the_utterance(tmp_path, run_job):
    whole = encode(1.0)
    write_parquet(str(tmp_path / "loq" / "dev" / "dev-00000-of-00001.parquet"), {
        "ID": ["commonvoice_a1", "commonvoice_a2"], "duration": [1.0, 1.0],
        "wav": pa.array([{"bytes": whole, "path": None}, {"bytes": whole[: len(whole) // 2], "path": None}], AUDIO_TYPE),
        "spk_id": ["s1", "s2"], "text": ["ONE", "TWO"],
    })
    job = LoquaciousCorpusJob(LoquaciousSubset.DEV, local_dir=tk.Path(str(tmp_path / "loq")), cpu=1)
    with pytest.raises(AudioError, match="'commonvoice_a2' is truncated"):
        run_job(job)
    assert not job._sis_finished()


# 9. one zip member per utterance -------------------------------------------------------------------------------
def test_ogg_zip_gives_ids_that_look_alike_their_own_members(tmp_path, run_job):
    entries = []
    for i, utt_id in enumerate(["a/b", "a_b", "a%2Fb"]):
        path = str(tmp_path / f"u{i}.flac")
        sf.write(path, _noise(0.2 + 0.1 * i, seed=i), 16000)
        entries.append(CorpusEntry(id=utt_id, audio=path, duration=0.2, speaker="s", text=f"TEXT {i}"))
    corpus = str(tmp_path / "corpus.jsonl.gz")
    write_corpus(entries, corpus)
    job = run_job(PackOggZipJob(tk.Path(corpus)))
    with zipfile.ZipFile(job.out_ogg_zip.get_path()) as zf:
        names = zf.namelist()
        assert len(names) == len(set(names)) == 4
        listing = ast.literal_eval(zf.read("data.txt").decode())
        assert len({d["file"] for d in listing}) == 3
        for d, e in zip(listing, entries):
            assert d["seq_name"] == e.id
            with open(e.audio, "rb") as f:
                assert zf.read(f"data/{d['file']}") == f.read()  # each utterance keeps its own audio


# 10. ids that would inject lines ----------------------------------------------------------------------------------
def _hand_made_manifest(path, ids):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, utt_id in enumerate(ids):
            f.write(json.dumps({"id": utt_id, "audio": "/none.flac", "duration": 1.0, "speaker": "s",
                                "text": f"TEXT {i}"}) + "\n")
    return tk.Path(str(path))


def test_newline_in_an_id_is_refused_where_the_corpus_is_read(tmp_path, run_job):
    corpus = _hand_made_manifest(tmp_path / "c.jsonl.gz", ["u1", "u2\nINJECTED LINE"])
    job = CorpusToTextJob([corpus], with_ids=True)
    with pytest.raises(ValueError, match=r"c\.jsonl\.gz:2: utterance id 'u2\\nINJECTED LINE'"):
        run_job(job)
    assert not job._sis_finished()
    with pytest.raises(ValueError, match="whitespace or control"):
        write_corpus([CorpusEntry(id="a\rb", audio="x", duration=1.0, speaker="s", text="T")], str(tmp_path / "o.gz"))


def test_corpus_job_refuses_a_newline_in_a_parquet_id(tmp_path, run_job):
    write_parquet(str(tmp_path / "loq" / "dev" / "dev-00000-of-00001.parquet"), {
        "ID": ["commonvoice_a1", "commonvoice_a2\ncommonvoice_x TEXT"], "duration": [0.5, 0.5],
        "wav": pa.array([{"bytes": encode(0.5), "path": None}] * 2, AUDIO_TYPE),
        "spk_id": ["s1", "s2"], "text": ["ONE", "TWO"],
    })
    with pytest.raises(ValueError, match="dev-00000-of-00001.parquet row 1: utterance id"):
        run_job(LoquaciousCorpusJob(LoquaciousSubset.DEV, local_dir=tk.Path(str(tmp_path / "loq")), cpu=1))


# 11. LibriSpeech ids that lead out of the folders ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_librispeech_id_leading_out_of_its_folder_is_refused(tmp_path, run_job, kind):
    root = make_librispeech(str(tmp_path / "ls"))
    chapter = os.path.join(root, "dev-fake", "19", "198")
    if kind == "relative":
        utt_id, victim = "../victim", os.path.join(root, "dev-fake", "19", "victim.flac")
    else:
        os.makedirs(tmp_path / "outside")
        utt_id = str(tmp_path / "outside" / "victim")
        victim = utt_id + ".flac"
    sf.write(victim, _noise(0.5, sr=8000), 8000)  # 8 kHz: the job would write a resampled copy
    with open(os.path.join(chapter, "19-198.trans.txt"), "a") as f:
        f.write(f"{utt_id} STOLEN WORDS\n")
    job = LibriSpeechCorpusJob(tk.Path(root), "dev-fake", cpu=1)
    with pytest.raises(ValueError, match="is not a file name in"):
        run_job(job)
    assert sf.info(victim).samplerate == 8000  # untouched
    for dirpath, _, files in os.walk(job._sis_path(abspath=True)):
        assert not [f for f in files if f.startswith("victim")], dirpath


# 12. parquet cells that point at local files ----------------------------------------------------------------------
@pytest.mark.parametrize("where", ["absolute", "relative-out", "inside"])
def test_parquet_audio_path_reads_only_inside_the_dataset(tmp_path, run_job, where):
    secret = _write(tmp_path / "secret.wav", encode(0.5, seed=7))
    dataset = tmp_path / "loq" / "dev"
    os.makedirs(dataset / "audio")
    _write(dataset / "audio" / "a2.wav", encode(0.5, seed=8))
    path = {"absolute": secret, "relative-out": "../../secret.wav", "inside": "audio/a2.wav"}[where]
    write_parquet(str(dataset / "dev-00000-of-00001.parquet"), {
        "ID": ["commonvoice_a1", "commonvoice_a2"], "duration": [0.5, 0.5],
        "wav": pa.array([{"bytes": encode(0.5), "path": None}, {"bytes": None, "path": path}], AUDIO_TYPE),
        "spk_id": ["s1", "s2"], "text": ["ONE", "TWO"],
    })
    job = LoquaciousCorpusJob(LoquaciousSubset.DEV, local_dir=tk.Path(str(tmp_path / "loq")), cpu=1)
    if where == "inside":
        run_job(job)
        assert job.out_num_utterances.get() == 2
        return
    with pytest.raises(ValueError, match="'commonvoice_a2'.*(only a path relative|leads out of)"):
        run_job(job)
    assert not job._sis_finished()


# minor ones --------------------------------------------------------------------------------------------------------
def test_zero_sample_flac_says_so(tmp_path):
    import shutil
    import subprocess

    if not shutil.which("sox"):
        pytest.skip("sox is not installed (it writes the header-only FLAC file)")
    path = str(tmp_path / "empty.flac")
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", path, "trim", "0", "0"], check=True)
    with pytest.raises(AudioError, match="empty.flac holds no samples"):
        load_audio(path)


def test_duplicate_parquet_ids_name_the_parquet_rows_and_leave_no_temp_manifest(tmp_path, run_job):
    write_parquet(str(tmp_path / "loq" / "dev" / "dev-00000-of-00001.parquet"), {
        "ID": ["commonvoice_a1", "commonvoice_a1"], "duration": [0.5, 0.5],
        "wav": pa.array([{"bytes": encode(0.5), "path": None}] * 2, AUDIO_TYPE),
        "spk_id": ["s1", "s2"], "text": ["ONE", "TWO"],
    })
    job = LoquaciousCorpusJob(LoquaciousSubset.DEV, local_dir=tk.Path(str(tmp_path / "loq")), cpu=1)
    with pytest.raises(ValueError, match=r"dev-00000-of-00001\.parquet row 1: duplicate utterance id 'commonvoice_a1' "
                                         r"\(first in .*row 0\)"):
        run_job(job)
    assert not [f for f in os.listdir(os.path.dirname(job.out_corpus.get_path())) if ".tmp" in f]
