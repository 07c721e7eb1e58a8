"""The interface every knowledge source in a search implements (ESPnet-style scorers).

A search combines weighted scorers: an AED or LLM decoder, a CTC prefix scorer, an external LLM, a
label prior, a length reward. All are batched over hypotheses: N = batch * beam rows.
Scores are natural-log probabilities.
"""
from __future__ import annotations

import abc
from typing import Any, Sequence, Tuple

import torch

State = Any


class LabelScorer(abc.ABC):
    """Scores the next label of each hypothesis given its label prefix."""

    #: scores are log-probabilities (<= 0), so a hypothesis' score never rises under a scale >= 0; a scorer
    #: that returns rewards sets this to False (searches then do not stop early on that assumption)
    scores_are_log_probs: bool = True

    @abc.abstractmethod
    def initial_state(self, batch_indices: torch.Tensor) -> State:
        """State for the empty prefix; ``batch_indices`` [N] says which utterance each row belongs to."""

    @abc.abstractmethod
    def score(self, state: State, labels: torch.Tensor) -> Tuple[torch.Tensor, State]:
        """Consumes ``labels`` [N] (the last label of each row; BOS at the first step).

        Returns log p(next label | prefix) as [N, V] and the state that includes ``labels``.
        """

    @abc.abstractmethod
    def select(self, state: State, indices: torch.Tensor) -> State:
        """Keeps/duplicates rows: row i of the result is row ``indices[i]`` of ``state``."""

    def final_score(self, state: State) -> torch.Tensor:
        """Score [N] of ending each row's hypothesis after the labels ``state`` holds (e.g. log p(EOS | labels) in the
        scorer's own units); optional: only searches asked to score the end this way call it (the CTC prefix search
        with ``score_final``; the others take the EOS column of :meth:`score`)."""
        raise NotImplementedError(f"{type(self).__name__} has no final score; take the EOS column of score()")

    def concat(self, states: Sequence[State]) -> State:
        """One state holding the rows of ``states`` in order, so that hypotheses whose states come from
        different calls are scored in one call; optional (searches then make one call per state)."""
        raise NotImplementedError


class PartialLabelScorer(LabelScorer):
    """A scorer that is cheap only on a candidate subset (e.g. the CTC prefix scorer)."""

    @abc.abstractmethod
    def score_partial(
        self, state: State, labels: torch.Tensor, candidates: torch.Tensor
    ) -> Tuple[torch.Tensor, State]:
        """Like :meth:`score` but only for ``candidates`` [N, K]: returns [N, K] scores and a state."""
