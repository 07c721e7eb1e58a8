"""SentencePiece label units: train a unigram/BPE model on text, apply it to text.

``TrainSentencePieceJob`` writes the model (``out_model``) and its vocabulary (``out_vocab``: one piece a
line, line number = id), the label inventory the AM, the LM and the vocabulary swap share.
"""
from __future__ import annotations

import enum
import gzip
import logging
import os
from typing import Any, Dict, Iterator, Optional, Sequence

from sisyphus import Task, tk

from llmasr.resources import ResourceJob


class SentencePieceType(enum.Enum):
    """SentencePiece model types."""

    UNIGRAM = "unigram"
    BPE = "bpe"
    CHAR = "char"
    WORD = "word"


def iter_text_lines(path: str) -> Iterator[str]:
    """Non-empty lines of a plain or gzipped UTF-8 text file, whitespace-collapsed; errors name file and line."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid UTF-8: {exc}") from exc
            line = " ".join(line.split())
            if line:
                yield line


class TrainSentencePieceJob(ResourceJob):
    """Trains a SentencePiece model on a text file (one sentence a line, plain or gz)."""

    def __init__(
        self,
        text: tk.Path,
        *,
        vocab_size: int,
        model_type: SentencePieceType = SentencePieceType.UNIGRAM,
        character_coverage: float = 1.0,
        split_digits: bool = True,
        hard_vocab_limit: bool = True,
        max_sentences: Optional[int] = None,
        user_defined_symbols: Sequence[str] = (),
        additional_options: Optional[Dict[str, Any]] = None,
    ):
        """
        :param text: training text, one sentence per line
        :param vocab_size: number of pieces including the special ones (unk=0, bos=1, eos=2 by default)
        :param model_type: UNIGRAM, BPE, CHAR or WORD
        :param character_coverage: fraction of characters covered by the alphabet (1.0 for small alphabets)
        :param split_digits: split numbers into single digits
        :param hard_vocab_limit: False lets a tiny corpus produce fewer pieces than ``vocab_size``
            (sentencepiece otherwise fails with "Vocabulary size too high")
        :param max_sentences: train on a random sample of this many sentences (``input_sentence_size``)
        :param user_defined_symbols: extra symbols always kept as one piece
        :param additional_options: further ``SentencePieceTrainer.train`` options (e.g. ``{"pad_id": 3}``)
        """
        if not isinstance(model_type, SentencePieceType):
            raise TypeError(f"model_type must be a SentencePieceType, got {model_type!r}")
        if vocab_size < 4:
            raise ValueError(f"vocab_size must be at least 4, got {vocab_size}")
        self.text = text
        self.vocab_size = vocab_size
        self.model_type = model_type
        self.character_coverage = character_coverage
        self.split_digits = split_digits
        self.hard_vocab_limit = hard_vocab_limit
        self.max_sentences = max_sentences
        self.user_defined_symbols = list(user_defined_symbols)
        self.additional_options = additional_options or {}
        self.out_model = self.output_path("spm.model")
        self.out_vocab = self.output_path("spm.vocab")
        self.out_vocab_size = self.output_var("vocab_size")
        self.rqmt = {"cpu": 1, "mem": 4, "time": 2}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import sentencepiece as spm

        src = self.text.get_path()
        plain = os.path.abspath("train_text.txt")
        n = 0
        with open(plain, "w", encoding="utf-8") as f:
            for line in iter_text_lines(src):
                f.write(line + "\n")
                n += 1
        if n == 0:
            raise ValueError(f"{src}: no text to train SentencePiece on")
        prefix = os.path.abspath("spm")
        options = dict(
            input=plain,
            model_prefix=prefix,
            vocab_size=self.vocab_size,
            model_type=self.model_type.value,
            character_coverage=self.character_coverage,
            split_digits=self.split_digits,
            hard_vocab_limit=self.hard_vocab_limit,
            user_defined_symbols=self.user_defined_symbols,
            num_threads=1,
            minloglevel=1,
        )
        if self.max_sentences:
            options.update(input_sentence_size=self.max_sentences, shuffle_input_sentence=True)
        options.update(self.additional_options)
        logging.info("training SentencePiece on %d sentences: %s", n, options)
        spm.SentencePieceTrainer.train(**options)
        sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        with open(self.out_vocab.get_path() + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in pieces))
        os.replace(self.out_vocab.get_path() + ".tmp", self.out_vocab.get_path())
        os.replace(prefix + ".model", self.out_model.get_path())
        self.out_vocab_size.set(len(pieces))
        os.unlink(plain)


class SentencePieceOutput(enum.Enum):
    """What :class:`ApplySentencePieceJob` writes per line."""

    PIECES = "pieces"
    IDS = "ids"


class ApplySentencePieceJob(ResourceJob):
    """Encodes a text file (or a corpus manifest's transcriptions) with a SentencePiece model, line by line."""

    def __init__(self, text: tk.Path, model: tk.Path, *, output: SentencePieceOutput = SentencePieceOutput.PIECES,
                 gzip_output: bool = True):
        """
        :param text: one sentence per line (plain or gz), or a corpus manifest (``*.jsonl`` / ``*.jsonl.gz``)
        :param model: SentencePiece model (``TrainSentencePieceJob.out_model``)
        :param output: pieces or ids, space-separated
        :param gzip_output: write ``out_text`` gzipped
        """
        self.text = text
        self.model = model
        self.output = output
        self.gzip_output = gzip_output
        self.out_text = self.output_path("text.txt.gz" if gzip_output else "text.txt")
        self.rqmt = {"cpu": 1, "mem": 2, "time": 2}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=self.model.get_path())
        src = self.text.get_path()
        if ".jsonl" in os.path.basename(src):
            from llmasr.data.corpus import iter_corpus

            lines = (e.text for e in iter_corpus(src))
        else:
            lines = iter_text_lines(src)
        out = self.out_text.get_path()
        tmp = out + ".tmp"
        with (gzip.open(tmp, "wt", encoding="utf-8") if self.gzip_output else open(tmp, "w", encoding="utf-8")) as f:
            for line in lines:
                if self.output is SentencePieceOutput.IDS:
                    f.write(" ".join(map(str, sp.encode(line, out_type=int))) + "\n")
                else:
                    f.write(" ".join(sp.encode(line, out_type=str)) + "\n")
        os.replace(tmp, out)
