"""Conversions between label sequences: AM units (SentencePiece pieces or characters) <-> words <-> LLM token ids.

The delayed-fusion search calls :meth:`AmUnits.split_completed` on a hypothesis' AM labels to get the words
that are finished (a later label starts a new word) and the labels of the unfinished last word, and
:meth:`LlmWordEncoder.encode_words` to turn the newly finished words into LLM tokens. Words are encoded one
at a time (with a leading space after the first word), so the tokens of earlier words never change
when more words arrive and the LLM state can be extended incrementally.
"""
from __future__ import annotations

import enum
import functools
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from llmasr.text.vocab import WORD_BOUNDARY, read_vocab

SP_WORD_START = "\u2581"  # "▁": SentencePiece's marker of a piece that starts a word
DEFAULT_SPECIALS = ("<blank>", "<s>", "</s>", "<unk>", "<pad>", "<eos>", "<bos>")
DEFAULT_END_SYMBOLS = ("</s>", "<eos>")


class UnitKind(enum.Enum):
    """How AM labels mark word boundaries."""

    SENTENCEPIECE = "sentencepiece"  # a piece starting with "▁" starts a word
    CHARACTERS = "characters"  # "|" ends a word


class AmUnits:
    """An AM label inventory with its word-boundary rule: ids <-> pieces <-> words."""

    def __init__(
        self,
        symbols: Sequence[str],
        kind: UnitKind = UnitKind.SENTENCEPIECE,
        *,
        special_symbols: Iterable[str] = DEFAULT_SPECIALS,
        end_symbols: Iterable[str] = DEFAULT_END_SYMBOLS,
        sp_model_path: Optional[str] = None,
    ):
        """
        :param symbols: label strings, index = id
        :param kind: word-boundary rule
        :param special_symbols: labels dropped when converting to words (blank, bos, eos, unk, pad)
        :param end_symbols: labels that end the sentence (all words before them are complete)
        :param sp_model_path: SentencePiece model, needed only for :meth:`words_to_ids` with SENTENCEPIECE
        """
        self.symbols = list(symbols)
        self.kind = kind
        self.index: Dict[str, int] = {s: i for i, s in enumerate(self.symbols)}
        self.special_ids = frozenset(self.index[s] for s in special_symbols if s in self.index)
        self.end_ids = frozenset(self.index[s] for s in end_symbols if s in self.index)
        self.sp_model_path = sp_model_path
        # per id: (starts a word, ends a word, text added to the current word)
        self._starts = [False] * len(self.symbols)
        self._ends = [False] * len(self.symbols)
        self._text = [""] * len(self.symbols)
        for i, s in enumerate(self.symbols):
            if i in self.special_ids:
                continue
            if kind is UnitKind.SENTENCEPIECE:
                self._starts[i] = s.startswith(SP_WORD_START)
                self._text[i] = s.lstrip(SP_WORD_START) if self._starts[i] else s
            else:
                self._ends[i] = s == WORD_BOUNDARY
                self._text[i] = "" if self._ends[i] else s

    @classmethod
    def from_vocab_file(cls, path: str, kind: UnitKind = UnitKind.SENTENCEPIECE, **kwargs) -> "AmUnits":
        """From a one-symbol-per-line vocab (``TrainSentencePieceJob.out_vocab``, ``CharacterVocabJob.out_vocab``)."""
        return cls(read_vocab(path), kind, **kwargs)

    @classmethod
    def from_sentencepiece_model(cls, path: str, **kwargs) -> "AmUnits":
        """From a SentencePiece model (its special pieces ``<unk>``, ``<s>``, ``</s>`` are specials)."""
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=path)
        return cls([sp.id_to_piece(i) for i in range(sp.get_piece_size())], UnitKind.SENTENCEPIECE,
                   sp_model_path=path, **kwargs)

    def __len__(self) -> int:
        return len(self.symbols)

    @functools.cached_property
    def _sp(self):
        import sentencepiece as spm

        if self.sp_model_path is None:
            raise ValueError("AmUnits: words_to_ids with SentencePiece units needs sp_model_path")
        return spm.SentencePieceProcessor(model_file=self.sp_model_path)

    def ids_to_pieces(self, ids: Sequence[int]) -> List[str]:
        """Label strings of ids; an id outside the vocab raises naming it."""
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.symbols):
                raise ValueError(f"label id {i} outside the vocabulary of size {len(self.symbols)}")
            out.append(self.symbols[int(i)])
        return out

    def split_completed(self, ids: Sequence[int], *, final: bool = False) -> Tuple[List[str], List[int]]:
        """Completed words and the ids of the unfinished tail of a hypothesis' AM labels.

        A word is complete once a later label starts a new word (SentencePiece ``▁``), a word boundary
        ``|`` follows it (characters), an end symbol (``</s>``) is reached, or ``final`` is set. Special
        labels (blank, bos, unk, ...) are skipped. The tail holds the non-special ids of the last word.
        """
        words: List[str] = []
        cur: List[str] = []
        tail: List[int] = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.symbols):
                raise ValueError(f"label id {i} outside the vocabulary of size {len(self.symbols)}")
            if i in self.end_ids:
                final = True
                break
            if i in self.special_ids:
                continue
            if self._starts[i] and cur:
                words.append("".join(cur))
                cur, tail = [], []
            if self._ends[i]:
                if cur:
                    words.append("".join(cur))
                cur, tail = [], []
                continue
            if self._text[i]:
                cur.append(self._text[i])
            tail.append(i)
        if final:
            if cur:
                words.append("".join(cur))
            return words, []
        return words, tail

    def ids_to_words(self, ids: Sequence[int]) -> List[str]:
        """All words of a complete label sequence."""
        return self.split_completed(ids, final=True)[0]

    def ids_to_text(self, ids: Sequence[int]) -> str:
        """Words of a complete label sequence joined by spaces."""
        return " ".join(self.ids_to_words(ids))

    def words_to_ids(self, words: Sequence[str]) -> List[int]:
        """AM label ids of a word sequence (SentencePiece encoding, or characters with ``|`` between words)."""
        text = " ".join(words)
        if self.kind is UnitKind.SENTENCEPIECE:
            return list(self._sp.encode(text, out_type=int))
        ids = []
        for c in [WORD_BOUNDARY if ch == " " else ch for ch in text]:
            if c not in self.index:
                raise ValueError(f"character {c!r} of {text!r} not in the character vocabulary")
            ids.append(self.index[c])
        return ids


class LlmWordEncoder:
    """Encodes words into LLM token ids word by word (cached), and decodes LLM ids back into words."""

    def __init__(self, tokenizer, *, lowercase: bool = False, space_before_first: bool = False,
                 cache_size: int = 100000):
        """
        :param tokenizer: a Hugging Face tokenizer (see :func:`llmasr.text.llm_tokenizer.load_tokenizer`)
        :param lowercase: lower-case words first (AM units are upper case, most LLMs expect normal case)
        :param space_before_first: encode the first word with a leading space too
        :param cache_size: number of (word, position) encodings kept
        """
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.space_before_first = space_before_first
        self._encode_cached = functools.lru_cache(maxsize=cache_size)(self._encode_word)

    def _encode_word(self, word: str, first: bool) -> Tuple[int, ...]:
        text = word.lower() if self.lowercase else word
        if not first or self.space_before_first:
            text = " " + text
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_words(self, words: Sequence[str], *, first_index: int = 0) -> List[int]:
        """LLM ids of ``words``, which start at word position ``first_index`` of the sentence."""
        ids: List[int] = []
        for k, w in enumerate(words):
            ids.extend(self._encode_cached(w, first_index + k == 0))
        return ids

    def decode_words(self, ids: Sequence[int]) -> List[str]:
        """Words of LLM ids (special tokens dropped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).split()


def am_ids_to_llm_ids(am: AmUnits, llm: LlmWordEncoder, ids: Sequence[int], *, final: bool = True) -> List[int]:
    """LLM ids of the completed words of AM label ids (all words if ``final``)."""
    words, _ = am.split_completed(ids, final=final)
    return llm.encode_words(words)


def llm_ids_to_am_ids(llm: LlmWordEncoder, am: AmUnits, ids: Sequence[int]) -> List[int]:
    """AM label ids of the words that LLM ids spell (case follows the AM vocabulary when ``lowercase``)."""
    words = llm.decode_words(ids)
    if llm.lowercase:
        words = [w.upper() for w in words]
    return am.words_to_ids(words)


def am_pieces_as_llm_tokens(am: AmUnits, llm: LlmWordEncoder) -> List[List[int]]:
    """For each AM label, the LLM token ids spelling it (word-start pieces with a leading space; specials: []).

    Used to initialise an LLM's embedding/output rows for the AM's units (e.g. the mean of these tokens'
    embeddings) when the LLM is switched to the AM vocabulary.
    """
    out: List[List[int]] = []
    for i, s in enumerate(am.symbols):
        text = am._text[i]
        if i in am.special_ids or not text:
            out.append([])
            continue
        if llm.lowercase:
            text = text.lower()
        if am._starts[i]:
            text = " " + text
        out.append(list(llm.tokenizer.encode(text, add_special_tokens=False)))
    return out
