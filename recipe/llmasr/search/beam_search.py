"""Label-synchronous beam search over weighted LabelScorers (AED, AED+CTC, speech LLM, speech LLM+CTC).

Scores are summed log-probabilities ``sum_name scale_name * score_name``; ended hypotheses are ranked by
``score / length ** length_norm_exponent`` (length = labels without BOS, with EOS if ``length_norm_counts_eos``, at
least 1; exponent 0 = off).
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
    length_norm_counts_eos: bool = False,
) -> List[List[dict]]:
    """Returns per utterance a list (best first, at most ``nbest`` = beam_size) of hypotheses
    ``{"labels": [ids without BOS/EOS], "scores": {name: unscaled summed log-prob, "length": int}, "score": float}``.

    :param scorers: full scorers (score over all V labels), name -> (scorer, scale)
    :param partial_scorers: scorers only evaluated on the ``pre_beam_size`` best candidates of the full scorers
        (e.g. the CTC prefix scorer); their EOS score is the full-sequence score.
    :param pre_beam_size: candidates per hypothesis for the partial scorers (default 1.5 * beam_size)
    :param length_norm_counts_eos: the length of the normalisation counts EOS (the paper's L), else labels only
    """
    eos_len = 1 if length_norm_counts_eos else 0
    partial_scorers = partial_scorers or {}
    if not scorers:
        raise ValueError("beam_search needs at least one full scorer")
    nbest = nbest or beam_size
    pre_beam = pre_beam_size or max(int(1.5 * beam_size), beam_size + 1)
    all_scorers = {**scorers, **partial_scorers}
    names = list(all_scorers)
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
        full_lp = {}
        new_states = {}
        for n, (s, w) in scorers.items():
            lp, new_states[n] = s.score(states[n], labels)  # [N, V]
            full_lp[n] = lp.float()
        dev = next(iter(full_lp.values())).device
        V = next(iter(full_lp.values())).shape[-1]
        weighted = sum(w * full_lp[n].cpu() for n, (s, w) in scorers.items())  # [N, V]
        if partial_scorers:
            k = min(pre_beam, V)
            cand = weighted.topk(k, dim=-1).indices  # [N, K]
            cand_lp = {n: full_lp[n].cpu().gather(1, cand) for n in scorers}  # [N, K]
            for n, (s, w) in partial_scorers.items():
                pl, new_states[n] = s.score_partial(states[n], labels, cand.to(dev))  # [N, K]
                cand_lp[n] = pl.float().cpu()
        else:
            cand = torch.arange(V).unsqueeze(0).expand(labels.shape[0], V)  # [N, V]
            cand_lp = {n: full_lp[n].cpu() for n in scorers}
        cand_total = total.unsqueeze(1) + sum(w * cand_lp[n] for n, (s, w) in all_scorers.items())  # [N, K]
        K = cand.shape[1]
        keep_rows: List[int] = []
        keep_cols: List[int] = []
        # choose per utterance
        for b in range(batch_size):
            if done[b]:
                continue
            rows = (batch_idx == b).nonzero().flatten()
            if rows.numel() == 0:
                done[b] = True
                continue
            flat = cand_total[rows].flatten()  # [R*K]
            order = flat.argsort(descending=True)
            kept = 0
            for o in order.tolist():
                r, c = rows[o // K].item(), o % K
                lab = int(cand[r, c])
                sc = float(flat[o])
                if sc == float("-inf"):
                    break
                if lab == eos:
                    if kept < beam_size:  # EOS within the current beam
                        L = max(len(hist[r]) + eos_len, 1)
                        scores = {n: float(per[n][r] + cand_lp[n][r, c]) for n in names}
                        scores["length"] = len(hist[r])
                        ended[b].append({"labels": list(hist[r]), "scores": scores,
                                         "score": sc / (L ** length_norm_exponent)})
                        kept += 1
                    continue
                keep_rows.append(r)
                keep_cols.append(c)
                kept += 1
                if kept >= beam_size:
                    break
            if len(ended[b]) >= beam_size:
                # stop once no running hypothesis can still beat the worst kept ended one (without length norm)
                best_ended = sorted(h["score"] for h in ended[b])[-beam_size]
                running = [cand_total[r, c].item() for r, c in zip(keep_rows, keep_cols) if batch_idx[r] == b]
                if length_norm_exponent == 0.0 and (not running or max(running) < best_ended):
                    done[b] = True
                elif len(ended[b]) >= 2 * beam_size:
                    done[b] = True
            if done[b]:
                keep = [(r, c) for r, c in zip(keep_rows, keep_cols) if batch_idx[r] != b]
                keep_rows = [r for r, _ in keep]
                keep_cols = [c for _, c in keep]
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
        if partial_scorers:
            # partial scorers select by (row, candidate column) -> pass flat index row * K + col
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
