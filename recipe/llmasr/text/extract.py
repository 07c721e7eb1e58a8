"""Text from corpus manifests: transcriptions one per line (for SentencePiece and LM training), text merging."""
from __future__ import annotations

import gzip
import os
from typing import List, Optional

from sisyphus import Task, tk

from llmasr.data.corpus import iter_corpus
from llmasr.resources import ResourceJob
from llmasr.text.normalize import normalize_for_training
from llmasr.text.sentencepiece import iter_text_lines


class CorpusToTextJob(ResourceJob):
    """Writes the transcriptions of one or more corpus manifests, one per line (gzipped)."""

    def __init__(self, corpora: List[tk.Path], *, normalize: bool = False, with_ids: bool = False):
        """
        :param corpora: corpus manifests (a single Path is accepted too)
        :param normalize: apply :func:`normalize_for_training` (LibriSpeech style)
        :param with_ids: prefix each line with the utterance id and a space
        """
        self.corpora = corpora if isinstance(corpora, (list, tuple)) else [corpora]
        self.normalize = normalize
        self.with_ids = with_ids
        self.out_text = self.output_path("text.txt.gz")
        self.out_num_lines = self.output_var("num_lines")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        out = self.out_text.get_path()
        n = 0
        with gzip.open(out + ".tmp.gz", "wt", encoding="utf-8") as f:
            for corpus in self.corpora:
                for e in iter_corpus(corpus.get_path()):
                    text = normalize_for_training(e.text) if self.normalize else " ".join(e.text.split())
                    if not text:
                        raise ValueError(f"{corpus.get_path()}: utterance {e.id!r} has no text left: {e.text!r}")
                    f.write((f"{e.id} {text}" if self.with_ids else text) + "\n")
                    n += 1
        os.replace(out + ".tmp.gz", out)
        self.out_num_lines.set(n)


class ConcatenateTextJob(ResourceJob):
    """Concatenates text files (plain or gz) into one gzipped file, optionally limited and without duplicates."""

    def __init__(self, texts: List[tk.Path], *, max_lines: Optional[int] = None, deduplicate: bool = False):
        """
        :param texts: text files, one sentence per line
        :param max_lines: stop after this many lines (None: all)
        :param deduplicate: drop lines already written
        """
        self.texts = texts
        self.max_lines = max_lines
        self.deduplicate = deduplicate
        self.out_text = self.output_path("text.txt.gz")
        self.out_num_lines = self.output_var("num_lines")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        out = self.out_text.get_path()
        seen = set()
        n = 0
        with gzip.open(out + ".tmp.gz", "wt", encoding="utf-8") as f:
            for t in self.texts:
                for line in iter_text_lines(t.get_path()):
                    if self.max_lines is not None and n >= self.max_lines:
                        break
                    if self.deduplicate:
                        if line in seen:
                            continue
                        seen.add(line)
                    f.write(line + "\n")
                    n += 1
        os.replace(out + ".tmp.gz", out)
        self.out_num_lines.set(n)
