"""Simple LabelScorers: label prior, length reward, and a wrapper over a [V] table or a tiny module (tests)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer


class _StatelessScorer(LabelScorer):
    """Base of scorers whose state is just the row count."""

    def initial_state(self, batch_indices: torch.Tensor) -> int:
        return int(batch_indices.shape[0])

    def select(self, state: int, indices: torch.Tensor) -> int:
        return int(indices.shape[0])

    def final_score(self, state: int) -> torch.Tensor:
        return torch.zeros(state)


class LabelPriorScorer(_StatelessScorer):
    """A context-independent label prior as a scorer: ``log_prior`` [V] for every row; weight it with
    ``-prior_scale``."""

    def __init__(self, log_prior: torch.Tensor):
        self.log_prior = log_prior.float()

    def score(self, state: int, labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
        n = int(labels.shape[0])
        return self.log_prior.to(labels.device)[None, :].expand(n, -1), n


class LengthRewardScorer(_StatelessScorer):
    """Score 1 for every label except ``eos`` (so scale = reward per label)."""

    scores_are_log_probs = False  # positive: a hypothesis' score may rise (no early stop in beam_search)

    def __init__(self, vocab_size: int, eos: Optional[int] = None):
        self.v = torch.ones(vocab_size)
        if eos is not None:
            self.v[eos] = 0.0

    def score(self, state: int, labels: torch.Tensor) -> Tuple[torch.Tensor, int]:
        return self.v.unsqueeze(0).expand(labels.shape[0], -1), labels.shape[0]


class TableScorer(LabelScorer):
    """Label scorer from a fixed [V] log-prob table (unigram), a bigram table [V, V] (row = previous label)
    or a callable ``fn(labels [N]) -> log-probs [N, V]`` (e.g. a tiny module over the last label)."""

    def __init__(self, table_or_fn):
        self.table = table_or_fn

    def initial_state(self, batch_indices: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch_indices.shape[0], dtype=torch.long)

    def _lp(self, labels: torch.Tensor) -> torch.Tensor:
        if callable(self.table) and not isinstance(self.table, torch.Tensor):
            return self.table(labels)
        if self.table.dim() == 1:
            return self.table.unsqueeze(0).expand(labels.shape[0], -1)
        return self.table[labels]

    def score(self, state: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        lp = self._lp(labels).float()
        return lp, (lp, labels)

    def select(self, state, indices: torch.Tensor):
        if isinstance(state, tuple):
            return (state[0][indices], state[1][indices])
        return state[indices]

    def final_score(self, state) -> torch.Tensor:
        raise NotImplementedError("TableScorer: use the EOS column of score()")
