"""Label vocabularies: character vocabulary from text, reading/writing vocab files, export for RETURNN.

A vocab file holds one symbol per line; the line number is the label id. RETURNN's ``Vocabulary`` reads
a Python-literal dict ``{symbol: id}`` (``vocab_file``), written by :class:`ReturnnVocabJob`.
"""
from __future__ import annotations

import collections
import os
from typing import Dict, List, Optional, Sequence

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.text.sentencepiece import iter_text_lines

WORD_BOUNDARY = "|"  # character vocabularies write the space between words as this symbol


def read_lines(path: str) -> List[str]:
    """The lines of a UTF-8 file of one symbol per line (vocabularies, word lists), as written, without the newlines;
    invalid UTF-8 raises naming the file and byte."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 at byte {exc.start}") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_vocab(path: str) -> List[str]:
    """Symbols of a vocab file (one per line, id = line number); duplicates or empty lines raise naming the line."""
    symbols = read_lines(path)
    seen: Dict[str, int] = {}
    for i, s in enumerate(symbols):
        if s == "":
            raise ValueError(f"{path}:{i + 1}: empty symbol")
        if s in seen:
            raise ValueError(f"{path}:{i + 1}: symbol {s!r} already on line {seen[s] + 1}")
        seen[s] = i
    return symbols


def write_vocab(symbols: Sequence[str], path: str) -> None:
    """Writes one symbol per line atomically."""
    if len(set(symbols)) != len(symbols):
        dup = [s for s, c in collections.Counter(symbols).items() if c > 1]
        raise ValueError(f"{path}: duplicate symbols {dup[:5]}")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(s + "\n" for s in symbols))
    os.replace(path + ".tmp", path)


def text_to_chars(text: str) -> List[str]:
    """Character labels of a sentence, spaces as :data:`WORD_BOUNDARY` (``"AB C"`` -> ``A B | C``)."""
    return [WORD_BOUNDARY if c == " " else c for c in " ".join(text.split())]


def chars_to_text(labels: Sequence[str]) -> str:
    """Inverse of :func:`text_to_chars`."""
    return " ".join("".join(" " if c == WORD_BOUNDARY else c for c in labels).split())


class CharacterVocabJob(ResourceJob):
    """Collects the characters of a text file into a vocabulary (special symbols first, then by frequency)."""

    def __init__(self, text: tk.Path, *, special_symbols: Sequence[str] = ("<blank>", "<s>", "</s>", "<unk>"),
                 min_count: int = 1):
        """
        :param text: one sentence per line (plain or gz)
        :param special_symbols: symbols placed first, in this order (ids 0, 1, ...)
        :param min_count: characters seen fewer times are left out (mapped to ``<unk>`` by users)
        """
        self.text = text
        self.special_symbols = list(special_symbols)
        self.min_count = min_count
        self.out_vocab = self.output_path("chars.vocab")
        self.out_vocab_size = self.output_var("vocab_size")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        counts: collections.Counter = collections.Counter()
        for line in iter_text_lines(self.text.get_path()):
            counts.update(text_to_chars(line))
        chars = sorted((c for c, n in counts.items() if n >= self.min_count and c not in self.special_symbols),
                       key=lambda c: (-counts[c], c))
        if not chars:
            raise ValueError(f"{self.text.get_path()}: no characters")
        symbols = self.special_symbols + chars
        write_vocab(symbols, self.out_vocab.get_path())
        self.out_vocab_size.set(len(symbols))


def write_returnn_vocab(symbols: Sequence[str], path: str) -> None:
    """Writes ``{symbol: id}`` as a Python literal (RETURNN ``Vocabulary(vocab_file=...)``)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("{\n" + "".join(f"{s!r}: {i},\n" for i, s in enumerate(symbols)) + "}\n")
    os.replace(path + ".tmp", path)


class ReturnnVocabJob(ResourceJob):
    """Exports a one-symbol-per-line vocab (SentencePiece, characters, LLM tokens) as a RETURNN vocab dict."""

    def __init__(self, vocab: tk.Path, *, unknown_label: Optional[str] = None):
        """
        :param vocab: vocab file, one symbol per line
        :param unknown_label: symbol RETURNN maps unknown labels to; must be in the vocab (None: none)
        """
        self.vocab = vocab
        self.unknown_label = unknown_label
        self.out_returnn_vocab = self.output_path("vocab.pkl.txt")
        self.out_vocab_size = self.output_var("vocab_size")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        symbols = read_vocab(self.vocab.get_path())
        if self.unknown_label is not None and self.unknown_label not in symbols:
            raise ValueError(f"{self.vocab.get_path()}: unknown_label {self.unknown_label!r} not in the vocab")
        write_returnn_vocab(symbols, self.out_returnn_vocab.get_path())
        self.out_vocab_size.set(len(symbols))
