"""LibriSpeech: download the official OpenSLR tarballs, extract them, convert a subset to the corpus manifest.

Also the LibriSpeech LM text (``librispeech-lm-norm.txt.gz``, OpenSLR 11) as a gzipped one-sentence-per-line file.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import shutil
import tarfile
import urllib.request
from typing import Dict, List, Optional, Sequence

from sisyphus import Task, tk

from llmasr.data.audio import SampleRatePolicy, check_transcript, map_parallel, prepare_audio_file, task_workers
from llmasr.data.corpus import CorpusEntry, utterance_file_name, validate_utterance_id, write_corpus
from llmasr.data.corpus_job import ParallelCorpusJob
from llmasr.resources import ResourceJob

OPENSLR_12 = "https://www.openslr.org/resources/12"
LIBRISPEECH_SUBSETS = (
    "train-clean-100", "train-clean-360", "train-other-500",
    "dev-clean", "dev-other", "test-clean", "test-other",
)
LIBRISPEECH_URLS: Dict[str, str] = {s: f"{OPENSLR_12}/{s}.tar.gz" for s in LIBRISPEECH_SUBSETS}
LIBRISPEECH_LM_TEXT_URL = "https://www.openslr.org/resources/11/librispeech-lm-norm.txt.gz"


class DownloadJob(ResourceJob):
    """Downloads one file (e.g. an OpenSLR tarball) and optionally checks its MD5 sum."""

    def __init__(self, url: str, *, md5: Optional[str] = None, filename: Optional[str] = None):
        """
        :param url: http(s):// or file:// address
        :param md5: expected MD5 hex digest, or None to skip the check
        :param filename: output file name; default: the last part of the URL
        """
        self.url = url
        self.md5 = md5
        self.filename = filename
        self.out_file = self.output_path(filename or url.rstrip("/").split("/")[-1])
        self.rqmt = {"cpu": 1, "mem": 1, "time": 4}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        out = self.out_file.get_path()
        tmp = out + ".part"
        digest = hashlib.md5()
        logging.info("downloading %s", self.url)
        with urllib.request.urlopen(self.url) as response, open(tmp, "wb") as f:
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                digest.update(block)
                f.write(block)
        if self.md5 is not None and digest.hexdigest() != self.md5.lower():
            os.unlink(tmp)
            raise ValueError(f"download {self.url}: MD5 {digest.hexdigest()} differs from expected {self.md5}")
        os.replace(tmp, out)


def download_librispeech(subset: str) -> tk.Path:
    """The tarball of one LibriSpeech subset (``train-clean-100``, ``dev-other``, ...)."""
    if subset not in LIBRISPEECH_URLS:
        raise ValueError(f"unknown LibriSpeech subset {subset!r}; known: {', '.join(LIBRISPEECH_SUBSETS)}")
    return DownloadJob(LIBRISPEECH_URLS[subset]).out_file


class ExtractLibriSpeechJob(ResourceJob):
    """Extracts LibriSpeech tarballs into one folder: ``out_dir/LibriSpeech/<subset>/<spk>/<chapter>/``."""

    def __init__(self, tarballs: List[tk.Path]):
        """
        :param tarballs: OpenSLR 12 tarballs (each holds ``LibriSpeech/<subset>/...``)
        """
        self.tarballs = tarballs
        self.out_dir = self.output_path("extracted", directory=True)
        self.out_librispeech_dir = self.output_path("extracted/LibriSpeech", directory=True)
        self.rqmt = {"cpu": 1, "mem": 1, "time": 4}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        out = self.out_dir.get_path()
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for tarball in self.tarballs:
            path = tarball.get_path()
            try:
                with tarfile.open(path) as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise ValueError(f"tarball {path} cannot be extracted: {exc}") from exc
        if not os.path.isdir(os.path.join(tmp, "LibriSpeech")):
            raise ValueError(f"tarballs {[t.get_path() for t in self.tarballs]} hold no LibriSpeech/ folder")
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)


def read_librispeech_subset(subset_dir: str) -> List[CorpusEntry]:
    """Reads ``<subset_dir>/<spk>/<chapter>/*.trans.txt`` into entries (duration 0, audio unchecked).

    Errors name the file: non-UTF-8 or malformed transcriptions, duplicate ids, missing audio, audio
    without a transcription.
    """
    if not os.path.isdir(subset_dir):
        raise FileNotFoundError(f"LibriSpeech subset folder {subset_dir} does not exist")
    entries: List[CorpusEntry] = []
    seen: Dict[str, str] = {}
    trans_files = sorted(glob.glob(os.path.join(subset_dir, "*", "*", "*.trans.txt")))
    if not trans_files:
        raise ValueError(f"{subset_dir}: no <speaker>/<chapter>/*.trans.txt files")
    for trans in trans_files:
        chapter_dir = os.path.dirname(trans)
        speaker = os.path.basename(os.path.dirname(chapter_dir))
        with open(trans, "rb") as f:
            raw_lines = f.read().split(b"\n")
        ids_here = set()
        for lineno, raw in enumerate(raw_lines, 1):
            if not raw.strip():
                continue
            where = f"{trans}:{lineno}"
            line = check_transcript(raw, where=where)
            utt_id, _, text = line.partition(" ")
            validate_utterance_id(utt_id, where)
            if os.sep in utt_id or utt_id in (".", ".."):  # ids name files in the chapter folder
                raise ValueError(f"{where}: utterance id {utt_id!r} is not a file name in {chapter_dir}")
            text = check_transcript(text, where=f"{where} (utterance {utt_id})")
            if utt_id in seen:
                raise ValueError(f"{where}: duplicate utterance id {utt_id!r} (first in {seen[utt_id]})")
            seen[utt_id] = where
            audio = os.path.join(chapter_dir, utt_id + ".flac")
            if not os.path.isfile(audio):
                raise FileNotFoundError(f"{where}: audio file {audio} for utterance {utt_id!r} is missing")
            ids_here.add(utt_id)
            entries.append(CorpusEntry(id=utt_id, audio=os.path.abspath(audio), duration=0.0, speaker=speaker,
                                       text=text))
        for audio in glob.glob(os.path.join(chapter_dir, "*.flac")):
            utt_id = os.path.basename(audio)[: -len(".flac")]
            if utt_id not in ids_here:
                raise ValueError(f"{trans}: no transcription for audio file {audio}")
    return entries


class LibriSpeechCorpusJob(ParallelCorpusJob):
    """Converts one extracted LibriSpeech subset to the corpus manifest, checking every audio file."""

    def __init__(
        self,
        librispeech_dir: tk.Path,
        subset: str,
        *,
        sample_rate_policy: SampleRatePolicy = SampleRatePolicy.RESAMPLE,
        corpus_name: Optional[str] = None,
        cpu: int = 2,
    ):
        """
        :param librispeech_dir: folder holding ``<subset>/<spk>/<chapter>/`` (the tarballs' ``LibriSpeech/``)
        :param subset: subset folder name, e.g. ``dev-other``
        :param sample_rate_policy: files not at 16 kHz are resampled into ``out_audio_dir`` or rejected
        :param corpus_name: value of the entries' ``corpus`` field (default: the subset name)
        :param cpu: processes decoding audio for the checks
        """
        self.librispeech_dir = librispeech_dir
        self.subset = subset
        self.sample_rate_policy = sample_rate_policy
        self.corpus_name = corpus_name
        self.cpu = cpu
        self.out_corpus = self.output_path("corpus.jsonl.gz")
        self.out_audio_dir = self.output_path("audio", directory=True)  # resampled files only
        self.out_num_utterances = self.output_var("num_utterances")
        self.out_hours = self.output_var("hours")
        self.rqmt = {"cpu": cpu, "mem": 2, "time": 4}

    def run(self):
        subset_dir = os.path.join(self.librispeech_dir.get_path(), self.subset)
        entries = read_librispeech_subset(subset_dir)
        audio_dir = self.out_audio_dir.get_path()
        os.makedirs(audio_dir, exist_ok=True)
        jobs = [(e.audio, os.path.join(audio_dir, utterance_file_name(e.id, ".flac")), self.sample_rate_policy)
                for e in entries]
        results = map_parallel(prepare_audio_file, jobs, workers=task_workers(self.run_threads()))
        for e, (path, duration) in zip(entries, results):
            e.audio = os.path.abspath(path)
            e.duration = round(duration, 6)
            e.corpus = self.corpus_name or self.subset
        n = write_corpus(entries, self.out_corpus.get_path())
        self.out_num_utterances.set(n)
        self.out_hours.set(round(sum(e.duration for e in entries) / 3600, 4))
        logging.info("%s: %d utterances", subset_dir, n)


class LibriSpeechLmTextJob(ResourceJob):
    """Copies the LibriSpeech LM text (normalised sentences) to a checked gzipped file, one sentence a line."""

    def __init__(self, lm_text: tk.Path, *, max_sentences: Optional[int] = None):
        """
        :param lm_text: ``librispeech-lm-norm.txt.gz`` (or plain text)
        :param max_sentences: keep only the first N sentences (None: all)
        """
        self.lm_text = lm_text
        self.max_sentences = max_sentences
        self.out_text = self.output_path("lm_text.txt.gz")
        self.out_num_sentences = self.output_var("num_sentences")
        self.rqmt = {"cpu": 1, "mem": 1, "time": 2}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        src = self.lm_text.get_path()
        opener = gzip.open if src.endswith(".gz") else open
        out = self.out_text.get_path()
        n = 0
        with opener(src, "rb") as fin, gzip.open(out + ".tmp.gz", "wt", encoding="utf-8") as fout:
            for lineno, raw in enumerate(fin, 1):
                try:
                    line = " ".join(raw.decode("utf-8").split())
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{src}:{lineno}: not valid UTF-8: {exc}") from exc
                if not line:
                    continue
                fout.write(line + "\n")
                n += 1
                if self.max_sentences is not None and n >= self.max_sentences:
                    break
        if n == 0:
            raise ValueError(f"{src}: no sentences")
        os.replace(out + ".tmp.gz", out)
        self.out_num_sentences.set(n)


def librispeech_corpora(subsets: Sequence[str] = LIBRISPEECH_SUBSETS, *, cpu: int = 4) -> Dict[str, tk.Path]:
    """Graph helper: download, extract and convert each subset; returns ``{subset: out_corpus}``."""
    out = {}
    for subset in subsets:
        extract = ExtractLibriSpeechJob([download_librispeech(subset)])
        out[subset] = LibriSpeechCorpusJob(extract.out_librispeech_dir, subset, cpu=cpu).out_corpus
    return out


def librispeech_lm_text(*, max_sentences: Optional[int] = None) -> tk.Path:
    """Graph helper: the normalised LibriSpeech LM text (OpenSLR 11) as a gzipped file."""
    return LibriSpeechLmTextJob(DownloadJob(LIBRISPEECH_LM_TEXT_URL).out_file, max_sentences=max_sentences).out_text
