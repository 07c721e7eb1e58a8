"""Open ASR Leaderboard test sets (``hf-audio/esb-datasets-test-only-sorted``) as corpus manifests.

One job per test set (ami, earnings22, gigaspeech, librispeech test.clean/test.other, spgispeech,
tedlium, voxpopuli). As the leaderboard does, references that normalise to nothing or read
"ignore time segment in scoring" are dropped; transcriptions are kept as given (scoring normalises
both sides with :func:`llmasr.text.normalize.normalize_for_scoring`). The manifest is sorted by
duration, longest first (the leaderboard's order, good for batching).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from sisyphus import tk

from llmasr.data.audio import AudioFormat, SampleRatePolicy, check_transcript, task_workers
from llmasr.data.corpus import CorpusEntry, validate_utterance_id, write_corpus
from llmasr.data.corpus_job import ParallelCorpusJob
from llmasr.data.hf_audio import audio_file_name, audio_source, encode_all, iter_hub_rows, iter_local_rows, parquet_files
from llmasr.text.normalize import normalize_for_scoring

OPEN_ASR_HUB_NAME = "hf-audio/esb-datasets-test-only-sorted"
# test set name -> (hub config, split)
OPEN_ASR_TEST_SETS: Dict[str, Tuple[str, str]] = {
    "ami": ("ami", "test"),
    "earnings22": ("earnings22", "test"),
    "gigaspeech": ("gigaspeech", "test"),
    "librispeech_test_clean": ("librispeech", "test.clean"),
    "librispeech_test_other": ("librispeech", "test.other"),
    "spgispeech": ("spgispeech", "test"),
    "tedlium": ("tedlium", "test"),
    "voxpopuli": ("voxpopuli", "test"),
}
IGNORE_REFERENCE = "ignore time segment in scoring"
TEXT_COLUMNS = ("text", "sentence", "normalized_text", "transcript", "transcription")


class OpenAsrTestSetJob(ParallelCorpusJob):
    """Converts one Open ASR Leaderboard test set (hub or local parquet copy) to 16 kHz audio and a manifest."""

    def __init__(
        self,
        test_set: str,
        *,
        source: str = OPEN_ASR_HUB_NAME,
        local_dir: Optional[tk.Path] = None,
        audio_format: AudioFormat = AudioFormat.FLAC,
        sample_rate_policy: SampleRatePolicy = SampleRatePolicy.RESAMPLE,
        max_utterances: Optional[int] = None,
        cpu: int = 4,
    ):
        """
        :param test_set: one of :data:`OPEN_ASR_TEST_SETS` (e.g. ``librispeech_test_other``)
        :param source: hub dataset name (used when ``local_dir`` is None)
        :param local_dir: local copy of the dataset repository: ``<config>/<split>-*.parquet``
        :param audio_format: FLAC or OGG
        :param sample_rate_policy: audio not at 16 kHz is resampled (the leaderboard resamples too) or rejected
        :param max_utterances: keep only the first N rows (None: all)
        :param cpu: processes re-encoding audio
        """
        if test_set not in OPEN_ASR_TEST_SETS:
            raise ValueError(f"unknown Open ASR test set {test_set!r}; known: {', '.join(OPEN_ASR_TEST_SETS)}")
        self.test_set = test_set
        self.source = source
        self.local_dir = local_dir
        self.audio_format = audio_format
        self.sample_rate_policy = sample_rate_policy
        self.max_utterances = max_utterances
        self.cpu = cpu
        self.out_audio_dir = self.output_path("audio", directory=True)
        self.out_corpus = self.output_path("corpus.jsonl.gz")
        self.out_num_utterances = self.output_var("num_utterances")
        self.out_num_dropped = self.output_var("num_dropped")
        self.out_hours = self.output_var("hours")
        self.rqmt = {"cpu": cpu, "mem": 4, "time": 8}

    def run(self):
        config, split = OPEN_ASR_TEST_SETS[self.test_set]
        if self.local_dir is not None:
            files = parquet_files(self.local_dir.get_path(), config, split)
            import pyarrow.parquet as pq

            names = pq.ParquetFile(files[0]).schema_arrow.names
            text_col = next((c for c in TEXT_COLUMNS if c in names), None)
            if text_col is None:
                raise ValueError(f"{files[0]}: no transcription column (one of {TEXT_COLUMNS}); has {names}")
            rows = iter_local_rows(files, [c for c in ("id", "audio", text_col) if c in names])
        else:
            rows = iter_hub_rows(self.source, config, split, "audio")
            text_col = None
        audio_dir = self.out_audio_dir.get_path()
        os.makedirs(audio_dir, exist_ok=True)
        entries: List[CorpusEntry] = []
        dropped = [0]

        def items():
            seen: Dict[str, str] = {}
            for i, row in enumerate(rows):
                if self.max_utterances is not None and i >= self.max_utterances:
                    return
                where = row["_file"]
                utt_id = validate_utterance_id(str(row.get("id") or f"{self.test_set}-{i:06d}"), f"{where} row {i}")
                if utt_id in seen:
                    raise ValueError(f"{where} row {i}: duplicate utterance id {utt_id!r} (first in {seen[utt_id]})")
                seen[utt_id] = f"{where} row {i}"
                col = text_col or next((c for c in TEXT_COLUMNS if c in row), None)
                if col is None:
                    raise ValueError(f"{where}: utterance {utt_id!r} has no transcription column")
                raw = row[col]
                if raw is None or (isinstance(raw, str) and not raw.strip()):  # the leaderboard drops these
                    dropped[0] += 1
                    continue
                text = check_transcript(raw, where=f"{where} utterance {utt_id!r}")
                if text.strip().lower() == IGNORE_REFERENCE or not normalize_for_scoring(text):
                    dropped[0] += 1
                    continue
                out = os.path.join(audio_dir, audio_file_name(utt_id, self.audio_format))
                entry = CorpusEntry(id=utt_id, audio=os.path.abspath(out), duration=0.0, speaker=config, text=text,
                                    corpus=self.test_set)
                yield entry, (utt_id, audio_source(row["audio"], row_file=where, utt_id=utt_id), where, out,
                              self.audio_format, self.sample_rate_policy)

        durations = []
        for entry, d in encode_all(items(), workers=task_workers(self.run_threads())):
            entry.duration = round(d, 6)
            entries.append(entry)
            durations.append(d)
        entries.sort(key=lambda e: (-e.duration, e.id))
        n = write_corpus(entries, self.out_corpus.get_path())
        if n == 0:
            raise ValueError(f"Open ASR {self.test_set}: no utterances read")
        self.out_num_utterances.set(n)
        self.out_num_dropped.set(dropped[0])
        self.out_hours.set(round(sum(durations) / 3600, 4))
        logging.info("Open ASR %s: %d utterances (%d dropped)", self.test_set, n, dropped[0])


def open_asr_test_sets(names: Optional[List[str]] = None, **kwargs) -> Dict[str, tk.Path]:
    """Manifests of the Open ASR test sets (all by default): ``{name: out_corpus}``."""
    return {n: OpenAsrTestSetJob(n, **kwargs).out_corpus for n in (names or list(OPEN_ASR_TEST_SETS))}
