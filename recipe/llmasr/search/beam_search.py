"""Label-synchronous beam search over weighted LabelScorers (AED, AED+CTC, speech LLM, speech LLM+CTC).

Scores are summed log-probabilities ``sum_name scale_name * score_name``; ended hypotheses are ranked by
``score / length ** length_norm_exponent`` (length = labels without BOS, with EOS if ``length_norm_counts_eos``, at
least 1; exponent 0 = off).

Each step follows ESPnet's ``BatchBeamSearch``: the full scorers score all labels of every running hypothesis;
a pre-beam of the ``pre_beam_size`` best labels per hypothesis (by the weighted full scores) is scored by the
partial scorers (the CTC prefix scorer), and EOS is always among the candidates (``eos_always_scored``), so the
CTC prefix scorer can end a hypothesis the decoder would not have ranked into the pre-beam. The ``beam_size``
best candidates of an utterance fill its beam; those ending in EOS leave it (so fewer hypotheses run on).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer, PartialLabelScorer

Scorers = Dict[str, Tuple[LabelScorer, float]]


def beam_search(
    scorers: Scorers,
    batch_size: int,
    beam_size: int,
    bos: int,
    eos: int,
    max_len: int,
    length_norm_exponent: float = 0.0,
    *,
    partial_scorers: Optional[Dict[str, Tuple[PartialLabelScorer, float]]] = None,
    pre_beam_size: Optional[int] = None,
    nbest: Optional[int] = None,
    eos_always_scored: bool = True,
    length_norm_counts_eos: bool = False,
) -> List[List[dict]]:
    """Returns per utterance a list (best first, at most ``nbest`` = beam_size) of hypotheses
    ``{"labels": [ids without BOS/EOS], "scores": {name: unscaled summed log-prob, "length": int}, "score": float}``.

    :param scorers: full scorers (score over all V labels), name -> (scorer, scale)
    :param partial_scorers: scorers only evaluated on the ``pre_beam_size`` best candidates of the full scorers
        (e.g. the CTC prefix scorer); their EOS score is the full-sequence score.
    :param pre_beam_size: candidates per hypothesis for the partial scorers (default 1.5 * beam_size)
    :param eos_always_scored: with partial scorers, EOS is a candidate of every hypothesis even outside the
        pre-beam (as ESPnet's BatchBeamSearch); False = EOS only when the full scorers rank it into the pre-beam
    :param nbest: hypotheses returned per utterance
    :param length_norm_counts_eos: the length of the normalisation counts EOS (the paper's L), else labels only

    The search of an utterance stops when no hypothesis runs on, at ``max_len`` (EOS forced and scored), or
    early once ``beam_size`` hypotheses ended and no running one can still beat them; the early stop is exact
    only if scores never rise (all scales >= 0, all scorers log-probs, no length normalisation), so it is
    used only then; with length normalisation the search stops after ``2 * beam_size`` ended hypotheses.
    """
    eos_len = 1 if length_norm_counts_eos else 0
    partial_scorers = partial_scorers or {}
    if not scorers:
        raise ValueError("beam_search needs at least one full scorer")
    nbest = nbest or beam_size
    pre_beam = pre_beam_size or max(int(1.5 * beam_size), beam_size + 1)
    all_scorers = {**scorers, **partial_scorers}
    names = list(all_scorers)
    # scores can only fall along a hypothesis: then a running one that is already worse than the beam_size-th
    # ended one can never overtake it
    monotone = length_norm_exponent == 0.0 and all(
        w >= 0 and getattr(s, "scores_are_log_probs", True) for s, w in all_scorers.values())
    dev = None
    # rows: one per (utterance, hypothesis); starts with one row per utterance
    batch_idx = torch.arange(batch_size)  # [N]
    states = {n: s.initial_state(batch_idx) for n, (s, _) in all_scorers.items()}
    labels = torch.full((batch_size,), bos, dtype=torch.long)  # [N] last label
    hist: List[List[int]] = [[] for _ in range(batch_size)]
    total = torch.zeros(batch_size)  # [N] weighted
    per = {n: torch.zeros(batch_size) for n in names}  # [N] unscaled
    ended: List[List[dict]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size

    for step in range(max_len):
        if labels.numel() == 0:
            break
        cand, cand_lp, new_states, dev = _pre_beam(scorers, partial_scorers, states, labels, pre_beam, eos,
                                                   eos_always_scored)
        # cand [N, K] candidate labels, cand_lp name -> [N, K] unscaled scores
        cand_total = total.unsqueeze(1) + sum(w * cand_lp[n] for n, (s, w) in all_scorers.items())  # [N, K]
        K = cand.shape[1]
        keep_rows: List[int] = []
        keep_cols: List[int] = []
        for b in range(batch_size):
            if done[b]:
                continue
            rows = (batch_idx == b).nonzero().flatten()
            if rows.numel() == 0:
                done[b] = True
                continue
            kr, kc = _main_beam(b, rows, cand, cand_total, cand_lp, per, hist, ended, names, beam_size, eos,
                                length_norm_exponent, eos_len)
            done[b] = _can_stop(ended[b], [float(cand_total[r, c]) for r, c in zip(kr, kc)], beam_size,
                                monotone, length_norm_exponent)
            if not done[b]:
                keep_rows += kr
                keep_cols += kc
        if not keep_rows:
            labels = labels[:0]
            break
        ri = torch.tensor(keep_rows, dtype=torch.long)
        ci = torch.tensor(keep_cols, dtype=torch.long)
        labels = cand[ri, ci]
        total = cand_total[ri, ci]
        per = {n: per[n][ri] + cand_lp[n][ri, ci] for n in names}
        hist = [hist[r] + [int(cand[r, c])] for r, c in zip(keep_rows, keep_cols)]
        batch_idx = batch_idx[ri]
        sel = ri.to(dev)
        states = {n: scorers[n][0].select(new_states[n], sel) for n in scorers}
        # partial scorers select by (row, candidate column) -> flat index row * K + col
        for n, (s, _) in partial_scorers.items():
            states[n] = s.select(new_states[n], (ri * K + ci).to(dev))
    if labels.numel():  # hypotheses still running at max_len: EOS is forced, with its score from every scorer
        n_rows = labels.shape[0]
        eos_lp = {n: s.score(states[n], labels)[0].float().cpu()[:, eos] for n, (s, _) in scorers.items()}
        eos_cand = torch.full((n_rows, 1), eos, dtype=torch.long, device=dev)
        for n, (s, _) in partial_scorers.items():
            eos_lp[n] = s.score_partial(states[n], labels, eos_cand)[0].float().cpu()[:, 0]
        total = total + sum(w * eos_lp[n] for n, (s, w) in all_scorers.items())
        per = {n: per[n] + eos_lp[n] for n in names}
    for i in range(labels.shape[0]):
        b = int(batch_idx[i])
        L = max(len(hist[i]) + eos_len, 1)
        scores = {n: float(per[n][i]) for n in names}
        scores["length"] = len(hist[i])
        ended[b].append({"labels": list(hist[i]), "scores": scores,
                         "score": float(total[i]) / (L ** length_norm_exponent)})
    out = []
    for b in range(batch_size):
        hyps = sorted(ended[b], key=lambda h: -h["score"])[:nbest]
        if not hyps:
            logging.warning("beam_search: utterance %d has no hypothesis", b)
        out.append(hyps)
    return out


def _pre_beam(scorers: Scorers, partial_scorers, states, labels: torch.Tensor, pre_beam: int, eos: int,
              eos_always_scored: bool):
    """Scores the next label of every row: full scorers over all V labels; with partial scorers only the
    ``pre_beam`` best labels (by the weighted full scores) plus EOS are candidates and get partial scores.
    Returns (candidates [N, K], name -> unscaled scores [N, K] on the CPU, new states, device)."""
    full_lp = {}
    new_states = {}
    for n, (s, w) in scorers.items():
        lp, new_states[n] = s.score(states[n], labels)  # [N, V]
        dev = lp.device
        full_lp[n] = lp.float().cpu()
    V = next(iter(full_lp.values())).shape[-1]
    N = labels.shape[0]
    if not partial_scorers or pre_beam >= V:
        cand = torch.arange(V).unsqueeze(0).expand(N, V)  # [N, V]
        cand_lp = dict(full_lp)
        if partial_scorers:
            for n, (s, w) in partial_scorers.items():
                pl, new_states[n] = s.score_partial(states[n], labels, cand.to(dev))  # [N, V]
                cand_lp[n] = pl.float().cpu()
        return cand, cand_lp, new_states, dev
    weighted = sum(w * full_lp[n] for n, (s, w) in scorers.items())  # [N, V]
    cand = weighted.topk(pre_beam, dim=-1).indices  # [N, K]
    extra = None
    if eos_always_scored:
        # one more column holding EOS; where EOS is already in the pre-beam that column is a dead duplicate
        has_eos = (cand == eos).any(1)  # [N]
        cand = torch.cat([cand, torch.full((N, 1), eos, dtype=torch.long)], 1)  # [N, K+1]
        extra = has_eos
    cand_lp = {n: full_lp[n].gather(1, cand) for n in scorers}  # [N, K]
    for n, (s, w) in partial_scorers.items():
        pl, new_states[n] = s.score_partial(states[n], labels, cand.to(dev))  # [N, K]
        cand_lp[n] = pl.float().cpu()
    if extra is not None and bool(extra.any()):  # the dead duplicates can never be chosen
        first = next(iter(scorers))
        cand_lp[first][:, -1] = cand_lp[first][:, -1].masked_fill(extra, float("-inf"))
    return cand, cand_lp, new_states, dev


def _main_beam(b: int, rows: torch.Tensor, cand: torch.Tensor, cand_total: torch.Tensor, cand_lp, per, hist,
               ended: List[List[dict]], names: List[str], beam_size: int, eos: int, length_norm_exponent: float,
               eos_len: int = 0
               ) -> Tuple[List[int], List[int]]:
    """The ``beam_size`` best candidates of utterance ``b`` (rows ``rows``): those ending in EOS are moved to
    ``ended[b]``, the others are returned as (rows, candidate columns) to run on."""
    K = cand.shape[1]
    flat = cand_total[rows].flatten()  # [R*K]
    order = flat.argsort(descending=True)[:beam_size].tolist()
    keep_rows: List[int] = []
    keep_cols: List[int] = []
    for o in order:
        sc = float(flat[o])
        if sc == float("-inf"):
            break
        r, c = int(rows[o // K]), o % K
        if int(cand[r, c]) == eos:
            L = max(len(hist[r]) + eos_len, 1)
            scores = {n: float(per[n][r] + cand_lp[n][r, c]) for n in names}
            scores["length"] = len(hist[r])
            ended[b].append({"labels": list(hist[r]), "scores": scores, "score": sc / (L ** length_norm_exponent)})
        else:
            keep_rows.append(r)
            keep_cols.append(c)
    return keep_rows, keep_cols


def _can_stop(ended: List[dict], running: List[float], beam_size: int, monotone: bool,
              length_norm_exponent: float) -> bool:
    """Whether the search of one utterance may stop (see :func:`beam_search`)."""
    if not running:
        return True
    if len(ended) < beam_size:
        return False
    if monotone:
        kth = sorted((h["score"] for h in ended), reverse=True)[beam_size - 1]
        return max(running) < kth
    return length_norm_exponent != 0.0 and len(ended) >= 2 * beam_size
