"""Word lists for lexicon-constrained search: the words a recogniser may output, counted from training text.

A word list holds one word per line, most frequent first. Its words are in the form the AM's units were trained
on (the same normalisation and case as the text given to :class:`llmasr.text.sentencepiece.TrainSentencePieceJob`).
"""
from __future__ import annotations

import collections
from typing import List, Optional, Sequence

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.text.sentencepiece import iter_text_lines
from llmasr.text.vocab import read_lines, write_vocab


def read_word_list(path: str) -> List[str]:
    """The words of a word list file (UTF-8, one word per line); an empty file, an empty line or a line with a blank
    raises naming the line."""
    lines = read_lines(path)
    for lineno, word in enumerate(lines, 1):
        if not word or len(word.split()) != 1 or word != word.strip():
            raise ValueError(f"{path}:{lineno}: not one word: {word!r}")
    if not lines:
        raise ValueError(f"{path}: empty word list")
    return lines


class WordListJob(ResourceJob):
    """Counts the words of text files (one sentence per line, plain or gz) into a word list, most frequent first."""

    def __init__(self, texts: Sequence[tk.Path], *, min_count: int = 1, max_words: Optional[int] = None):
        """
        :param texts: training transcriptions and / or LM text (never the evaluation sets)
        :param min_count: words seen fewer times are left out
        :param max_words: keep only the most frequent ones (None: all)
        """
        if min_count < 1:
            raise ValueError(f"WordListJob: min_count must be >= 1, got {min_count}")
        if max_words is not None and max_words < 1:
            raise ValueError(f"WordListJob: max_words must be >= 1 or None, got {max_words}")
        self.texts = list(texts)
        self.min_count = min_count
        self.max_words = max_words
        self.out_word_list = self.output_path("words.txt")
        self.out_num_words = self.output_var("num_words")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        counts: collections.Counter = collections.Counter()
        for text in self.texts:
            for line in iter_text_lines(text.get_path()):
                counts.update(line.split())
        words = sorted((w for w, n in counts.items() if n >= self.min_count), key=lambda w: (-counts[w], w))
        words = words[: self.max_words] if self.max_words is not None else words
        if not words:
            raise ValueError(f"WordListJob: no word seen {self.min_count} times in "
                             f"{', '.join(t.get_path() for t in self.texts)}")
        write_vocab(words, self.out_word_list.get_path())
        self.out_num_words.set(len(words))
