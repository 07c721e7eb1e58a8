"""What the search jobs that read audio themselves share: batches of a corpus' audio, and writing N-best lists with
their search statistics."""
from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Tuple

import torch

from llmasr.data.corpus import CorpusEntry


def batch_audio(wavs: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B, S] audio and lengths [B] from a list of 1-D waveforms."""
    lens = torch.tensor([len(w) for w in wavs])
    audio = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        audio[i, : len(w)] = w
    return audio, lens


def audio_batches(corpus: str, batch_size: int) -> Iterator[Tuple[List[CorpusEntry], torch.Tensor, torch.Tensor]]:
    """(entries, audio [B, S], lengths [B]) over a corpus manifest, shortest utterances first (less padding);
    unreadable audio raises naming the utterance and file."""
    from llmasr.data.audio import load_audio
    from llmasr.data.corpus import read_corpus

    entries = sorted(read_corpus(corpus), key=lambda e: e.duration)
    if not entries:
        raise ValueError(f"{corpus}: no utterances")
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
