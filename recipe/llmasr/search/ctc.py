"""CTC greedy search and time-synchronous CTC prefix beam search with label-wise external scorers.

The beam search recombines equal label sequences (blank / non-blank prefix probabilities), adds
``scale * log p_scorer(label | prefix)`` when a hypothesis emits a new label (scorers are only called for
hypotheses that got a new label), subtracts ``prior_scale * log_prior[label]`` per emitted label
(label-wise prior correction, recorded as score "prior" = sum log prior), and calls an optional
``hook(t, hyps_per_utt)`` every ``hook_interval`` frames (for delayed fusion: hooks may set
``hyp.scores[...]``, ``hyp.extra`` (added to the total) and ``hyp.user_state``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer

NEG = float("-inf")


def _lae(a: float, b: float) -> float:
    if a == NEG:
        return b
    if b == NEG:
        return a
    m = max(a, b)
    return m + float(torch.log1p(torch.exp(torch.tensor(-abs(a - b)))))


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> List[List[int]]:
    """Best path per utterance: argmax per frame [B, T], merge repeats, drop blanks."""
    best = log_probs.argmax(-1).cpu()  # [B, T]
    out = []
    for b in range(best.shape[0]):
        seq, prev = [], None
        for lab in best[b, : int(lengths[b])].tolist():
            if lab != prev and lab != blank:
                seq.append(lab)
            prev = lab
        out.append(seq)
    return out


@dataclass
class Hypothesis:
    """A CTC prefix hypothesis: labels, log p_blank / p_nonblank of the prefix, per-source scores, user slot."""

    labels: Tuple[int, ...]
    pb: float = NEG
    pnb: float = NEG
    scores: Dict[str, float] = field(default_factory=dict)  # unscaled: scorer names, "prior"
    extra: float = 0.0  # weighted score added by a hook (e.g. delayed LM fusion)
    user_state: Any = None
    # scorer name -> (batched state object, row, next-label log-probs [V])
    scorer_cache: Dict[str, Tuple[Any, int, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def ctc(self) -> float:
        return _lae(self.pb, self.pnb)


def _total(h: Hypothesis, weights: Dict[str, float], prior_scale: float, length_reward: float) -> float:
    return (h.ctc + sum(w * h.scores.get(n, 0.0) for n, w in weights.items())
            - prior_scale * h.scores.get("prior", 0.0) + length_reward * len(h.labels) + h.extra)


def ctc_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    *,
    blank: int,
    beam_size: int,
    scorers: Optional[Dict[str, Tuple[LabelScorer, float]]] = None,
    bos: Optional[int] = None,
    eos: Optional[int] = None,
    log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0,
    length_reward: float = 0.0,
    label_topk: Optional[int] = None,
    hook: Optional[Callable[[int, List[List[Hypothesis]]], None]] = None,
    hook_interval: int = 1,
    nbest: Optional[int] = None,
) -> List[List[dict]]:
    """CTC prefix beam search over ``log_probs`` [B, T, V] (log-softmax) with ``lengths`` [B].

    :param scorers: label-wise external scorers name -> (LabelScorer, scale), label ids = CTC ids;
        they get ``bos`` first; at the end ``scale * log p(eos | labels)`` is added when ``eos`` is given
    :param log_prior: [V] log label prior; ``prior_scale * log_prior[c]`` is subtracted per emitted label c
    :param label_topk: per frame only the top-k non-blank labels may be emitted (None = all)
    :returns: per utterance up to ``nbest`` hypotheses best first, as dicts
        ``{"labels", "scores": {"ctc", <scorer names>, "prior", "length"}, "score"}``
    """
    scorers = scorers or {}
    weights = {n: w for n, (_, w) in scorers.items()}
    B, T, V = log_probs.shape
    x = log_probs.float().cpu()
    if scorers and bos is None:
        raise ValueError("ctc_beam_search with scorers needs bos")
    beams: List[List[Hypothesis]] = []
    init_cache: Dict[str, Tuple[Any, torch.Tensor]] = {}
    for n, (s, _) in scorers.items():
        st = s.initial_state(torch.arange(B))
        lp, st = s.score(st, torch.full((B,), bos, dtype=torch.long))
        init_cache[n] = (st, lp.float().cpu())
    for b in range(B):
        h = Hypothesis((), pb=0.0, scores={n: 0.0 for n in scorers} | {"prior": 0.0})
        for n in scorers:
            st, lp = init_cache[n]
            h.scorer_cache[n] = (st, b, lp[b])
        beams.append([h])
    lp_prior = log_prior.float().cpu() if log_prior is not None else None

    for t in range(T):
        for b in range(B):
            if t >= int(lengths[b]):
                continue
            xt = x[b, t]  # [V]
            if label_topk is not None and label_topk < V:
                cand = [c for c in xt.topk(min(label_topk + 1, V)).indices.tolist() if c != blank][:label_topk]
            else:
                cand = [c for c in range(V) if c != blank]
            new: Dict[Tuple[int, ...], Hypothesis] = {}

            def get(labels, parent, c=None):
                h = new.get(labels)
                if h is None:
                    if c is None:
                        h = Hypothesis(labels, scores=dict(parent.scores), extra=parent.extra,
                                       user_state=parent.user_state, scorer_cache=parent.scorer_cache)
                    else:
                        sc = dict(parent.scores)
                        for n in scorers:
                            sc[n] += float(parent.scorer_cache[n][2][c])
                        if lp_prior is not None:
                            sc["prior"] += float(lp_prior[c])
                        h = Hypothesis(labels, scores=sc, extra=parent.extra, user_state=parent.user_state,
                                       scorer_cache={"__parent__": (parent, c, None)} if scorers else {})
                    new[labels] = h
                return h

            for h in beams[b]:
                p = h.ctc
                hb = get(h.labels, h)
                hb.pb = _lae(hb.pb, p + float(xt[blank]))
                last = h.labels[-1] if h.labels else None
                if last is not None:
                    hb.pnb = _lae(hb.pnb, h.pnb + float(xt[last]))
                for c in cand:
                    hn = get(h.labels + (c,), h, c)
                    src = h.pb if c == last else p
                    hn.pnb = _lae(hn.pnb, src + float(xt[c]))
            beams[b] = sorted((hh for hh in new.values() if hh.ctc > NEG), key=lambda hh: -_total(hh, weights, prior_scale, length_reward))[:beam_size]
        _update_scorers(beams, scorers)
        if hook is not None and (t + 1) % hook_interval == 0:
            hook(t, beams)
    out = []
    for b in range(B):
        res = []
        for h in beams[b]:
            scores = dict(h.scores)
            total = _total(h, weights, prior_scale, length_reward)
            if eos is not None:
                for n, w in weights.items():
                    e = float(h.scorer_cache[n][2][eos])
                    scores[n] += e
                    total += w * e
            scores["ctc"] = h.ctc
            scores["length"] = len(h.labels)
            res.append({"labels": list(h.labels), "scores": scores, "score": total})
        res.sort(key=lambda r: -r["score"])
        out.append(res[: (nbest or beam_size)])
    return out


def _update_scorers(beams: List[List[Hypothesis]], scorers: Dict[str, Tuple[LabelScorer, float]]) -> None:
    """Scores the hypotheses that got a new label, one batched call per parent state object."""
    pending = [h for beam in beams for h in beam if "__parent__" in h.scorer_cache]
    if not pending:
        return
    for n, (s, _) in scorers.items():
        groups: Dict[int, List[Hypothesis]] = {}
        for h in pending:
            parent = h.scorer_cache["__parent__"][0]
            groups.setdefault(id(parent.scorer_cache[n][0]), []).append(h)
        for hs in groups.values():
            st0 = hs[0].scorer_cache["__parent__"][0].scorer_cache[n][0]
            rows = torch.tensor([h.scorer_cache["__parent__"][0].scorer_cache[n][1] for h in hs], dtype=torch.long)
            labs = torch.tensor([h.scorer_cache["__parent__"][1] for h in hs], dtype=torch.long)
            lp, st = s.score(s.select(st0, rows), labs)
            lp = lp.float().cpu()
            for i, h in enumerate(hs):
                h.scorer_cache[n] = (st, i, lp[i])
    for h in pending:
        del h.scorer_cache["__parent__"]


def soft_collapse(log_probs: torch.Tensor, lengths: torch.Tensor, *, blank: int,
                  blank_threshold: float = 0.999) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shrinks each run of frames with p(blank) > threshold to one frame and merges runs of frames with the same non-blank argmax
    (keeping the first) so that CTC search runs on fewer frames; returns (log_probs [B, T', V], lengths [B])."""
    B, T, V = log_probs.shape
    keep_all = []
    for b in range(B):
        L = int(lengths[b])
        am = log_probs[b, :L].argmax(-1)
        pb = log_probs[b, :L, blank].exp()
        keep, prev = [], None
        for t in range(L):
            a = int(am[t])
            if float(pb[t]) > blank_threshold:
                if prev != "blank_run":  # keep one frame per run of confident blanks (separates repeats)
                    keep.append(t)
                prev = "blank_run"
                continue
            if a != blank and a == prev:
                continue
            keep.append(t)
            prev = a
        keep_all.append(keep)
    Tn = max(1, max(len(k) for k in keep_all))
    out = torch.zeros(B, Tn, V, dtype=log_probs.dtype)
    out[:, :, blank] = 0.0
    out[:, :, :blank] = NEG
    out[:, :, blank + 1:] = NEG
    for b, k in enumerate(keep_all):
        if k:
            out[b, : len(k)] = log_probs[b, k]
    return out, torch.tensor([len(k) for k in keep_all])
