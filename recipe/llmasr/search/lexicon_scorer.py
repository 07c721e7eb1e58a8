"""Lexicon-constrained search: a label scorer that lets hypotheses spell only words of a word list.

Like the lexicon of a WFST or flashlight decoder without a language model: a subword label is allowed (log-prob 0)
when the word it continues is still a prefix of a lexicon word, or, for a word-initial label ("▁..."), when the
previous word is complete; every other label gets -inf, and the end of the sentence inside a word -inf or a finite
last-resort penalty. Added with scale 1 to any search (CTC prefix search, AED or AED+CTC beam search), it removes the
non-words that an open subword vocabulary lets a model spell, and changes nothing else in the scores.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from llmasr.search.scorer import LabelScorer

WORD_START = "\u2581"  # SentencePiece's word-boundary mark
NEG = float("-inf")
DEAD, START, FIRST_PREFIX = 0, 1, 2  # node ids of the prefix tree (see LexiconScorer)
# LexiconScorer's end_penalty in the recognition jobs: below the log-probability of any plausible hypothesis (a CTC
# or decoder score of an utterance is a few hundred at most), so ending inside a word is the last resort
FALLBACK_END_PENALTY = -1e4


class LexiconScorer(LabelScorer):
    """Allows only label sequences that spell words of ``words`` (see the module docstring).

    The state of a row is its node in the prefix tree of the lexicon (a prefix of a word, "before the first word",
    or dead after a label that was not allowed: a search that keeps such a row at a finite score, e.g. clamped,
    gets -inf for everything after it); the allowed labels of a node are computed the first time the node is
    reached, so a large lexicon costs only the nodes that a search visits.
    """

    def __init__(self, words: Iterable[str], pieces: Sequence[Optional[str]], *, eos: Optional[int] = None,
                 bos: Optional[int] = None, end_penalty: float = NEG):
        """
        :param words: the lexicon (in the text form the label units were trained on)
        :param pieces: the label strings by label id (SentencePiece pieces, "▁" marking a word start); None for
            labels that never spell text (blank, ``<unk>``, ``<s>``): they are never allowed
        :param eos: the end-of-sentence label, allowed where the last word is complete (or nothing was said)
        :param bos: the label that starts every hypothesis (consumed without a move in the tree)
        :param end_penalty: the score of ending inside a word (EOS column, :meth:`final_score`): -inf never outputs
            a partial word; a finite one far below any hypothesis' score (:data:`FALLBACK_END_PENALTY`) outputs it
            only when no hypothesis that ends in a complete word survived the beam, instead of none at all
        """
        words = sorted(set(words))
        if not words:
            raise ValueError("LexiconScorer: empty lexicon")
        bad = [w for w in words if not w or len(w.split()) != 1 or WORD_START in w]
        if bad:
            raise ValueError(f"LexiconScorer: not single words: {bad[:5]}")
        self.pieces = list(pieces)
        self.eos = eos
        self.bos = bos
        self.num_labels = len(self.pieces)
        self.end_penalty = float(end_penalty)
        # node 0: dead; node 1: before the first word; nodes 2..: every prefix of a word ("" = after a lone "▁")
        self._prefix_id: Dict[str, int] = {}
        self._prefixes: List[str] = []
        for w in [""] + words:
            for i in range(len(w) + 1):
                p = w[:i]
                if p not in self._prefix_id:
                    self._prefix_id[p] = len(self._prefixes) + FIRST_PREFIX
                    self._prefixes.append(p)
        self._complete = torch.zeros(self.num_nodes, dtype=torch.bool)
        self._complete[START] = True  # nothing said yet: the sentence may end (an empty hypothesis)
        for w in words:
            self._complete[self._prefix_id[w]] = True
        self._word_start = torch.tensor([self._prefix_id.get(p[1:], DEAD) if p is not None and p.startswith(WORD_START)
                                         else DEAD for p in self.pieces], dtype=torch.long)
        self._rows: Dict[int, torch.Tensor] = {}

    @property
    def num_nodes(self) -> int:
        return len(self._prefixes) + FIRST_PREFIX

    def _next(self, node: int) -> torch.Tensor:
        """Node after each label from ``node`` ([V], DEAD: not allowed)."""
        row = self._rows.get(node)
        if row is None:
            row = self._word_start.clone() if bool(self._complete[node]) else torch.full_like(self._word_start, DEAD)
            if node >= FIRST_PREFIX:
                prefix = self._prefixes[node - FIRST_PREFIX]
                for label, p in enumerate(self.pieces):
                    if p is not None and not p.startswith(WORD_START):
                        row[label] = self._prefix_id.get(prefix + p, DEAD)
            self._rows[node] = row
        return row

    def _transitions(self, nodes: torch.Tensor) -> torch.Tensor:
        """[N, V] next nodes of the rows at ``nodes`` [N]."""
        uniq, inverse = torch.unique(nodes, return_inverse=True)
        table = torch.stack([self._next(int(n)) for n in uniq.tolist()])
        return table[inverse]

    def initial_state(self, batch_indices: torch.Tensor) -> torch.Tensor:
        return torch.full((batch_indices.shape[0],), START, dtype=torch.long)

    def score(self, state: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        labels = labels.to(state.device)
        moved = self._transitions(state).gather(1, labels.clamp(0, self.num_labels - 1)[:, None])[:, 0]
        nodes = torch.where(labels == self.bos, state, moved) if self.bos is not None else moved
        lp = torch.zeros(nodes.shape[0], self.num_labels).masked_fill(self._transitions(nodes) == DEAD, NEG)
        if self.eos is not None:
            lp[:, self.eos] = self.final_score(nodes)
        return lp, nodes

    def select(self, state: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return state[indices.to(state.device)]

    def concat(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(states))

    def final_score(self, state: torch.Tensor) -> torch.Tensor:
        end = torch.zeros(state.shape[0]).masked_fill(~self._complete[state], self.end_penalty)
        return end.masked_fill(state == DEAD, NEG)


def sentencepiece_lexicon_scorer(words: Iterable[str], spm_model: str, num_labels: int, *, eos: Optional[int] = None,
                                 bos: Optional[int] = None, end_penalty: float = NEG) -> LexiconScorer:
    """A :class:`LexiconScorer` over the pieces of a SentencePiece model (ids beyond the model, e.g. CTC's blank, and
    its control and unknown symbols are never allowed); ``num_labels``: the width of the searched label scores;
    ``eos``, ``bos``: the search's (default: the model's ``</s>`` and ``<s>``)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_model)
    eos = sp.eos_id() if eos is None else eos
    bos = sp.bos_id() if bos is None else bos
    if num_labels < sp.get_piece_size():
        raise ValueError(f"{spm_model}: {sp.get_piece_size()} pieces, more than the {num_labels} searched labels")
    pieces: List[Optional[str]] = [None] * num_labels
    for i in range(sp.get_piece_size()):
        if not (sp.is_control(i) or sp.is_unknown(i)):
            pieces[i] = sp.id_to_piece(i)
    return LexiconScorer(words, pieces, eos=eos, bos=bos, end_penalty=end_penalty)
