"""Per-utterance CTC log-probs on disk, written and read one utterance at a time (memory bounded by one utterance,
not by the set: LibriSpeech test-other's [T, 10001] float32 log-probs are about 12.7 GB).

The format is a RETURNN HDF (``inputs`` [sum T, V], ``seqLengths`` [N, 2], ``seqTags`` [N], attributes ``numSeqs``,
``numTimesteps``, ``inputPattSize``), so RETURNN's HDFDataset reads it too. Torch files ``{seq_id: [T, V]}`` from
earlier dumps are still read (memory-mapped).
"""
from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

ROWS_PER_CHUNK = 64  # HDF chunk: 64 frames x V (2.5 MB at V = 10001 in float32)


class CtcLogProbsWriter:
    """Appends utterances to a RETURNN HDF under ``<path>.tmp``; ``close()`` renames it to ``path`` (a killed dump
    leaves no file that looks finished). Use as a context manager."""

    def __init__(self, path: str):
        import h5py

        self.path = path
        self.tmp = path + ".tmp"
        self.file = h5py.File(self.tmp, "w")
        self.inputs = None
        self.lengths: List[int] = []
        self.tags: List[str] = []
        self.frames = 0

    def add(self, seq_id: str, log_probs) -> None:
        """Writes one utterance's [T, V] log-probs (torch or numpy)."""
        lp = log_probs.detach().cpu().float().numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(
            log_probs, dtype=np.float32)
        if lp.ndim != 2:
            raise ValueError(f"{self.path}: {seq_id}: log-probs must be [T, V], got shape {lp.shape}")
        if self.inputs is None:
            self.inputs = self.file.create_dataset("inputs", shape=(0, lp.shape[1]), maxshape=(None, lp.shape[1]),
                                                   dtype="float32", chunks=(ROWS_PER_CHUNK, lp.shape[1]))
        elif lp.shape[1] != self.inputs.shape[1]:
            raise ValueError(f"{self.path}: {seq_id} has {lp.shape[1]} CTC outputs, earlier utterances "
                             f"{self.inputs.shape[1]}")
        self.inputs.resize(self.frames + lp.shape[0], axis=0)
        self.inputs[self.frames:] = lp
        self.frames += lp.shape[0]
        self.lengths.append(lp.shape[0])
        self.tags.append(seq_id)

    def close(self) -> None:
        import h5py

        if self.inputs is None:
            raise ValueError(f"{self.path}: no utterances written")
        self.file.create_dataset("seqLengths", data=np.array([[n, 1] for n in self.lengths], dtype="int32"))
        self.file.create_dataset("seqTags", data=np.array(self.tags, dtype=object), dtype=h5py.string_dtype())
        self.file.attrs["numSeqs"] = len(self.tags)
        self.file.attrs["numTimesteps"] = self.frames
        self.file.attrs["inputPattSize"] = self.inputs.shape[1]
        self.file.create_group("targets/data")
        self.file.create_group("targets/size")
        self.file.create_group("targets/labels")
        self.file.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> "CtcLogProbsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.file.close()


class CtcLogProbsFile:
    """Random and sequential access to the utterances of a log-prob file, each read from disk when asked for."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CTC log-prob file not found: {path}")
        self.path = path
        self._hdf = None
        self._torch: Optional[Dict[str, torch.Tensor]] = None
        self._offsets: Dict[str, Tuple[int, int]] = {}
        self._order: List[str] = []
        if _is_hdf(path):
            import h5py

            self._hdf = h5py.File(path, "r")
            for key in ("inputs", "seqLengths", "seqTags"):
                if key not in self._hdf:
                    raise ValueError(f"{path}: HDF has no {key!r} dataset (not a RETURNN HDF?)")
            lengths = self._hdf["seqLengths"][...]
            lengths = lengths[:, 0] if lengths.ndim == 2 else lengths
            tags = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in self._hdf["seqTags"][...]]
            offset = 0
            for tag, n in zip(tags, lengths):
                self._offsets[tag] = (offset, int(n))
                self._order.append(tag)
                offset += int(n)
        else:
            data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a dict seq_id -> [T, V] tensor, got {type(data).__name__}")
            self._torch = {str(k): v for k, v in data.items()}
            self._order = list(self._torch)

    def keys(self) -> List[str]:
        return list(self._order)

    def __contains__(self, seq_id: str) -> bool:
        return seq_id in (self._offsets if self._hdf is not None else self._torch)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, seq_id: str) -> torch.Tensor:
        """[T, V] log-probs of one utterance."""
        if self._hdf is not None:
            start, n = self._offsets[seq_id]
            return torch.from_numpy(self._hdf["inputs"][start : start + n])
        lp = torch.as_tensor(self._torch[seq_id])
        if lp.dim() != 2:
            raise ValueError(f"{self.path}: {seq_id}: log-probs must be [T, V], got shape {tuple(lp.shape)}")
        return lp

    def __iter__(self) -> Iterator[Tuple[str, torch.Tensor]]:
        for seq_id in self._order:
            yield seq_id, self[seq_id]

    def close(self) -> None:
        if self._hdf is not None:
            self._hdf.close()
            self._hdf = None


def _is_hdf(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def read_ctc_logprobs(path: str) -> Iterator[Tuple[str, torch.Tensor]]:
    """(seq_id, [T, V] log-probs) in file order, one utterance in memory at a time."""
    f = CtcLogProbsFile(path)
    try:
        yield from f
    finally:
        f.close()
