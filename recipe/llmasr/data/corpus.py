"""The toolkit's one corpus format: a JSON-lines manifest, one utterance per line.

Every corpus job (toy, LibriSpeech, Loquacious, Open ASR) writes this format, so that packing for
RETURNN, text extraction and scoring never depend on where a corpus came from.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import unicodedata
from typing import Iterable, Iterator, List, Optional


MAX_ID_BYTES = 200  # an id becomes a file name (escaped, plus an extension) and a RETURNN sequence tag
_SAFE_FILE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def validate_utterance_id(utt_id: object, where: str) -> str:
    """Returns the id if it can be a key in every format the toolkit writes; else raises naming ``where``.

    An id is a non-empty string without whitespace or control characters (a newline would split the
    ``id text`` lines of text files), at most :data:`MAX_ID_BYTES` bytes. Ids may contain ``/``: file names
    are made from them with :func:`utterance_file_name`, never by joining them to a folder.
    """
    if not isinstance(utt_id, str) or not utt_id:
        raise ValueError(f"{where}: utterance id must be a non-empty string, got {utt_id!r}")
    bad = [c for c in utt_id if c.isspace() or unicodedata.category(c)[0] == "C"]
    if bad:
        raise ValueError(f"{where}: utterance id {utt_id!r} holds whitespace or control characters {bad!r}")
    if len(utt_id.encode("utf-8")) > MAX_ID_BYTES:
        raise ValueError(f"{where}: utterance id {utt_id[:40]!r}... is longer than {MAX_ID_BYTES} bytes")
    return utt_id


def utterance_file_name(utt_id: str, extension: str = "") -> str:
    """A file name (no folders) for an utterance, distinct for distinct ids: ``a/b`` -> ``a%2Fb``, ``a_b`` stays.

    Bytes outside ``[A-Za-z0-9._-]``, ``%`` itself and a leading ``.`` are written as ``%XX``, so the name can
    never be ``..``, hidden, or contain a path separator, and two ids never share a file.
    """
    out = []
    for i, ch in enumerate(utt_id):
        if ch in _SAFE_FILE_CHARS and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out) + extension


@dataclasses.dataclass
class CorpusEntry:
    """One utterance: id, audio file, duration in seconds, speaker and transcription (the id is validated)."""

    id: str
    audio: str
    duration: float
    speaker: str
    text: str
    corpus: Optional[str] = None  # sub-corpus/source (e.g. Loquacious dev split by source)

    def __post_init__(self):
        validate_utterance_id(self.id, "corpus entry")


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
    try:
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
    except BaseException:  # a failed job leaves no half-written manifest behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
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
            validate_utterance_id(d.get("id"), f"{path}:{lineno}")
            yield CorpusEntry(**d)


def read_corpus(path: str) -> List[CorpusEntry]:
    """Reads a whole manifest into a list."""
    return list(iter_corpus(path))
