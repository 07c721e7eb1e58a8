"""CTC greedy search and the one time-synchronous CTC prefix beam search of the project, with external scorers.

Label-wise fusion (an LLM over the AM labels), joint CTC + AED / speech-LLM search and delayed fusion (an LLM
over other units, scored every k frames) are configurations of :func:`ctc_beam_search`: label-wise knowledge
sources are :class:`LabelScorer` s, delayed ones :class:`FrameScorer` s.

The beam search recombines equal label sequences (blank / non-blank prefix probabilities), adds
``scale * log p_scorer(label | prefix)`` when a hypothesis emits a new label, subtracts
``prior_scale * log_prior[label]`` per emitted label (label-wise prior correction, recorded as score
"prior" = sum log prior), and calls an optional ``hook(t, hyps_per_utt)`` every ``hook_interval`` frames
(for delayed fusion: hooks may set ``hyp.scores[...]``, ``hyp.extra`` (added to the total) and ``hyp.user_state``).

Each frame is one batched step over all utterances searched together: their (hypothesis, label) expansions are
scored as one padded [utterances, hypotheses, labels] tensor, extensions that equal a hypothesis of the beam are
found and merged in one tensor operation, and only the best per utterance are turned into hypotheses.
Optimisations, each with a switch (see :func:`ctc_beam_search`): optional top-k label pruning by CTC
(``label_topk``); scorers are only run for hypotheses that got a new label (``score_new_labels_only``); scorer
calls are batched over the hypotheses of all beams (``batch_hyps``) and utterances (``batch_size``).
Scorers that can :meth:`LabelScorer.concat` states are called once per frame for all hypotheses, whichever
call their states came from. Frame merging (:func:`soft_collapse`) is applied by the caller.
:class:`CTCSearchStats` counts the work done.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from llmasr.search.scorer import LabelScorer

NEG = float("-inf")


def _lae(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats."""
    if a == NEG:
        return b
    if b == NEG:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


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
class CTCSearchStats:
    """Work counters of :func:`ctc_beam_search`, accumulated over calls (to measure what each optimisation saves).

    ``frames``: utterance frames searched; ``expansions``: (hypothesis, label) extensions considered;
    ``scorer_calls``: ``LabelScorer.score`` calls (all scorers, BOS step included); ``scored_rows``: rows in them.
    """

    frames: int = 0
    expansions: int = 0
    scorer_calls: int = 0
    scored_rows: int = 0


@dataclass(slots=True)
class Hypothesis:
    """A CTC prefix hypothesis: labels, log p_blank / p_nonblank of the prefix, per-source scores, user slot."""

    labels: Tuple[int, ...]
    pb: float = NEG
    pnb: float = NEG
    scores: Dict[str, float] = field(default_factory=dict)  # unscaled: scorer names, "prior"
    extra: float = 0.0  # weighted score added by a hook (e.g. delayed LM fusion)
    user_state: Any = None
    # scorer name -> (batched state object, row, next-label log-probs [V]) after the last label
    scorer_cache: Dict[str, Tuple[Any, int, torch.Tensor]] = field(default_factory=dict, repr=False)
    # scorer name -> (batched state object, row) before the last label (kept only to re-score, naive mode)
    scorer_prev: Dict[str, Tuple[Any, int]] = field(default_factory=dict, repr=False)
    # (label, scorer name -> (state, row)) still to be fed to the scorers, None when up to date
    pending: Optional[Tuple[int, Dict[str, Tuple[Any, int]]]] = field(default=None, repr=False)

    @property
    def ctc(self) -> float:
        return _lae(self.pb, self.pnb)


class FrameScorer(abc.ABC):
    """A knowledge source applied to whole beams at chosen frames instead of per emitted label (delayed fusion).

    It keeps what it needs in ``Hypothesis.user_state`` (inherited by extensions), records its unscaled scores
    in ``Hypothesis.scores`` and adds its weighted total to ``Hypothesis.extra``; a score it records under
    "prior" is subtracted with ``prior_scale`` by the search.
    """

    @abc.abstractmethod
    def start(self, utt_ids: torch.Tensor, roots: List[Hypothesis]) -> None:
        """Sets up the root hypothesis of each utterance ``utt_ids`` [B] (rows of the searched batch)."""

    @abc.abstractmethod
    def update(self, t: int, beams: List[List[Hypothesis]], final: List[bool]) -> None:
        """Called after frame ``t`` with the beams of the utterances still searched; ``final[i]``: frame ``t``
        is the last of utterance i (its scores must then be complete, end of sentence included)."""


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
    score_new_labels_only: bool = True,
    batch_size: Optional[int] = None,
    batch_hyps: bool = True,
    stats: Optional[CTCSearchStats] = None,
    frame_scorers: Sequence[FrameScorer] = (),
    score_final: bool = False,
) -> List[List[dict]]:
    """CTC prefix beam search over ``log_probs`` [B, T, V] (log-softmax) with ``lengths`` [B].

    :param scorers: label-wise external scorers name -> (LabelScorer, scale), label ids = CTC ids;
        they get ``bos`` first; at the end ``scale * log p(eos | labels)`` is added when ``eos`` is given
    :param log_prior: [V] log label prior; ``prior_scale * log_prior[c]`` is subtracted per emitted label c
    :param label_topk: per frame only the top-k non-blank labels may be emitted (None = all)
    :param score_new_labels_only: run the scorers only for hypotheses that got a new label; False re-scores
        every hypothesis of every beam every frame (naive reference, same results)
    :param batch_size: utterances searched together (None = all, 1 = one at a time; same results); a ``hook``
        then sees the beams of the current group only
    :param batch_hyps: one scorer call for all hypotheses (of all utterances searched together) that share a
        state object; False = one call per hypothesis (same results)
    :param stats: work counters to add to
    :param frame_scorers: delayed knowledge sources (see :class:`FrameScorer`), called after every frame
    :param score_final: at the end add ``scale * scorer.final_score(state)`` (e.g. an LLM's EOS in its own units)
        instead of the ``eos`` column
    :returns: per utterance up to ``nbest`` hypotheses best first, as dicts
        ``{"labels", "scores": {"ctc", <scorer names>, "prior", "length"}, "score"}``
    """
    scorers = scorers or {}
    if scorers and bos is None:
        raise ValueError("ctc_beam_search with scorers needs bos")
    B = log_probs.shape[0]
    step = B if batch_size is None else max(1, int(batch_size))
    opts = dict(blank=blank, beam_size=beam_size, scorers=scorers, bos=bos, eos=eos, log_prior=log_prior,
                prior_scale=prior_scale, length_reward=length_reward, label_topk=label_topk, hook=hook,
                hook_interval=hook_interval, nbest=nbest, score_new_labels_only=score_new_labels_only,
                batch_hyps=batch_hyps, stats=stats if stats is not None else CTCSearchStats(),
                frame_scorers=list(frame_scorers), score_final=score_final)
    out: List[List[dict]] = []
    for s in range(0, B, step):
        e = min(B, s + step)
        out += _search(log_probs[s:e], lengths[s:e], torch.arange(s, e), **opts)
    return out


def _search(log_probs, lengths, utt_ids, *, blank, beam_size, scorers, bos, eos, log_prior, prior_scale,
            length_reward, label_topk, hook, hook_interval, nbest, score_new_labels_only, batch_hyps, stats,
            frame_scorers, score_final):
    """:func:`ctc_beam_search` for the utterances ``utt_ids`` (their rows of the scorers' batch)."""
    weights = {n: w for n, (_, w) in scorers.items()}
    B, T, V = log_probs.shape
    x = log_probs.detach().cpu().double()  # float64: extension scores equal the Python float arithmetic
    lp_prior = log_prior.detach().cpu().double() if log_prior is not None else None
    init = {n: s.initial_state(utt_ids) for n, (s, _) in scorers.items()}
    beams: List[List[Hypothesis]] = []
    for b in range(B):
        h = Hypothesis((), pb=0.0, scores={n: 0.0 for n in scorers} | {"prior": 0.0})
        if scorers:
            h.pending = (bos, {n: (init[n], b) for n in scorers})
        beams.append([h])
    for fs in frame_scorers:
        fs.start(utt_ids, [beam[0] for beam in beams])
    _update_scorers(beams, scorers, bos, score_new_labels_only, batch_hyps, stats)
    all_labels = torch.tensor([c for c in range(V) if c != blank], dtype=torch.long)

    lengths = [int(n) for n in lengths]
    for t in range(T):
        active = [b for b in range(B) if t < lengths[b]]
        if active:
            xt = x[:, t] if len(active) == B else x[torch.tensor(active, dtype=torch.long), t]  # [A, V]
            cand = _frame_candidates(xt, blank, label_topk, all_labels)
            stats.frames += len(active)
            stats.expansions += cand.shape[1] * sum(len(beams[b]) for b in active)
            for b, beam in zip(active, _expand([beams[b] for b in active], xt, cand, blank, beam_size, scorers,
                                               weights, lp_prior, prior_scale, length_reward)):
                beams[b] = beam
        _update_scorers([beams[b] for b in active], scorers, bos, score_new_labels_only, batch_hyps, stats)
        for fs in frame_scorers:
            fs.update(t, [beams[b] for b in active], [t == lengths[b] - 1 for b in active])
        if hook is not None and (t + 1) % hook_interval == 0:
            hook(t, beams)
    finals = _final_scores(beams, scorers, eos, score_final)
    out = []
    for b in range(B):
        res = []
        for h in beams[b]:
            scores = dict(h.scores)
            total = _total(h, weights, prior_scale, length_reward)
            for n, e in finals.get(id(h), {}).items():
                scores[n] += e
                total += weights[n] * e
            scores["ctc"] = h.ctc
            scores["length"] = len(h.labels)
            res.append({"labels": list(h.labels), "scores": scores, "score": total})
        res.sort(key=lambda r: -r["score"])
        out.append(res[: (nbest or beam_size)])
    return out


def _final_scores(beams: List[List[Hypothesis]], scorers, eos: Optional[int], score_final: bool
                  ) -> Dict[int, Dict[str, float]]:
    """End-of-sentence score per hypothesis (by id) and scorer: the ``eos`` column of its next-label scores, or
    the scorer's ``final_score`` (one call per state object)."""
    out: Dict[int, Dict[str, float]] = {}
    if not scorers or (eos is None and not score_final):
        return out
    hyps = [h for beam in beams for h in beam]
    for n, (s, _) in scorers.items():
        if not score_final:
            for h in hyps:
                out.setdefault(id(h), {})[n] = float(h.scorer_cache[n][2][eos])
            continue
        groups: Dict[int, List[Hypothesis]] = {}
        for h in hyps:
            groups.setdefault(id(h.scorer_cache[n][0]), []).append(h)
        for hs in groups.values():
            fin = s.final_score(hs[0].scorer_cache[n][0]).detach().float().cpu()
            for h in hs:
                out.setdefault(id(h), {})[n] = float(fin[h.scorer_cache[n][1]])
    return out


def _frame_candidates(xt: torch.Tensor, blank: int, label_topk: Optional[int], all_labels: torch.Tensor
                      ) -> torch.Tensor:
    """The labels [A, K] each of the A utterances may emit at this frame (``xt`` [A, V]): all non-blank labels, or
    the ``label_topk`` best by CTC (best first)."""
    A, V = xt.shape
    if label_topk is None or label_topk >= V:
        return all_labels[None, :].expand(A, -1)
    idx = xt.topk(min(label_topk + 1, V), dim=1).indices  # [A, k + 1], best first
    keep = idx != blank
    keep &= keep.long().cumsum(1) <= label_topk
    return idx[keep].view(A, -1)


def _hyp_score(h: Hypothesis, weights: Dict[str, float], prior_scale: float, length_reward: float,
               extra_labels: int) -> float:
    """Weighted scorer, prior, length and hook scores of ``h`` (all but CTC), as if it had ``extra_labels`` more."""
    return (sum(w * h.scores.get(n, 0.0) for n, w in weights.items()) - prior_scale * h.scores.get("prior", 0.0)
            + length_reward * (len(h.labels) + extra_labels) + h.extra)


def _expand(beams: List[List[Hypothesis]], xt: torch.Tensor, cand: torch.Tensor, blank: int, beam_size: int,
            scorers, weights: Dict[str, float], lp_prior: Optional[torch.Tensor], prior_scale: float,
            length_reward: float) -> List[List[Hypothesis]]:
    """One frame of A utterances: the next beams from ``beams``, CTC frame log-probs ``xt`` [A, V] (float64) and
    the labels ``cand`` [A, K] each may emit. The extensions of all utterances are scored as one [A, N, K] tensor
    (N: the largest beam); per utterance only the best ``beam_size`` become :class:`Hypothesis` objects."""
    K = cand.shape[1]
    N = max(len(hyps) for hyps in beams)
    news, ctc = _same_labels(beams, xt, blank)
    if K == 0 or N == 0:
        return [best_hypotheses(new.values(), beam_size, weights, prior_scale, length_reward) for new in news]
    p, pb, last, rest = _beam_tensors(beams, ctc, N, weights, prior_scale, length_reward)
    # extending with the last label needs a blank in between
    pnb = torch.where(cand[:, None, :] == last, pb, p) + xt.gather(1, cand)[:, None, :]  # [A, N, K]
    _merge_extensions(beams, cand, pnb, news)
    total = pnb + rest
    label_lp = {}  # scorer -> [A, N, K] log-probs of the candidate labels
    for n, w in weights.items():
        label_lp[n] = _candidate_scores(beams, n, cand, N)
        total = total + w * label_lp[n]
    prior_c = lp_prior[cand] if lp_prior is not None else None  # [A, K]
    if prior_c is not None:
        total = total - prior_scale * prior_c[:, None, :]
    total = torch.where(pnb > NEG, total.clamp(min=-1e300), torch.full_like(total, NEG))
    return _extensions(beams, news, total, pnb, label_lp, prior_c, cand, scorers, beam_size, weights, prior_scale,
                       length_reward)


def _same_labels(beams: List[List[Hypothesis]], xt: torch.Tensor, blank: int
                 ) -> Tuple[List[Dict[Tuple[int, ...], Hypothesis]], List[float]]:
    """Per utterance the hypotheses that keep their labels at this frame (a blank, or a repeat of the last label),
    by label sequence, and the CTC score of every hypothesis of ``beams`` (flattened) before the frame."""
    A, V = xt.shape
    flat = [(a, h) for a, hyps in enumerate(beams) for h in hyps]
    lasts = [h.labels[-1] if h.labels else blank for _, h in flat]
    x_last = xt.reshape(-1)[torch.tensor([a * V + c for (a, _), c in zip(flat, lasts)])].tolist()
    x_blank = xt[:, blank].tolist()
    news: List[Dict[Tuple[int, ...], Hypothesis]] = [{} for _ in range(A)]
    ctc = [h.ctc for _, h in flat]
    for (a, h), p, xl in zip(flat, ctc, x_last):
        news[a][h.labels] = Hypothesis(
            h.labels, pb=p + x_blank[a], pnb=h.pnb + xl if h.labels else NEG,
            scores=dict(h.scores), extra=h.extra, user_state=h.user_state, scorer_cache=h.scorer_cache,
            scorer_prev=h.scorer_prev)
    return news, ctc


def _beam_tensors(beams: List[List[Hypothesis]], ctc: List[float], N: int, weights: Dict[str, float],
                  prior_scale: float, length_reward: float):
    """[A, N, 1] tensors of the beams padded to N rows (padded rows: CTC -inf, never extended): the CTC score, the
    blank-ending score, the last label, and every other score of an extension by one label."""
    A = len(beams)
    p_rows, pb_rows, last_rows, rest_rows = [], [], [], []
    pos = 0
    for hyps in beams:
        n, pad = len(hyps), N - len(hyps)
        p_rows += ctc[pos:pos + n] + [NEG] * pad
        pb_rows += [h.pb for h in hyps] + [NEG] * pad
        last_rows += [h.labels[-1] if h.labels else -1 for h in hyps] + [-1] * pad
        rest_rows += [_hyp_score(h, weights, prior_scale, length_reward, 1) for h in hyps] + [0.0] * pad
        pos += n
    return (torch.tensor(p_rows, dtype=torch.float64).view(A, N, 1),
            torch.tensor(pb_rows, dtype=torch.float64).view(A, N, 1),
            torch.tensor(last_rows, dtype=torch.long).view(A, N, 1),
            torch.tensor(rest_rows, dtype=torch.float64).view(A, N, 1))


def _merge_extensions(beams: List[List[Hypothesis]], cand: torch.Tensor, pnb: torch.Tensor,
                      news: List[Dict[Tuple[int, ...], Hypothesis]]) -> None:
    """An extension that equals a hypothesis of the beam is merged into it (no new label, no scorer call): its
    score is added to that hypothesis in ``news`` and set to -inf in ``pnb`` [A, N, K]."""
    merge = []  # (utterance, parent row, label, hypothesis of the beam)
    for a, hyps in enumerate(beams):
        index = None
        for h in hyps:
            if h.labels and len(hyps) > 1:
                if index is None:
                    index = {g.labels: i for i, g in enumerate(hyps)}
                i = index.get(h.labels[:-1])
                if i is not None:
                    merge.append((a, i, h.labels[-1], h))
    if not merge:
        return
    ua = torch.tensor([m[0] for m in merge])
    ui = torch.tensor([m[1] for m in merge])
    eq = cand[ua] == torch.tensor([m[2] for m in merge])[:, None]  # [M, K]
    found = eq.any(1)
    uk = eq.long().argmax(1)
    vals = pnb[ua, ui, uk].tolist()
    for (a, _, _, h), ok, v in zip(merge, found.tolist(), vals):
        if ok:
            hn = news[a][h.labels]
            hn.pnb = _lae(hn.pnb, v)
    pnb[ua[found], ui[found], uk[found]] = NEG


def _candidate_scores(beams: List[List[Hypothesis]], name: str, cand: torch.Tensor, N: int) -> torch.Tensor:
    """Scorer ``name``'s log-probs [A, N, K] of the candidate labels after every hypothesis (padded rows: 0)."""
    A, K = cand.shape
    zero = torch.zeros_like(next(h for hyps in beams for h in hyps).scorer_cache[name][2])
    rows = []
    for hyps in beams:
        rows += [h.scorer_cache[name][2] for h in hyps] + [zero] * (N - len(hyps))
    return torch.stack(rows).view(A, N, -1).gather(2, cand[:, None, :].expand(A, N, K)).double()


def _extensions(beams, news, total: torch.Tensor, pnb: torch.Tensor, label_lp: Dict[str, torch.Tensor],
                prior_c: Optional[torch.Tensor], cand: torch.Tensor, scorers, beam_size: int,
                weights: Dict[str, float], prior_scale: float, length_reward: float) -> List[List[Hypothesis]]:
    """The ``beam_size`` best extensions (by ``total`` [A, N, K]) of each utterance become hypotheses beside those
    in ``news``; returns the next beams."""
    A, N, K = total.shape
    top_v, top_i = total.view(A, N * K).topk(min(beam_size, N * K), dim=1)
    top_k = top_i % K
    pnb_b = pnb.view(A, N * K).gather(1, top_i).tolist()
    lp_b = {n: label_lp[n].view(A, N * K).gather(1, top_i).tolist() for n in scorers}
    prior_b = prior_c.gather(1, top_k).tolist() if prior_c is not None else None
    lab_b = cand.gather(1, top_k).tolist()
    out = []
    for a, (hyps, new, vs, js) in enumerate(zip(beams, news, top_v.tolist(), top_i.tolist())):
        for m, (v, j) in enumerate(zip(vs, js)):
            if not v > NEG:
                continue
            parent, c = hyps[j // K], lab_b[a][m]
            sc = dict(parent.scores)
            for n in scorers:
                sc[n] += lp_b[n][a][m]
            if prior_b is not None:
                sc["prior"] += prior_b[a][m]
            new[parent.labels + (c,)] = Hypothesis(
                parent.labels + (c,), pnb=pnb_b[a][m], scores=sc, extra=parent.extra, user_state=parent.user_state,
                pending=(c, {n: parent.scorer_cache[n][:2] for n in scorers}) if scorers else None)
        out.append(best_hypotheses(new.values(), beam_size, weights, prior_scale, length_reward))
    return out


def best_hypotheses(hyps, beam_size: int, weights: Dict[str, float], prior_scale: float, length_reward: float
                    ) -> List[Hypothesis]:
    """The ``beam_size`` best hypotheses with a finite CTC score, best first."""
    scored = []
    for h in hyps:
        p = h.ctc
        if p > NEG:
            scored.append((p + sum(w * h.scores.get(n, 0.0) for n, w in weights.items())
                           - prior_scale * h.scores.get("prior", 0.0) + length_reward * len(h.labels) + h.extra, h))
    scored.sort(key=lambda x: -x[0])
    return [h for _, h in scored[:beam_size]]


def _update_scorers(beams: List[List[Hypothesis]], scorers: Dict[str, Tuple[LabelScorer, float]], bos: Optional[int],
                    new_labels_only: bool, batch_hyps: bool, stats: CTCSearchStats) -> None:
    """Feeds pending labels to the scorers: one batched call per state object (``batch_hyps``) or per hypothesis.
    Without ``new_labels_only`` every hypothesis re-scores its last label (or BOS) from its previous state."""
    if not scorers:
        return
    pending = []
    for beam in beams:
        for h in beam:
            if h.pending is None and not new_labels_only:
                h.pending = (h.labels[-1] if h.labels else bos, h.scorer_prev)
            if h.pending is not None:
                pending.append(h)
    if not pending:
        return
    for n, (s, _) in scorers.items():
        groups: Dict[int, List[Hypothesis]] = {}
        for h in pending:
            groups.setdefault(id(h.pending[1][n][0]) if batch_hyps else id(h), []).append(h)
        selected = []
        for hs in groups.values():
            rows = torch.tensor([h.pending[1][n][1] for h in hs], dtype=torch.long)
            selected.append((hs, s.select(hs[0].pending[1][n][0], rows)))
        if batch_hyps and len(selected) > 1:  # states from different calls: one state, one call if possible
            try:
                selected = [([h for hs, _ in selected for h in hs], s.concat([st for _, st in selected]))]
            except NotImplementedError:
                pass
        for hs, st0 in selected:
            labs = torch.tensor([h.pending[0] for h in hs], dtype=torch.long)
            lp, st = s.score(st0, labs)
            stats.scorer_calls += 1
            stats.scored_rows += len(hs)
            lp = lp.detach().float().cpu()
            for i, h in enumerate(hs):
                h.scorer_cache = dict(h.scorer_cache)
                h.scorer_cache[n] = (st, i, lp[i])
    for h in pending:
        if not new_labels_only:
            h.scorer_prev = dict(h.pending[1])
        h.pending = None


def soft_collapse(log_probs: torch.Tensor, lengths: torch.Tensor, *, blank: int,
                  blank_threshold: float = 0.999, keep: str = "max") -> Tuple[torch.Tensor, torch.Tensor]:
    """Shrinks each run of frames with p(blank) > threshold to one frame and merges runs of frames with the same
    non-blank argmax so that CTC search runs on fewer frames; returns (log_probs [B, T', V], lengths [B]).

    :param keep: which frame of a same-label run is kept: "max" the one where the label is most probable (the
        peak; a run often starts with a weaker onset frame), "first" the first one
    """
    if keep not in ("max", "first"):
        raise ValueError(f"soft_collapse keep={keep!r}: use 'max' or 'first'")
    B, T, V = log_probs.shape
    keep_all = []
    for b in range(B):
        L = int(lengths[b])
        top, am = log_probs[b, :L].max(-1)
        am, top = am.tolist(), top.tolist()
        pb = log_probs[b, :L, blank].exp().tolist()
        kept, prev = [], None
        for t in range(L):
            a = am[t]
            if pb[t] > blank_threshold:
                if prev != "blank_run":  # keep one frame per run of confident blanks (separates repeats)
                    kept.append(t)
                prev = "blank_run"
                continue
            if a != blank and a == prev:
                if keep == "max" and top[t] > top[kept[-1]]:
                    kept[-1] = t
                continue
            kept.append(t)
            prev = a
        keep_all.append(kept)
    Tn = max(1, max(len(k) for k in keep_all))
    out = torch.zeros(B, Tn, V, dtype=log_probs.dtype)
    out[:, :, blank] = 0.0
    out[:, :, :blank] = NEG
    out[:, :, blank + 1:] = NEG
    for b, k in enumerate(keep_all):
        if k:
            out[b, : len(k)] = log_probs[b, k]
    return out, torch.tensor([len(k) for k in keep_all])
