"""LibriSpeech jobs on a fake OpenSLR tarball: download (file://), extract, manifest, LM text, bad input."""
import gzip
import hashlib
import os
import tarfile

import numpy as np
import pytest
import soundfile as sf

from sisyphus import tk

from llmasr.data.audio import SampleRatePolicy
from llmasr.data.corpus import read_corpus
from llmasr.data.librispeech import (
    LIBRISPEECH_URLS,
    DownloadJob,
    ExtractLibriSpeechJob,
    LibriSpeechCorpusJob,
    LibriSpeechLmTextJob,
)

UTTS = {  # id -> (seconds, text)
    "19-198-0000": (0.5, "NORTHANGER ABBEY"),
    "19-198-0001": (1.25, "THIS LITTLE WORK WAS FINISHED IN THE YEAR EIGHTEEN O THREE"),
    "19-227-0000": (0.75, "CHAPTER ONE"),
    "26-495-0000": (1.0, "IT WAS A BRIGHT COLD DAY IN APRIL"),
}


def make_librispeech(root, subset="dev-fake", utts=UTTS, sr=16000):
    """Writes LibriSpeech/<subset>/<spk>/<chapter>/ with FLAC files and trans.txt files."""
    chapters = {}
    rng = np.random.default_rng(0)
    for utt_id, (sec, text) in utts.items():
        spk, chapter, _ = utt_id.split("-")
        d = os.path.join(root, "LibriSpeech", subset, spk, chapter)
        os.makedirs(d, exist_ok=True)
        sf.write(os.path.join(d, utt_id + ".flac"), (0.1 * rng.standard_normal(int(sec * sr))).astype("float32"), sr)
        chapters.setdefault((d, spk, chapter), []).append(f"{utt_id} {text}")
    for (d, spk, chapter), lines in chapters.items():
        with open(os.path.join(d, f"{spk}-{chapter}.trans.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return os.path.join(root, "LibriSpeech")


def make_tarball(tmp_path, **kwargs):
    src = tmp_path / "src"
    make_librispeech(str(src), **kwargs)
    tarball = tmp_path / "dev-fake.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src / "LibriSpeech", arcname="LibriSpeech")
    return tarball


def test_urls_are_official():
    assert LIBRISPEECH_URLS["train-clean-100"] == "https://www.openslr.org/resources/12/train-clean-100.tar.gz"


def test_download_extract_and_manifest(tmp_path, run_job):
    tarball = make_tarball(tmp_path)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    download = DownloadJob(f"file://{tarball}", md5=md5)
    extract = ExtractLibriSpeechJob([download.out_file])
    corpus = LibriSpeechCorpusJob(extract.out_librispeech_dir, "dev-fake")
    run_job(corpus)
    assert download.out_file.get_path().endswith("dev-fake.tar.gz")
    entries = read_corpus(corpus.out_corpus.get_path())
    assert [e.id for e in entries] == sorted(UTTS)
    for e in entries:
        sec, text = UTTS[e.id]
        assert e.text == text and e.duration == pytest.approx(sec)
        assert e.speaker == e.id.split("-")[0] and e.corpus == "dev-fake"
        assert os.path.isfile(e.audio) and e.audio.startswith(extract.out_librispeech_dir.get_path())
    assert corpus.out_num_utterances.get() == 4
    assert corpus.out_hours.get() == pytest.approx(3.5 / 3600, abs=1e-4)


def test_download_md5_mismatch(tmp_path, run_job):
    f = tmp_path / "x.txt"
    f.write_text("abc")
    job = DownloadJob(f"file://{f}", md5="0" * 32)
    with pytest.raises(ValueError, match="MD5"):
        run_job(job)
    assert not job._sis_finished()


def test_extract_corrupt_tarball(tmp_path, run_job):
    tarball = make_tarball(tmp_path)
    data = tarball.read_bytes()
    tarball.write_bytes(data[: len(data) // 2])
    job = ExtractLibriSpeechJob([tk.Path(str(tarball))])
    with pytest.raises(ValueError, match="dev-fake.tar.gz cannot be extracted"):
        run_job(job)
    assert not job._sis_finished()


def _corpus_job(tmp_path, **kwargs):
    root = make_librispeech(str(tmp_path / "ls"), **{k: v for k, v in kwargs.items() if k in ("utts", "sr")})
    return LibriSpeechCorpusJob(tk.Path(root), "dev-fake",
                                **{k: v for k, v in kwargs.items() if k not in ("utts", "sr")}), root


def test_wrong_sample_rate_resampled_or_rejected(tmp_path, run_job):
    job, _ = _corpus_job(tmp_path, sr=8000)
    run_job(job)
    entries = read_corpus(job.out_corpus.get_path())
    for e in entries:
        assert e.audio.startswith(job.out_audio_dir.get_path())
        assert sf.info(e.audio).samplerate == 16000
        assert e.duration == pytest.approx(UTTS[e.id][0], abs=1e-3)
    job, _ = _corpus_job(tmp_path / "b", sr=8000, sample_rate_policy=SampleRatePolicy.REJECT)
    with pytest.raises(ValueError, match=r"19-198-0000.flac has sample rate 8000 Hz"):
        run_job(job)
    assert not job._sis_finished()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", r"19-198-0001.flac is unreadable"),
        ("missing", r"audio file .*19-198-0001.flac for utterance '19-198-0001' is missing"),
        ("extra_audio", r"no transcription for audio file .*19-198-0009.flac"),
        ("empty_text", r"198.trans.txt:2 \(utterance 19-198-0001\): empty transcription"),
        ("latin1", r"198.trans.txt:1: transcription is not valid UTF-8"),
        ("duplicate", r"duplicate utterance id '19-198-0000'"),
    ],
)
def test_bad_input_names_the_file(tmp_path, run_job, damage, message):
    job, root = _corpus_job(tmp_path)
    chapter = os.path.join(root, "dev-fake", "19", "198")
    trans = os.path.join(chapter, "19-198.trans.txt")
    flac = os.path.join(chapter, "19-198-0001.flac")
    if damage == "truncate":
        data = open(flac, "rb").read()
        open(flac, "wb").write(data[: len(data) // 2])
    elif damage == "missing":
        os.unlink(flac)
    elif damage == "extra_audio":
        sf.write(os.path.join(chapter, "19-198-0009.flac"), np.zeros(1600, dtype="float32"), 16000)
    elif damage == "empty_text":
        open(trans, "w").write("19-198-0000 NORTHANGER ABBEY\n19-198-0001 \n")
    elif damage == "latin1":
        open(trans, "wb").write("19-198-0000 CAF\u00c9\n19-198-0001 X\n".encode("latin-1"))
    elif damage == "duplicate":
        with open(os.path.join(root, "dev-fake", "19", "227", "19-227.trans.txt"), "a") as f:
            f.write("19-198-0000 AGAIN\n")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_job(job)
    assert not job._sis_finished()
    assert not os.path.exists(job.out_corpus.get_path())


def test_lm_text_job(tmp_path, run_job):
    src = tmp_path / "librispeech-lm-norm.txt.gz"
    with gzip.open(src, "wt") as f:
        f.write("A  FIRST SENTENCE\n\nTHE SECOND ONE\nTHIRD\n")
    job = run_job(LibriSpeechLmTextJob(tk.Path(str(src)), max_sentences=2))
    with gzip.open(job.out_text.get_path(), "rt") as f:
        assert f.read() == "A FIRST SENTENCE\nTHE SECOND ONE\n"
    assert job.out_num_sentences.get() == 2
    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"OK\n\xff\xfe\n")
    job = LibriSpeechLmTextJob(tk.Path(str(bad)))
    with pytest.raises(ValueError, match=r"bad.txt.gz:2: not valid UTF-8"):
        run_job(job)


def test_graph_helpers_build_without_running():
    from llmasr.data.librispeech import librispeech_corpora, librispeech_lm_text
    from llmasr.data.loquacious import LoquaciousSubset, loquacious_corpora

    corpora = librispeech_corpora(["train-clean-100", "dev-other"])
    assert set(corpora) == {"train-clean-100", "dev-other"}
    job = corpora["dev-other"].creator
    assert isinstance(job, LibriSpeechCorpusJob) and job.subset == "dev-other"
    download = job.librispeech_dir.creator.tarballs[0].creator
    assert download.url == "https://www.openslr.org/resources/12/dev-other.tar.gz"
    assert librispeech_lm_text().creator.lm_text.creator.url.endswith("/11/librispeech-lm-norm.txt.gz")
    loq = loquacious_corpora(LoquaciousSubset.MEDIUM, eval_sources=["commonvoice", "voxpopuli"])
    assert set(loq) == {"train", "dev", "test", "dev/commonvoice", "dev/voxpopuli", "test/commonvoice",
                        "test/voxpopuli"}
    assert loq["train"].creator.subset is LoquaciousSubset.MEDIUM
