"""What the search jobs that read audio themselves share: batches of a corpus' audio, and writing N-best lists with
their search statistics."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Dict, Iterator, List, Sequence, Tuple

from sisyphus import Task

from llmasr.data.corpus import CorpusEntry
from llmasr.resources import ResourceJob

if TYPE_CHECKING:  # torch is imported where the searches run, not when a graph is built
    import torch


class CorpusSearchJob(ResourceJob):
    """Base of the search jobs that read a corpus' audio themselves: N-best and statistics outputs, one task."""

    def _init_search_outputs(self, *, cpu: int, device: str) -> None:
        self.out_nbest = self.output_path("nbest.json.gz")
        self.out_search_stats = self.output_path("search_stats.json")
        self.rqmt = {"cpu": cpu, "mem": 8, "time": 4, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)


def batch_audio(wavs: List["torch.Tensor"]) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """Zero-padded [B, S] audio and lengths [B] from a list of 1-D waveforms."""
    import torch

    lens = torch.tensor([len(w) for w in wavs])
    audio = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        audio[i, : len(w)] = w
    return audio, lens


def audio_batches(entries: Sequence[CorpusEntry], batch_size: int
                  ) -> Iterator[Tuple[List[CorpusEntry], "torch.Tensor", "torch.Tensor"]]:
    """(entries, audio [B, S], lengths [B]) over corpus entries, shortest utterances first (less padding);
    unreadable audio raises naming the utterance and file."""
    import torch

    from llmasr.data.audio import load_audio

    entries = sorted(entries, key=lambda e: e.duration)
    for start in range(0, len(entries), batch_size):
        batch = entries[start : start + batch_size]
        audio, lens = batch_audio([torch.from_numpy(load_audio(e.audio, name=f"{e.id} ({e.audio})")) for e in batch])
        yield batch, audio, lens


def write_search_outputs(nbest: Dict[str, List[dict]], stats: Dict[str, object], nbest_path: str,
                         stats_path: str) -> None:
    """Writes the N-best lists and the statistics JSON (audio_seconds, decode_seconds, ...), each atomically."""
    from llmasr.search.nbest import write_nbest

    write_nbest(nbest, nbest_path)
    with open(stats_path + ".tmp", "w") as f:
        json.dump(stats, f, indent=1)
    os.replace(stats_path + ".tmp", stats_path)
