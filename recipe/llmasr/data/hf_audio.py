"""Reading Hugging Face audio datasets (hub name or a local folder of parquet files) into the corpus format.

Shared by the Loquacious and Open ASR Leaderboard jobs: rows are streamed (never the whole dataset in
memory), audio is taken undecoded (the HF ``Audio`` storage ``{"bytes", "path"}`` or plain bytes),
checked and re-encoded to 16 kHz FLAC/OGG by a process pool, one file per utterance.
"""
from __future__ import annotations

import glob
import hashlib
import itertools
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from llmasr.data.audio import AudioFormat, SampleRatePolicy, load_audio, write_audio
from llmasr.data.corpus import utterance_file_name


def parquet_files(local_dir: str, folder: Optional[str], prefix: Optional[str]) -> List[str]:
    """Parquet files of one split in a local copy of a hub dataset (``<dir>/<folder>/<prefix>-*.parquet``)."""
    base = os.path.join(local_dir, folder) if folder else local_dir
    pattern = "*.parquet" if prefix is None else f"{prefix}[-.]*parquet"
    files = sorted(glob.glob(os.path.join(base, pattern)))
    if not files and prefix is not None:
        files = sorted(glob.glob(os.path.join(base, "*.parquet"))) if os.path.isdir(base) else []
    if not files:
        raise FileNotFoundError(f"no parquet files {os.path.join(base, pattern)}")
    return files


def iter_local_rows(files: List[str], columns: List[str]) -> Iterator[Dict[str, Any]]:
    """Rows (dicts with ``columns`` and ``_file``) of local parquet files, read in record batches."""
    import pyarrow.parquet as pq

    for path in files:
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for broken files
            raise ValueError(f"parquet file {path} is unreadable: {exc}") from exc
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"parquet file {path} lacks columns {missing} (has {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                row["_file"] = path
                yield row


def iter_hub_rows(name: str, config: Optional[str], split: str, audio_column: str) -> Iterator[Dict[str, Any]]:
    """Rows of a hub dataset, streamed, with the audio column left undecoded."""
    import datasets

    ds = datasets.load_dataset(name, config, split=split, streaming=True)
    ds = ds.cast_column(audio_column, datasets.Audio(decode=False))
    for row in ds:
        row["_file"] = f"{name}/{config}/{split}"
        yield row


def audio_source(value: Any, *, row_file: str, utt_id: str) -> Union[bytes, str]:
    """Encoded bytes or a file path from an audio cell (HF ``{"bytes", "path"}`` dict or bytes).

    A cell without bytes may name a file only relative to its parquet file's folder and inside it: a dataset
    must not make the job read other local files (``{"path": "/etc/passwd"}``) into a corpus.
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        path = value.get("path")
        if path:
            folder = os.path.dirname(os.path.abspath(row_file))
            if not os.path.isfile(row_file) or os.path.isabs(path):
                raise ValueError(f"{row_file}: utterance {utt_id!r} has no audio bytes, only the path {path!r}; "
                                 f"only a path relative to the parquet file's folder is read")
            full = os.path.join(folder, path)
            real, real_folder = os.path.realpath(full), os.path.realpath(folder)
            if not real.startswith(real_folder + os.sep):
                raise ValueError(f"{row_file}: utterance {utt_id!r}: audio path {path!r} leads out of {folder}")
            return full
    raise ValueError(f"{row_file}: utterance {utt_id!r} has no audio (got {type(value).__name__})")


def audio_file_name(utt_id: str, fmt: AudioFormat) -> str:
    """``<2 hex digits>/<escaped id>.<ext>``: spreads millions of files over 256 folders, one file per id."""
    shard = hashlib.md5(utt_id.encode("utf-8")).hexdigest()[:2]
    return os.path.join(shard, utterance_file_name(utt_id, fmt.extension))


EncodeArgs = Tuple[str, Union[bytes, str], str, str, AudioFormat, SampleRatePolicy]  # id, audio, where, out, fmt, policy


def encode_one(args: EncodeArgs) -> float:
    """Decodes, checks and re-encodes one utterance; returns its duration. Errors name the utterance."""
    utt_id, source, where, out_path, fmt, policy = args
    samples = load_audio(source, name=f"{where} utterance {utt_id!r}", policy=policy)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    return write_audio(samples, out_path, fmt=fmt)


def encode_all(items: Iterable[Tuple[Any, EncodeArgs]], *, workers: int, batch: int = 256) -> Iterator[Tuple[Any, float]]:
    """Runs :func:`encode_one` over ``(payload, args)`` items in order, yielding ``(payload, duration)``.

    At most ``batch`` items are in flight, so memory stays bounded on corpora of millions of utterances.
    """
    items = iter(items)
    if workers <= 1:
        for payload, args in items:
            yield payload, encode_one(args)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        while True:
            chunk = list(itertools.islice(items, batch))
            if not chunk:
                return
            durations = pool.map(encode_one, [a for _, a in chunk], chunksize=max(1, len(chunk) // (4 * workers)))
            yield from zip([p for p, _ in chunk], durations)
            logging.info("encoded %d utterances", len(chunk))
