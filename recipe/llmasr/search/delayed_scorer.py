"""Delayed fusion: a CTC acoustic model and an LLM with different units in one time-synchronous search.

A :class:`DelayedLLMScorer` on the project's one CTC prefix search (:func:`llmasr.search.ctc.ctc_beam_search`).
Every ``delay`` frames (or only at the end) the completed words of every hypothesis are converted to
LLM tokens and all pending tokens of all hypotheses are scored in one KV-cached LLM call; the label prior is
subtracted for the labels of those consumed words only, so LM and prior enter together. An utterance's beam is
final after its last frame; all its words and EOS are scored in the next of these calls (at the latest when
the last utterance searched together ends), so utterances ending at different frames add no calls: delay None
makes one call for the final hypotheses of all utterances. Label-wise fusion (shared units) is the same search
with the LLM as a label scorer (:mod:`llmasr.search.labelwise_fusion`); the job running both is
:class:`llmasr.search.delayed_fusion.CTCFusionSearchJob`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from llmasr.search.ctc import FrameScorer, Hypothesis, best_hypotheses
from llmasr.search.ctc_fusion import SearchStats, ctc_search_without_llm, run_ctc_fusion
from llmasr.search.llm_scorer import LLMScorer, LLMState
from llmasr.search.options import DEFAULT_DELAY

NEG_INF = float("-inf")


class SameUnitsConverter:
    """AM labels are LLM tokens (possibly through a map): every label is consumed at once."""

    def __init__(self, label_to_token: Optional[Sequence[int]] = None):
        self.label_to_token = None if label_to_token is None else [int(x) for x in label_to_token]

    def __call__(self, labels: Tuple[int, ...], final: bool) -> Tuple[List[int], int]:
        """Returns (LLM tokens of the consumable labels, number of consumed labels)."""
        if self.label_to_token is None:
            return list(labels), len(labels)
        return [self.label_to_token[x] for x in labels], len(labels)

    def token(self, label: int) -> int:
        """The LLM token of one label."""
        return int(label) if self.label_to_token is None else self.label_to_token[label]


class WordConverter:
    """AM labels -> completed words -> LLM tokens, through :class:`llmasr.text.units.AmUnits`.

    A word is completed once a later label starts a new word (or at the end, ``final``). ``encoder``
    encodes words one at a time (``encode_words(words, first_index=...)``, e.g.
    :class:`llmasr.text.units.LlmWordEncoder` or :class:`llmasr.models.llm.LLMTokenizer`), so the tokens
    of a hypothesis only grow as its labels grow.
    """

    def __init__(self, am_units, encoder):
        self.am_units = am_units
        self.encoder = encoder
        self._cache: Dict[Tuple[int, ...], Tuple[List[int], int]] = {}

    def __call__(self, labels: Tuple[int, ...], final: bool) -> Tuple[List[int], int]:
        """(LLM tokens of the completed words, number of labels belonging to them)."""
        key = (int(final),) + tuple(labels)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        words, tail = self.am_units.split_completed(labels, final=final)
        n_labels = len(labels)
        if tail:  # the unfinished word starts at its first non-special label
            seen = 0
            for pos in range(len(labels) - 1, -1, -1):
                if int(labels[pos]) not in self.am_units.special_ids:
                    seen += 1
                    if seen == len(tail):
                        n_labels = pos
                        break
        out = (list(self.encoder.encode_words(words, first_index=0)), n_labels)
        if len(self._cache) > 200000:
            self._cache.clear()
        self._cache[key] = out
        return out

    def text(self, labels: Sequence[int]) -> str:
        return self.am_units.ids_to_text(labels)


@dataclasses.dataclass(frozen=True)
class _Consumed:
    """What a hypothesis has fed to the LLM: its row in an LLM state, labels and tokens consumed."""

    state: LLMState
    row: int
    n_lab: int = 0
    n_tok: int = 0


class DelayedLLMScorer(FrameScorer):
    """Scores the completed words of all hypotheses every ``delay`` frames in one cached LLM call, and all words +
    EOS of the final beams of utterances that ended since the last call in the same call (or, after the last
    frame of all utterances, in one last call); records "lm" and "prior" (of the consumed labels).

    :param llm_scorer: the LLM
    :param converter: ``(labels, final) -> (LLM tokens of consumable words, consumed labels)``
    :param delay: frames between LLM calls (None: only at the end)
    :param log_prior: [V] label log-prior (None: zero)
    :param prune_to: after each call, keep this many hypotheses of each running beam (ranked by the search's total
        with ``prior_scale`` and ``length_reward``); None: keep the beam as the search pruned it

    With a :class:`SameUnitsConverter` the first label a hypothesis emits after a call is scored at once, from the
    next-token distribution that call already computed (no extra call; the next call adds the same score exactly
    once), so that the pruning between calls sees it.
    """

    def __init__(self, llm_scorer: LLMScorer, converter, *, lm_scale: float, delay: Optional[int],
                 log_prior: Optional[torch.Tensor], prune_to: Optional[int] = None, prior_scale: float = 0.0,
                 length_reward: float = 0.0):
        if delay is not None and delay < 1:
            raise ValueError(f"delay must be >= 1 frame or None (only at the end), got {delay}")
        self.llm, self.converter, self.lm_scale, self.delay = llm_scorer, converter, lm_scale, delay
        self.prune_to, self.prior_scale, self.length_reward = prune_to, prior_scale, length_reward
        self.lookahead = isinstance(converter, SameUnitsConverter)  # labels are tokens: the next one is known
        self.prior = None if log_prior is None else log_prior.detach().double().cpu().tolist()
        self._ended: List[Hypothesis] = []  # final beams whose words and EOS are still to be scored

    def start(self, utt_ids: torch.Tensor, roots: List[Hypothesis]) -> None:
        state = self.llm.start(torch.arange(len(roots)))
        self._ended = []
        for r, h in enumerate(roots):
            h.user_state = _Consumed(state, r)
            h.scores["lm"] = 0.0

    def _first_label_lookahead(self, hyps: List[Hypothesis]) -> None:
        """``extra`` of each hypothesis: its LLM score so far plus that of its first label not yet consumed."""
        for h in hyps:
            consumed = h.user_state
            lm = h.scores["lm"]
            next_lp = consumed.state.next_logprobs
            if len(h.labels) > consumed.n_lab and next_lp is not None:
                lm += float(next_lp[consumed.row, self.converter.token(h.labels[consumed.n_lab])])
            h.extra = self.lm_scale * lm

    def _prior(self, labels: Sequence[int]) -> float:
        return 0.0 if self.prior is None else sum(self.prior[x] for x in labels)

    def update(self, t: int, beams: List[List[Hypothesis]], final: List[bool]) -> None:
        # a final beam no longer changes: it waits for the next call (at the latest the one after the last frame)
        self._ended += [h for beam, last in zip(beams, final) if last for h in beam]
        if not (self.delay is not None and (t + 1) % self.delay == 0 or all(final)):
            if self.lookahead:
                self._first_label_lookahead([h for beam, last in zip(beams, final) if not last for h in beam])
            return
        hyps = [(h, False) for beam, last in zip(beams, final) if not last for h in beam]
        hyps += [(h, True) for h in self._ended]
        self._ended = []
        groups: Dict[int, List[Tuple[Hypothesis, bool]]] = {}
        for h, last in hyps:  # hypotheses of one flush share one LLM state (one call)
            groups.setdefault(id(h.user_state.state), []).append((h, last))
        for group in groups.values():
            pending, consumed = [], []
            for h, last in group:
                toks, n_lab = self.converter(h.labels, last)
                pending.append(toks[h.user_state.n_tok:] + ([self.llm.eos_id] if last else []))
                consumed.append((n_lab, len(toks)))
            rows = torch.tensor([h.user_state.row for h, _ in group], dtype=torch.long)
            sums, state = self.llm.advance(self.llm.select(group[0][0].user_state.state, rows), pending)
            for r, ((h, _), s, (n_lab, n_tok)) in enumerate(zip(group, sums.tolist(), consumed)):
                h.scores["lm"] += s
                h.scores["prior"] += self._prior(h.labels[h.user_state.n_lab:n_lab])
                h.extra = self.lm_scale * h.scores["lm"]
                h.user_state = _Consumed(state, r, n_lab, n_tok)
        if self.prune_to is not None:
            for beam, last in zip(beams, final):
                if not last:
                    beam[:] = best_hypotheses(beam, self.prune_to, {}, self.prior_scale, self.length_reward)


def delayed_fusion_search(
    ctc_logprobs: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    llm_scorer: Optional[LLMScorer],
    converter: Callable[[Tuple[int, ...], bool], Tuple[List[int], int]],
    blank: int,
    beam_size: int = 8,
    label_topk: Optional[int] = None,
    lm_scale: float = 0.5,
    log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0,
    length_reward: float = 0.0,
    delay: Optional[int] = DEFAULT_DELAY,
    delayed_beam_size: Optional[int] = None,
    labels_to_text: Optional[Callable[[Sequence[int]], str]] = None,
    nbest: int = 1,
    stats: Optional[SearchStats] = None,
) -> List[List[dict]]:
    """Time-synchronous CTC prefix beam search with delayed LLM scoring, batched over utterances.

    :param ctc_logprobs: [B, T, V] (or [T, V]) CTC log-probs. :param lengths: [B] frames (None: all T).
    :param llm_scorer: the LLM (None or ``lm_scale=0``: plain CTC prefix search).
    :param converter: ``(labels, final) -> (LLM tokens of consumable words, consumed labels)``, e.g.
        :class:`WordConverter` or :class:`SameUnitsConverter`; tokens must extend as labels extend.
    :param delay: score pending words every ``delay`` frames (1, 5, 10, 20, ...); None: only at the end.
    :param delayed_beam_size: hypotheses kept between LLM calls (default ``beam_size``); each call prunes to
        ``beam_size``, so the LLM judges hypotheses that CTC alone would have pruned since the last call.
    :param label_topk: labels tried per hypothesis and frame (default ``beam_size``).
    Returns per utterance the N-best list (shared N-best entry format), best first.
    """
    if llm_scorer is None or lm_scale == 0.0:
        return ctc_search_without_llm(ctc_logprobs, lengths, blank=blank, beam_size=beam_size, label_topk=label_topk,
                                      log_prior=log_prior, prior_scale=prior_scale, length_reward=length_reward,
                                      labels_to_text=labels_to_text, nbest=nbest, stats=stats)
    if delayed_beam_size is not None and delayed_beam_size < beam_size:
        raise ValueError(f"delayed_beam_size ({delayed_beam_size}) must be >= beam_size ({beam_size})")
    wide = delayed_beam_size is not None and delayed_beam_size > beam_size
    scorer = DelayedLLMScorer(llm_scorer, converter, lm_scale=lm_scale, delay=delay, log_prior=log_prior,
                              prune_to=beam_size if wide else None, prior_scale=prior_scale,
                              length_reward=length_reward)
    return run_ctc_fusion(ctc_logprobs, lengths, llm_scorer, stats, blank=blank,
                          beam_size=delayed_beam_size if wide else beam_size, label_topk=label_topk or beam_size,
                          labels_to_text=labels_to_text, nbest=nbest, prior_scale=prior_scale,
                          length_reward=length_reward, frame_scorers=[scorer])
