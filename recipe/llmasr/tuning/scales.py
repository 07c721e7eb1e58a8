"""Tuning of LM scale, prior scale and length reward on dev N-best lists (grid search + refinement, min WER).

The N-best must carry the scores the combination uses (``am``/``ctc``, ``lm``, ``prior``, ``length``),
e.g. the output of :class:`llmasr.search.rescoring.RescoreNBestJob`. Each hypothesis' word errors are
computed once; a scale setting then costs one argmax per utterance, so large grids are cheap.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

from sisyphus import Task, tk

from llmasr.resources import ResourceJob

NAMES = ("lm_scale", "prior_scale", "length_reward")


def word_errors(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


class _Table:
    """Features [U, H, 4] (am, lm, -prior, length), word errors [U, H] and a validity mask."""

    def __init__(self, nbest: Dict[str, List[dict]], refs: Dict[str, str], normalize: Callable[[str], str],
                 am_key: str):
        import numpy as np

        from llmasr.search.nbest import am_score, hypothesis_length

        missing = sorted(set(refs) - set(nbest))
        if missing:
            raise ValueError(f"{len(missing)} dev utterances have no N-best list, e.g. {missing[:3]}")
        if not refs:
            raise ValueError("no reference utterances to tune on")
        ids = sorted(refs)
        width = max(max((len(nbest[s]) for s in ids), default=1), 1)
        self.feats = np.zeros((len(ids), width, 4))
        self.errors = np.zeros((len(ids), width))
        self.valid = np.zeros((len(ids), width), dtype=bool)
        self.ref_words = 0
        norm_cache: Dict[str, List[str]] = {}

        def words(text: str) -> List[str]:
            if text not in norm_cache:
                norm_cache[text] = normalize(text).split()
            return norm_cache[text]

        for u, seq_id in enumerate(ids):
            ref = words(refs[seq_id])
            self.ref_words += len(ref)
            hyps = nbest[seq_id]
            if not hyps:  # empty N-best: every setting outputs nothing
                self.errors[u, 0] = len(ref)
                self.valid[u, 0] = True
                continue
            for h_i, h in enumerate(hyps):
                scores = h.get("scores", {})
                self.feats[u, h_i] = (am_score(h, am_key, seq_id), scores.get("lm", 0.0),
                                      -scores.get("prior", 0.0), hypothesis_length(h))
                self.errors[u, h_i] = word_errors(ref, words(h.get("text", "")))
                self.valid[u, h_i] = True
        self.ids = ids

    def errors_for(self, weights) -> "numpy.ndarray":
        """Total word errors for each row of weights [G, 3] = (lm_scale, prior_scale, length_reward)."""
        import numpy as np

        w = np.concatenate([np.ones((len(weights), 1)), np.asarray(weights, dtype=float)], axis=1)  # [G, 4]
        scores = np.einsum("uhf,gf->guh", self.feats, w)  # [G, U, H]
        scores = np.where(self.valid[None], scores, -np.inf)
        best = scores.argmax(axis=2)  # [G, U]
        errs = np.take_along_axis(self.errors[None].repeat(len(w), 0), best[..., None], axis=2)[..., 0]
        return errs.sum(axis=1)


def tune_scales(
    nbest: Dict[str, List[dict]],
    refs: Dict[str, str],
    *,
    lm_scales: Sequence[float] = tuple(x / 10 for x in range(0, 11)),
    prior_scales: Sequence[float] = (0.0,),
    length_rewards: Sequence[float] = (0.0,),
    refine_rounds: int = 3,
    max_starts: int = 32,
    normalize: Optional[Callable[[str], str]] = None,
    am_key: str = "am",
) -> Dict[str, float]:
    """Grid search over the three scales, then local refinement with halving steps around each grid
    optimum (up to ``max_starts`` of them).

    Ties are broken toward the smallest scales (grid order), so unused knobs stay at their lowest value.
    Returns {"lm_scale", "prior_scale", "length_reward", "wer", "errors", "words", "wer_unfused"}.
    """
    import numpy as np

    if normalize is None:
        from llmasr.text.normalize import normalize_for_scoring as normalize
    table = _Table(nbest, refs, normalize, am_key)
    grids = [sorted(set(float(x) for x in g)) for g in (lm_scales, prior_scales, length_rewards)]
    for name, g in zip(NAMES, grids):
        if not g:
            raise ValueError(f"empty grid for {name}")
    points = np.array(list(itertools.product(*grids)))
    errs = table.errors_for(points)
    min_err = float(errs.min())
    starts = points[errs == min_err][:max_starts]  # every grid optimum (ascending), refined locally
    best, best_err = starts[0].copy(), min_err
    lows = np.array([min(g[0], 0.0) for g in grids])  # scales stay >= 0 unless the grid allowed negatives
    for start in starts:
        cur, cur_err = start.copy(), min_err
        steps = np.array([(g[1] - g[0]) / 2 if len(g) > 1 else 0.0 for g in grids])
        for _ in range(refine_rounds):
            if not steps.any():
                break
            offsets = np.array(list(itertools.product(*[(-s, 0.0, s) if s else (0.0,) for s in steps])))
            cand = np.maximum(cur[None] + offsets, lows)
            cerr = table.errors_for(cand)
            i = int(np.argmin(cerr))
            if cerr[i] < cur_err:
                cur, cur_err = cand[i].copy(), float(cerr[i])
            steps = steps / 2
        if cur_err < best_err:
            best, best_err = cur, cur_err
    words = max(table.ref_words, 1)
    unfused = float(table.errors_for(np.zeros((1, 3)))[0])
    result = {n: round(float(v), 6) for n, v in zip(NAMES, best)}
    result.update(wer=100.0 * best_err / words, errors=int(best_err), words=int(table.ref_words),
                  wer_unfused=100.0 * unfused / words)
    logging.info("tuned scales %s", result)
    return result


class TuneScalesJob(ResourceJob):
    """Tunes lm_scale, prior_scale and length reward on a dev N-best list by minimising WER."""

    def __init__(
        self,
        nbest_dev: tk.Path,
        corpus_dev: tk.Path,
        *,
        lm_scales: Sequence[float] = tuple(x / 10 for x in range(0, 11)),
        prior_scales: Sequence[float] = (0.0,),
        length_rewards: Sequence[float] = (0.0,),
        refine_rounds: int = 3,
        am_key: str = "am",
    ):
        """
        :param nbest_dev: dev N-best with LM scores (e.g. ``RescoreNBestJob.out_nbest``)
        :param corpus_dev: dev corpus manifest (references)
        :param lm_scales: grid of LM scales
        :param prior_scales: grid of prior scales ((0.0,) to keep the prior off)
        :param length_rewards: grid of length rewards ((0.0,) to keep it off)
        :param refine_rounds: rounds of coordinate refinement with halving steps around the grid optimum
        :param am_key: which score is the AM score
        """
        self.nbest_dev = nbest_dev
        self.corpus_dev = corpus_dev
        self.lm_scales = tuple(lm_scales)
        self.prior_scales = tuple(prior_scales)
        self.length_rewards = tuple(length_rewards)
        self.refine_rounds = refine_rounds
        self.am_key = am_key
        self.out_scales = self.output_path("scales.json")
        self.out_lm_scale = self.output_var("lm_scale")
        self.out_prior_scale = self.output_var("prior_scale")
        self.out_length_reward = self.output_var("length_reward")
        self.out_wer = self.output_var("wer")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        from llmasr.data.corpus import read_corpus
        from llmasr.search.nbest import read_nbest

        refs = {e.id: e.text for e in read_corpus(self.corpus_dev.get_path())}
        nbest = read_nbest(self.nbest_dev.get_path())
        res = tune_scales(nbest, refs, lm_scales=self.lm_scales, prior_scales=self.prior_scales,
                          length_rewards=self.length_rewards, refine_rounds=self.refine_rounds, am_key=self.am_key)
        tmp = self.out_scales.get_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, self.out_scales.get_path())
        self.out_lm_scale.set(res["lm_scale"])
        self.out_prior_scale.set(res["prior_scale"])
        self.out_length_reward.set(res["length_reward"])
        self.out_wer.set(res["wer"])


class SelectBestScaleJob(ResourceJob):
    """Picks the scale whose dev WER is lowest, e.g. the CTC scale of a joint search tried at a few values on dev
    (scales that change the search itself cannot be tuned on N-best lists); ties go to the smaller scale."""

    def __init__(self, wers: Dict[float, tk.Variable]):
        """
        :param wers: scale -> dev WER (``ScoreWERJob.out_wer`` of the search run with that scale)
        """
        if not wers:
            raise ValueError("SelectBestScaleJob needs at least one (scale, WER) pair")
        self.wers = {float(k): v for k, v in wers.items()}
        self.out_scale = self.output_var("scale")
        self.out_wer = self.output_var("wer")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        values = {s: float(w.get() if isinstance(w, tk.Variable) else w) for s, w in self.wers.items()}
        best = min(sorted(values), key=lambda s: values[s])
        logging.info("dev WER by scale %s: best %s", values, best)
        self.out_scale.set(best)
        self.out_wer.set(values[best])
