"""Delayed fusion: a CTC acoustic model and an LLM with different units in one time-synchronous search.

Each hypothesis keeps its CTC, LM and prior scores. Every ``delay`` frames (or only at the last frame)
the completed words of every hypothesis are converted to LLM tokens and all pending tokens of all
hypotheses are scored in one KV-cached LLM call; the label prior is subtracted for the labels of
those consumed words only, so LM and prior enter together. The last frame flushes all words and EOS.

The same loop, with the LLM's next-token distribution added when a label is emitted, is label-wise
fusion (AM and LLM share units); :mod:`llmasr.search.labelwise_fusion` exposes it.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from llmasr.search.llm_scorer import LLMScorer

NEG_INF = float("-inf")


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for floats, safe for -inf."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class SameUnitsConverter:
    """AM labels are LLM tokens (possibly through a map): every label is consumed at once."""

    def __init__(self, label_to_token: Optional[Sequence[int]] = None):
        self.label_to_token = None if label_to_token is None else [int(x) for x in label_to_token]

    def __call__(self, labels: Tuple[int, ...], final: bool) -> Tuple[List[int], int]:
        """Returns (LLM tokens of the consumable labels, number of consumed labels)."""
        if self.label_to_token is None:
            return list(labels), len(labels)
        return [self.label_to_token[x] for x in labels], len(labels)


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


@dataclasses.dataclass
class _Hyp:
    labels: Tuple[int, ...]
    b: float  # CTC log-prob of the prefix, paths ending in blank
    nb: float  # ... ending in the last label
    lm: float = 0.0  # LLM log-prob of the consumed tokens (unscaled)
    prior: float = 0.0  # log prior of the consumed labels (unscaled)
    n_lab: int = 0  # labels whose LM and prior are included
    n_tok: int = 0  # LLM tokens consumed (after BOS)
    row: int = 0  # row in the LLM state
    new_label: Optional[int] = None  # label added at this frame (label-wise: still to be fed to the LLM)

    def ctc(self) -> float:
        return _lae(self.b, self.nb)


@dataclasses.dataclass
class SearchStats:
    """LLM calls and tokens of one search (for benchmarks)."""

    llm_forward_calls: int = 0
    llm_forward_tokens: int = 0
    frames: int = 0


def _ctc_fusion_search_single(
    ctc_logprobs: torch.Tensor, *, blank: int, beam_size: int, label_topk: Optional[int],
    llm_scorer: Optional[LLMScorer], lm_scale: float, log_prior: Optional[torch.Tensor], prior_scale: float,
    length_reward: float, labelwise: bool, delay: Optional[int], converter, labels_to_text, nbest: int,
) -> List[dict]:
    """One utterance. ``ctc_logprobs`` [T, V]."""
    num_frames, vocab = ctc_logprobs.shape
    lp_all = ctc_logprobs.float().cpu()
    prior = log_prior.float().cpu() if log_prior is not None else torch.zeros(vocab)
    prior_list = prior.tolist()
    use_lm = llm_scorer is not None and lm_scale != 0.0
    if not use_lm:
        labelwise, delay = False, None
    if delay is not None and delay < 1:
        raise ValueError(f"delay must be >= 1 frame or None (only at the end), got {delay}")
    k = min(label_topk or beam_size, vocab - 1)

    hyps = [_Hyp(labels=(), b=0.0, nb=NEG_INF)]
    state = llm_scorer.start(torch.zeros(1, dtype=torch.long)) if use_lm else None

    def total(h: _Hyp) -> float:
        return h.ctc() + lm_scale * h.lm - prior_scale * h.prior + length_reward * len(h.labels)

    for t in range(num_frames):
        lp = lp_all[t]  # [V]
        lpl = lp.tolist()
        nh = len(hyps)
        ctc_tot = torch.tensor([h.ctc() for h in hyps])  # [B]
        ext = ctc_tot[:, None] + lp[None, :]  # [B, V] CTC log-prob of prefix + c
        for i, h in enumerate(hyps):  # a repeated label needs a blank in between
            if h.labels:
                ext[i, h.labels[-1]] = h.b + lpl[h.labels[-1]]
        ext[:, blank] = NEG_INF
        fused = ext.clone()
        lm_lp = None
        if labelwise:
            lm_lp = llm_scorer.to_label_space(state.next_logprobs).float().cpu()  # [B, V]
            fused += lm_scale * lm_lp - prior_scale * prior[None, :]
        base = torch.tensor([lm_scale * h.lm - prior_scale * h.prior + length_reward * (len(h.labels) + 1)
                             for h in hyps])
        top_v, top_i = (fused + base[:, None]).topk(k, dim=1)  # [B, K] label pruning per hypothesis

        cands: Dict[Tuple[int, ...], _Hyp] = {}
        for i, h in enumerate(hyps):  # the prefix stays: blank, or the last label repeated
            nb = h.nb + lpl[h.labels[-1]] if h.labels else NEG_INF
            cands[h.labels] = dataclasses.replace(h, b=h.ctc() + lpl[blank], nb=nb, row=i, new_label=None)
        top_i_l, top_v_l = top_i.tolist(), top_v.tolist()
        for i, h in enumerate(hyps):
            for j in range(k):
                if top_v_l[i][j] == NEG_INF:
                    continue
                c = top_i_l[i][j]
                key = h.labels + (c,)
                nb = float(ext[i, c])
                if labelwise:
                    new = _Hyp(labels=key, b=NEG_INF, nb=nb, lm=h.lm + float(lm_lp[i, c]),
                               prior=h.prior + prior_list[c], n_lab=h.n_lab + 1, n_tok=h.n_tok, row=i, new_label=c)
                else:
                    new = dataclasses.replace(h, labels=key, b=NEG_INF, nb=nb, row=i, new_label=c)
                old = cands.get(key)
                if old is None:
                    cands[key] = new
                else:  # recombination: same label sequence, keep the most consumed representative
                    merged_nb = _lae(old.nb, nb)
                    rep = old if (old.n_lab, old.n_tok) >= (new.n_lab, new.n_tok) else new
                    cands[key] = dataclasses.replace(rep, b=old.b, nb=merged_nb)
        kept = sorted(cands.values(), key=total, reverse=True)[:beam_size]

        if use_lm:
            state = llm_scorer.select(state, torch.tensor([h.row for h in kept], dtype=torch.long))
            last = t == num_frames - 1
            if labelwise:
                new_toks = [[int(llm_scorer.labels_to_tokens(torch.tensor([h.new_label]))[0])]
                            if h.new_label is not None else [] for h in kept]
                _, state = llm_scorer.advance(state, new_toks)
                if last:
                    eos = llm_scorer.final_score(state).tolist()
                    for h, e in zip(kept, eos):
                        h.lm += e
            elif last or (delay is not None and (t + 1) % delay == 0):
                pending, n_labs = [], []
                for h in kept:
                    toks, n_lab = converter(h.labels, last)
                    pending.append(toks[h.n_tok :] + ([llm_scorer.eos_id] if last else []))
                    n_labs.append((n_lab, len(toks)))
                sums, state = llm_scorer.advance(state, pending)
                for h, s, (n_lab, n_tok) in zip(kept, sums.tolist(), n_labs):
                    h.lm += s
                    h.prior += sum(prior_list[x] for x in h.labels[h.n_lab : n_lab])
                    h.n_lab, h.n_tok = n_lab, n_tok
        for i, h in enumerate(kept):
            h.row, h.new_label = i, None
        hyps = kept

    if not use_lm:  # prior on all labels (pure CTC search with prior correction)
        for h in hyps:
            h.prior = sum(prior_list[x] for x in h.labels)
            h.n_lab = len(h.labels)
    hyps = sorted(hyps, key=total, reverse=True)[:nbest]
    out = []
    for h in hyps:
        ctc = h.ctc()
        out.append({
            "text": labels_to_text(h.labels) if labels_to_text is not None else "",
            "labels": list(h.labels),
            "scores": {"am": ctc, "ctc": ctc, "lm": h.lm, "prior": h.prior, "length": len(h.labels)},
            "score": total(h),
        })
    return out


def _batched(ctc_logprobs: torch.Tensor, lengths: Optional[torch.Tensor], llm_scorer: Optional[LLMScorer],
             stats: Optional[SearchStats], **kwargs) -> List[List[dict]]:
    if ctc_logprobs.dim() == 2:
        ctc_logprobs = ctc_logprobs[None]
    n = ctc_logprobs.shape[0]
    if lengths is None:
        lengths = torch.full((n,), ctc_logprobs.shape[1], dtype=torch.long)
    calls0 = llm_scorer.num_forward_calls if llm_scorer is not None else 0
    toks0 = llm_scorer.num_forward_tokens if llm_scorer is not None else 0
    results = []
    for b in range(n):
        results.append(_ctc_fusion_search_single(ctc_logprobs[b, : int(lengths[b])], llm_scorer=llm_scorer,
                                                 **kwargs))
    if stats is not None:
        stats.frames += int(lengths.sum())
        if llm_scorer is not None:
            stats.llm_forward_calls += llm_scorer.num_forward_calls - calls0
            stats.llm_forward_tokens += llm_scorer.num_forward_tokens - toks0
    return results


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
    delay: Optional[int] = 1,
    labels_to_text: Optional[Callable[[Sequence[int]], str]] = None,
    nbest: int = 1,
    stats: Optional[SearchStats] = None,
) -> List[List[dict]]:
    """Time-synchronous CTC prefix beam search with delayed LLM scoring, per utterance.

    :param ctc_logprobs: [B, T, V] (or [T, V]) CTC log-probs. :param lengths: [B] frames.
    :param llm_scorer: the LLM (None or ``lm_scale=0``: plain CTC prefix search).
    :param converter: ``(labels, final) -> (LLM tokens of consumable words, consumed labels)``, e.g.
        :class:`WordConverter` or :class:`SameUnitsConverter`; tokens must extend as labels extend.
    :param delay: score pending words every ``delay`` frames (1, 5, 10, 20, ...); None: only at the end.
    :param label_topk: labels tried per hypothesis and frame (default ``beam_size``).
    Returns per utterance the N-best list (shared N-best entry format), best first.
    """
    return _batched(ctc_logprobs, lengths, llm_scorer, stats, blank=blank, beam_size=beam_size,
                    label_topk=label_topk, lm_scale=lm_scale, log_prior=log_prior, prior_scale=prior_scale,
                    length_reward=length_reward, labelwise=False, delay=delay, converter=converter,
                    labels_to_text=labels_to_text, nbest=nbest)
