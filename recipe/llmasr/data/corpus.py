"""The toolkit's one corpus format: a JSON-lines manifest, one utterance per line.

Every corpus job (toy, LibriSpeech, Loquacious, Open ASR) writes this format, so that packing for
RETURNN, text extraction and scoring never depend on where a corpus came from.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from typing import Iterable, Iterator, List, Optional


@dataclasses.dataclass
class CorpusEntry:
    """One utterance: id, audio file, duration in seconds, speaker and transcription."""

    id: str
    audio: str
    duration: float
    speaker: str
    text: str
    corpus: Optional[str] = None  # sub-corpus/source (e.g. Loquacious dev split by source)


def _open(path: str, mode: str):
    if path.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_corpus(entries: Iterable[CorpusEntry], path: str) -> int:
    """Writes a manifest atomically (temp file + rename); returns the number of entries.

    Raises ValueError on duplicate utterance ids or empty transcriptions, naming the id.
    """
    seen = set()
    tmp = path + ".tmp" + (".gz" if path.endswith(".gz") else "")
    n = 0
    with _open(tmp, "w") as f:
        for e in entries:
            if e.id in seen:
                raise ValueError(f"{path}: duplicate utterance id {e.id!r}")
            seen.add(e.id)
            if not e.text or not e.text.strip():
                raise ValueError(f"{path}: empty transcription for utterance {e.id!r}")
            f.write(json.dumps(dataclasses.asdict(e), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def iter_corpus(path: str) -> Iterator[CorpusEntry]:
    """Reads a manifest lazily; errors name the file and the line."""
    fields = {f.name for f in dataclasses.fields(CorpusEntry)}
    with _open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line: {exc}") from exc
            unknown = set(d) - fields
            if unknown:
                raise ValueError(f"{path}:{lineno}: unknown fields {sorted(unknown)}")
            yield CorpusEntry(**d)


def read_corpus(path: str) -> List[CorpusEntry]:
    """Reads a whole manifest into a list."""
    return list(iter_corpus(path))
