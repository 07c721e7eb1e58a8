"""The Loquacious Set (``speechbrain/LoquaciousSet``): train subsets small/medium/large/clean, dev and test.

The hub dataset is parquet with columns ``ID``, ``duration``, ``wav`` (encoded audio), ``spk_id``, ``text``.
:class:`LoquaciousCorpusJob` reads it from the hub or from a local copy (the repository's folders
``small/ medium/ large/ clean/ dev/ test/`` of parquet files), re-encodes audio to 16 kHz FLAC/OGG and writes
the manifest; the ``corpus`` field holds the source (taken from the utterance id), so that
:class:`SplitCorpusBySourceJob` can split dev/test into per-source sets.
"""
from __future__ import annotations

import enum
import logging
import os
import re
from typing import Dict, Optional, Sequence

from sisyphus import Task, tk

from llmasr.data.audio import AudioFormat, SampleRatePolicy, check_transcript, task_workers
from llmasr.data.corpus import CorpusEntry, iter_corpus, validate_utterance_id, write_corpus
from llmasr.data.corpus_job import ParallelCorpusJob
from llmasr.data.hf_audio import audio_file_name, audio_source, encode_all, iter_hub_rows, iter_local_rows, parquet_files
from llmasr.resources import ResourceJob
from llmasr.text.normalize import normalize_for_training

LOQUACIOUS_HUB_NAME = "speechbrain/LoquaciousSet"
COLUMNS = ["ID", "duration", "wav", "spk_id", "text"]


class LoquaciousSubset(enum.Enum):
    """Training subsets (hub configs) and the evaluation splits."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    CLEAN = "clean"
    DEV = "dev"
    TEST = "test"

    @property
    def is_eval(self) -> bool:
        return self in (LoquaciousSubset.DEV, LoquaciousSubset.TEST)


class LoquaciousCorpusJob(ParallelCorpusJob):
    """Converts one Loquacious subset (hub or local parquet) to 16 kHz audio files and the corpus manifest."""

    def __init__(
        self,
        subset: LoquaciousSubset,
        *,
        source: str = LOQUACIOUS_HUB_NAME,
        local_dir: Optional[tk.Path] = None,
        hub_config: Optional[str] = None,
        audio_format: AudioFormat = AudioFormat.FLAC,
        sample_rate_policy: SampleRatePolicy = SampleRatePolicy.RESAMPLE,
        normalize_text: bool = False,
        source_pattern: str = r"^([A-Za-z]+)",
        max_utterances: Optional[int] = None,
        cpu: int = 4,
    ):
        """
        :param subset: small/medium/large/clean (train) or dev/test
        :param source: hub dataset name (used when ``local_dir`` is None)
        :param local_dir: local copy of the dataset repository (``<subset>/*.parquet``, ``dev/*.parquet``, ...)
        :param hub_config: hub config for dev/test (default: ``small``; dev/test are the same in every config)
        :param audio_format: FLAC (lossless) or OGG (Vorbis, smaller)
        :param sample_rate_policy: audio not at 16 kHz is resampled or rejected
        :param normalize_text: apply :func:`normalize_for_training` (LibriSpeech style) to the transcriptions
        :param source_pattern: regex whose first group, matched on the utterance id, names the source
            (stored in the entries' ``corpus`` field)
        :param max_utterances: stop after this many utterances (None: all)
        :param cpu: processes re-encoding audio
        """
        self.subset = subset
        self.source = source
        self.local_dir = local_dir
        self.hub_config = hub_config
        self.audio_format = audio_format
        self.sample_rate_policy = sample_rate_policy
        self.normalize_text = normalize_text
        self.source_pattern = source_pattern
        self.max_utterances = max_utterances
        self.cpu = cpu
        self.out_audio_dir = self.output_path("audio", directory=True)
        self.out_corpus = self.output_path("corpus.jsonl.gz")
        self.out_num_utterances = self.output_var("num_utterances")
        self.out_hours = self.output_var("hours")
        self.rqmt = {"cpu": cpu, "mem": 4, "time": 24}

    def _rows(self):
        if self.local_dir is not None:
            folder = self.subset.value
            files = parquet_files(self.local_dir.get_path(), folder, None)
            return iter_local_rows(files, COLUMNS)
        if self.subset.is_eval:
            return iter_hub_rows(self.source, self.hub_config or "small", self.subset.value, "wav")
        return iter_hub_rows(self.source, self.subset.value, "train", "wav")

    def run(self):
        audio_dir = self.out_audio_dir.get_path()
        os.makedirs(audio_dir, exist_ok=True)
        pattern = re.compile(self.source_pattern)

        def items():
            seen: Dict[str, str] = {}
            for i, row in enumerate(self._rows()):
                if self.max_utterances is not None and i >= self.max_utterances:
                    return
                where = row["_file"]
                utt_id = validate_utterance_id(row["ID"], f"{where} row {i}")
                if utt_id in seen:
                    raise ValueError(f"{where} row {i}: duplicate utterance id {utt_id!r} (first in {seen[utt_id]})")
                seen[utt_id] = f"{where} row {i}"
                text = check_transcript(row["text"], where=f"{where} utterance {utt_id!r}")
                if self.normalize_text:
                    text = check_transcript(normalize_for_training(text), where=f"{where} utterance {utt_id!r}")
                m = pattern.match(utt_id)
                if not m:
                    raise ValueError(f"{where}: utterance id {utt_id!r} does not match source_pattern {self.source_pattern!r}")
                out = os.path.join(audio_dir, audio_file_name(utt_id, self.audio_format))
                entry = CorpusEntry(id=utt_id, audio=os.path.abspath(out), duration=0.0, speaker=str(row["spk_id"]),
                                    text=text, corpus=m.group(1))
                yield entry, (utt_id, audio_source(row["wav"], row_file=where, utt_id=utt_id), where, out,
                              self.audio_format, self.sample_rate_policy)

        seconds = [0.0]

        def entries():  # streamed into the manifest: nothing per utterance is kept in memory but its id
            for entry, duration in encode_all(items(), workers=task_workers(self.run_threads())):
                entry.duration = round(duration, 6)
                seconds[0] += duration
                yield entry

        n = write_corpus(entries(), self.out_corpus.get_path())
        if n == 0:
            raise ValueError(f"Loquacious {self.subset.value}: no utterances read")
        self.out_num_utterances.set(n)
        self.out_hours.set(round(seconds[0] / 3600, 4))
        logging.info("Loquacious %s: %d utterances, %.2f h", self.subset.value, n, seconds[0] / 3600)


class SplitCorpusBySourceJob(ResourceJob):
    """Splits a manifest into one manifest per source (the entries' ``corpus`` field), e.g. Loquacious dev."""

    def __init__(self, corpus: tk.Path, sources: Sequence[str]):
        """
        :param corpus: manifest whose entries carry ``corpus`` = source name
        :param sources: expected source names; an entry of another source is an error
        """
        self.corpus = corpus
        self.sources = list(sources)
        self.out_corpora: Dict[str, tk.Path] = {s: self.output_path(f"{s}.corpus.jsonl.gz") for s in self.sources}
        self.rqmt = {"cpu": 1, "mem": 1, "time": 1}

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        parts: Dict[str, list] = {s: [] for s in self.sources}
        for e in iter_corpus(self.corpus.get_path()):
            if e.corpus not in parts:
                raise ValueError(f"{self.corpus.get_path()}: utterance {e.id!r} has source {e.corpus!r}, "
                                 f"not one of {self.sources}")
            parts[e.corpus].append(e)
        for s, entries in parts.items():
            if not entries:
                raise ValueError(f"{self.corpus.get_path()}: no utterances of source {s!r}")
            write_corpus(entries, self.out_corpora[s].get_path())


def loquacious_corpora(
    train_subset: LoquaciousSubset = LoquaciousSubset.SMALL,
    *,
    eval_sources: Optional[Sequence[str]] = None,
    **kwargs,
) -> Dict[str, tk.Path]:
    """Graph helper: ``{"train": ..., "dev": ..., "test": ...}`` manifests, plus ``"dev/<source>"`` and
    ``"test/<source>"`` ones when ``eval_sources`` names the sources of the dev/test utterance ids.
    ``kwargs`` go to every :class:`LoquaciousCorpusJob` (e.g. ``local_dir``, ``audio_format``).
    """
    out = {"train": LoquaciousCorpusJob(train_subset, **kwargs).out_corpus}
    for subset in (LoquaciousSubset.DEV, LoquaciousSubset.TEST):
        corpus = LoquaciousCorpusJob(subset, **kwargs).out_corpus
        out[subset.value] = corpus
        if eval_sources:
            for source, path in SplitCorpusBySourceJob(corpus, eval_sources).out_corpora.items():
                out[f"{subset.value}/{source}"] = path
    return out
