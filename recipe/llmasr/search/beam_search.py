"""Label-synchronous beam search over weighted LabelScorers (AED, AED+CTC, speech LLM, speech LLM+CTC).

Scores are summed log-probabilities ``sum_name scale_name * score_name``; ended hypotheses are ranked by
``score / length ** length_norm_exponent`` (length = labels without BOS, with EOS if ``length_norm_counts_eos``, at
least 1; exponent 0 = off).

Each step follows ESPnet's ``BatchBeamSearch``: the full scorers score all labels of every running hypothesis;
a pre-beam of the ``pre_beam_size`` best labels per hypothesis (by the weighted full scores) is scored by the
partial scorers (the CTC prefix scorer), and EOS is always among the candidates (``eos_always_scored``), so the
CTC prefix scorer can end a hypothesis the decoder would not have ranked into the pre-beam. The ``beam_size``
best candidates of an utterance fill its beam; those ending in EOS leave it (so fewer hypotheses run on).
The steps: :func:`_pre_beam` (candidates and their scores), :func:`_main_beam` (the next beam of one utterance),
:func:`_advance` (the rows that run on), and at the end :func:`_force_eos` and :func:`_post_process`.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer, PartialLabelScorer

Scorers = Dict[str, Tuple[LabelScorer, float]]


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every step of one search needs: the scorers and the beam's options."""

    scorers: Scorers
    partial_scorers: Dict[str, Tuple[PartialLabelScorer, float]]
    beam_size: int
    eos: int
    pre_beam: int
    eos_always_scored: bool
    length_norm_exponent: float
    eos_len: int  # 1 where the length of the normalisation counts EOS

    @property
    def all_scorers(self) -> Dict[str, Tuple[LabelScorer, float]]:
        return {**self.scorers, **self.partial_scorers}

    @property
    def monotone(self) -> bool:
        """Scores can only fall along a hypothesis: a running one already worse than the beam_size-th ended one can
        never overtake it (no length normalisation, all scales >= 0, all scorers log-probabilities)."""
        return self.length_norm_exponent == 0.0 and all(
            w >= 0 and getattr(s, "scores_are_log_probs", True) for s, w in self.all_scorers.values())

    def normalised(self, score: float, labels: int) -> float:
        return score / (max(labels + self.eos_len, 1) ** self.length_norm_exponent)


@dataclasses.dataclass
class _Rows:
    """The running hypotheses, one row per (utterance, hypothesis): N rows."""

    batch_idx: torch.Tensor  # [N] utterance of each row
    labels: torch.Tensor  # [N] last label (BOS at the start)
    hist: List[List[int]]  # labels so far, without BOS
    total: torch.Tensor  # [N] weighted score
    per: Dict[str, torch.Tensor]  # scorer name -> [N] unscaled score
    states: Dict[str, Any]  # scorer name -> state of the N rows
    device: Any = None  # where the scorers' outputs live


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
    if not scorers:
        raise ValueError("beam_search needs at least one full scorer")
    setup = _Setup(scorers, dict(partial_scorers or {}), beam_size=beam_size, eos=eos,
                   pre_beam=pre_beam_size or max(int(1.5 * beam_size), beam_size + 1),
                   eos_always_scored=eos_always_scored, length_norm_exponent=length_norm_exponent,
                   eos_len=1 if length_norm_counts_eos else 0)
    batch_idx = torch.arange(batch_size)  # one row per utterance to start with
    rows: Optional[_Rows] = _Rows(
        batch_idx, torch.full((batch_size,), bos, dtype=torch.long), [[] for _ in range(batch_size)],
        torch.zeros(batch_size), {n: torch.zeros(batch_size) for n in setup.all_scorers},
        {n: s.initial_state(batch_idx) for n, (s, _) in setup.all_scorers.items()})
    ended: List[List[dict]] = [[] for _ in range(batch_size)]
    done = [False] * batch_size
    for _ in range(max_len):
        if rows is None:
            break
        rows = _step(setup, rows, ended, done)
    if rows is not None:  # hypotheses still running at max_len: EOS is forced, with its score from every scorer
        _force_eos(setup, rows)
    return _post_process(setup, rows, ended, nbest or beam_size)


def _step(setup: _Setup, rows: _Rows, ended: List[List[dict]], done: List[bool]) -> Optional[_Rows]:
    """One label of every running hypothesis: pre-beam, the main beam of each utterance (hypotheses ending in EOS
    move to ``ended``, utterances that may stop are marked ``done``), and the rows that run on (None: none)."""
    cand, cand_lp, new_states, rows.device = _pre_beam(setup, rows.states, rows.labels)
    # cand [N, K] candidate labels, cand_lp name -> [N, K] unscaled scores
    cand_total = rows.total.unsqueeze(1) + sum(w * cand_lp[n] for n, (_, w) in setup.all_scorers.items())  # [N, K]
    keep_rows: List[int] = []
    keep_cols: List[int] = []
    for b in range(len(done)):
        if done[b]:
            continue
        utt_rows = (rows.batch_idx == b).nonzero().flatten()
        if utt_rows.numel() == 0:
            done[b] = True
            continue
        kr, kc = _main_beam(setup, utt_rows, cand, cand_total, cand_lp, rows, ended[b])
        done[b] = _can_stop(setup, ended[b], [float(cand_total[r, c]) for r, c in zip(kr, kc)])
        if not done[b]:
            keep_rows += kr
            keep_cols += kc
    if not keep_rows:
        return None
    return _advance(setup, rows, keep_rows, keep_cols, cand, cand_total, cand_lp, new_states)


def _pre_beam(setup: _Setup, states: Dict[str, Any], labels: torch.Tensor):
    """Scores the next label of every row: full scorers over all V labels; with partial scorers only the
    ``pre_beam`` best labels (by the weighted full scores) plus EOS are candidates and get partial scores.
    Returns (candidates [N, K], name -> unscaled scores [N, K] on the CPU, new states, device)."""
    full_lp = {}
    new_states = {}
    dev = None
    for n, (s, _) in setup.scorers.items():
        lp, new_states[n] = s.score(states[n], labels)  # [N, V]
        dev = lp.device
        full_lp[n] = lp.float().cpu()
    V = next(iter(full_lp.values())).shape[-1]
    N = labels.shape[0]
    if not setup.partial_scorers or setup.pre_beam >= V:
        cand = torch.arange(V).unsqueeze(0).expand(N, V)  # [N, V]
        cand_lp = dict(full_lp)
        for n, (s, _) in setup.partial_scorers.items():
            pl, new_states[n] = s.score_partial(states[n], labels, cand.to(dev))  # [N, V]
            cand_lp[n] = pl.float().cpu()
        return cand, cand_lp, new_states, dev
    weighted = sum(w * full_lp[n] for n, (_, w) in setup.scorers.items())  # [N, V]
    cand = weighted.topk(setup.pre_beam, dim=-1).indices  # [N, K]
    has_eos = None
    if setup.eos_always_scored:
        # one more column holding EOS; where EOS is already in the pre-beam that column is a dead duplicate
        has_eos = (cand == setup.eos).any(1)  # [N]
        cand = torch.cat([cand, torch.full((N, 1), setup.eos, dtype=torch.long)], 1)  # [N, K+1]
    cand_lp = {n: full_lp[n].gather(1, cand) for n in setup.scorers}  # [N, K]
    for n, (s, _) in setup.partial_scorers.items():
        pl, new_states[n] = s.score_partial(states[n], labels, cand.to(dev))  # [N, K]
        cand_lp[n] = pl.float().cpu()
    if has_eos is not None and bool(has_eos.any()):  # the dead duplicates can never be chosen
        first = next(iter(setup.scorers))
        cand_lp[first][:, -1] = cand_lp[first][:, -1].masked_fill(has_eos, float("-inf"))
    return cand, cand_lp, new_states, dev


def _main_beam(setup: _Setup, utt_rows: torch.Tensor, cand: torch.Tensor, cand_total: torch.Tensor,
               cand_lp: Dict[str, torch.Tensor], rows: _Rows, ended: List[dict]) -> Tuple[List[int], List[int]]:
    """The ``beam_size`` best candidates of one utterance (its rows ``utt_rows``): those ending in EOS are moved to
    ``ended``, the others are returned as (rows, candidate columns) to run on."""
    K = cand.shape[1]
    flat = cand_total[utt_rows].flatten()  # [R*K]
    order = flat.argsort(descending=True)[: setup.beam_size].tolist()
    keep_rows: List[int] = []
    keep_cols: List[int] = []
    for o in order:
        sc = float(flat[o])
        if sc == float("-inf"):
            break
        r, c = int(utt_rows[o // K]), o % K
        if int(cand[r, c]) == setup.eos:
            scores = {n: float(rows.per[n][r] + cand_lp[n][r, c]) for n in setup.all_scorers}
            scores["length"] = len(rows.hist[r])
            ended.append({"labels": list(rows.hist[r]), "scores": scores,
                          "score": setup.normalised(sc, len(rows.hist[r]))})
        else:
            keep_rows.append(r)
            keep_cols.append(c)
    return keep_rows, keep_cols


def _can_stop(setup: _Setup, ended: List[dict], running: List[float]) -> bool:
    """Whether the search of one utterance may stop (see :func:`beam_search`)."""
    if not running:
        return True
    if len(ended) < setup.beam_size:
        return False
    if setup.monotone:
        kth = sorted((h["score"] for h in ended), reverse=True)[setup.beam_size - 1]
        return max(running) < kth
    return setup.length_norm_exponent != 0.0 and len(ended) >= 2 * setup.beam_size


def _advance(setup: _Setup, rows: _Rows, keep_rows: List[int], keep_cols: List[int], cand: torch.Tensor,
             cand_total: torch.Tensor, cand_lp: Dict[str, torch.Tensor], new_states: Dict[str, Any]) -> _Rows:
    """The rows that run on: candidate ``keep_cols[i]`` of row ``keep_rows[i]``, with the scorers' states."""
    ri = torch.tensor(keep_rows, dtype=torch.long)
    ci = torch.tensor(keep_cols, dtype=torch.long)
    K = cand.shape[1]
    sel = ri.to(rows.device)
    states = {n: s.select(new_states[n], sel) for n, (s, _) in setup.scorers.items()}
    for n, (s, _) in setup.partial_scorers.items():  # partial scorers select by (row, column): row * K + column
        states[n] = s.select(new_states[n], (ri * K + ci).to(rows.device))
    hist = [rows.hist[r] + [int(cand[r, c])] for r, c in zip(keep_rows, keep_cols)]
    per = {n: rows.per[n][ri] + cand_lp[n][ri, ci] for n in setup.all_scorers}
    return _Rows(rows.batch_idx[ri], cand[ri, ci], hist, cand_total[ri, ci], per, states, rows.device)


def _force_eos(setup: _Setup, rows: _Rows) -> None:
    """Ends every running row with EOS, adding its score from every scorer (at the maximum length)."""
    eos_lp = {n: s.score(rows.states[n], rows.labels)[0].float().cpu()[:, setup.eos]
              for n, (s, _) in setup.scorers.items()}
    eos_cand = torch.full((rows.labels.shape[0], 1), setup.eos, dtype=torch.long, device=rows.device)
    for n, (s, _) in setup.partial_scorers.items():
        eos_lp[n] = s.score_partial(rows.states[n], rows.labels, eos_cand)[0].float().cpu()[:, 0]
    rows.total = rows.total + sum(w * eos_lp[n] for n, (_, w) in setup.all_scorers.items())
    rows.per = {n: rows.per[n] + eos_lp[n] for n in setup.all_scorers}


def _post_process(setup: _Setup, rows: Optional[_Rows], ended: List[List[dict]], nbest: int) -> List[List[dict]]:
    """The ended hypotheses (and the rows ended at the maximum length) of each utterance, best first."""
    for i in range(rows.labels.shape[0] if rows is not None else 0):
        scores = {n: float(rows.per[n][i]) for n in setup.all_scorers}
        scores["length"] = len(rows.hist[i])
        ended[int(rows.batch_idx[i])].append({"labels": list(rows.hist[i]), "scores": scores,
                                              "score": setup.normalised(float(rows.total[i]), len(rows.hist[i]))})
    out = []
    for b, hyps in enumerate(ended):
        best = sorted(hyps, key=lambda h: -h["score"])[:nbest]
        if not best:
            logging.warning("beam_search: utterance %d has no hypothesis", b)
        out.append(best)
    return out
