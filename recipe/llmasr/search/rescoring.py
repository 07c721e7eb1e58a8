"""N-best rescoring with an LLM: am + lm_scale*lm - prior_scale*prior + length_reward*length.

The LLM scores each hypothesis in one batched full forward (BOS ... EOS). The rescored N-best keeps
the LLM score in ``scores["lm"]`` so that scale tuning can reuse it without running the LLM again.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob

from llmasr.search.nbest import am_score, hypothesis_length

NBest = Dict[str, List[dict]]
Scale = Union[float, "tk.Variable"]


def resolve_scale(value, name: str) -> float:
    """A float, or a ``tk.Variable`` (e.g. from :class:`llmasr.tuning.scales.TuneScalesJob`) read at run time."""
    if hasattr(value, "get"):
        value = value.get()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a Variable holding one, got {value!r}") from None


def combine_scores(nbest: NBest, *, lm_scale: float, prior_scale: float = 0.0, length_reward: float = 0.0,
                   am_key: str = "am", nbest_size: Optional[int] = None) -> NBest:
    """New N-best with ``score`` = am + lm_scale*lm - prior_scale*prior + length_reward*length, re-sorted."""
    out: NBest = {}
    for seq_id, hyps in nbest.items():
        new = []
        for h in hyps:
            scores = dict(h.get("scores", {}))
            if lm_scale and "lm" not in scores:
                raise ValueError(f"N-best entry of {seq_id!r} has no 'lm' score (rescore it with an LLM first)")
            if prior_scale and "prior" not in scores:
                raise ValueError(f"N-best entry of {seq_id!r} has no 'prior' score but prior_scale={prior_scale}")
            total = (am_score(h, am_key, seq_id) + lm_scale * scores.get("lm", 0.0)
                     - prior_scale * scores.get("prior", 0.0) + length_reward * hypothesis_length(h))
            new.append(dict(h, scores=scores, score=total))
        new.sort(key=lambda x: x["score"], reverse=True)
        out[seq_id] = new[:nbest_size] if nbest_size else new
    return out


def add_lm_scores(nbest: NBest, model, to_tokens: Callable[[dict], List[int]], *, bos: int, eos: int,
                  batch_size: int = 32) -> NBest:
    """Sets ``scores["lm"]`` = log p_LLM(tokens + EOS | BOS) for every hypothesis (batched over all)."""
    from llmasr.models.llm import score_sequences

    flat = [(seq_id, i) for seq_id, hyps in nbest.items() for i in range(len(hyps))]
    tokens = [to_tokens(nbest[s][i]) for s, i in flat]
    lm = score_sequences(model, tokens, bos, eos, batch_size=batch_size)
    out: NBest = {s: [dict(h, scores=dict(h.get("scores", {}))) for h in hyps] for s, hyps in nbest.items()}
    for (s, i), v in zip(flat, lm):
        out[s][i]["scores"]["lm"] = v
    return out


def rescore_nbest(nbest: NBest, model, to_tokens: Callable[[dict], List[int]], *, bos: int, eos: int,
                  lm_scale: float, prior_scale: float = 0.0, length_reward: float = 0.0, am_key: str = "am",
                  batch_size: int = 32) -> NBest:
    """LLM scores for all hypotheses, then the log-linear combination (see :func:`combine_scores`)."""
    scored = add_lm_scores(nbest, model, to_tokens, bos=bos, eos=eos, batch_size=batch_size)
    return combine_scores(scored, lm_scale=lm_scale, prior_scale=prior_scale, length_reward=length_reward,
                          am_key=am_key)


def read_log_prior(path: str):
    """A label log-prior vector: ``.npy`` or text (one log-probability per line / whitespace separated)."""
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"prior file not found: {path}")
    if path.endswith(".npy"):
        return np.load(path).astype("float64").reshape(-1)
    with open(path) as f:
        try:
            return np.array([float(x) for x in f.read().split()], dtype="float64")
        except ValueError as exc:
            raise ValueError(f"{path}: not a list of numbers: {exc}") from exc


def text_to_tokens(tokenizer) -> Callable[[dict], List[int]]:
    """Hypothesis -> LLM tokens of its words (word by word, as delayed fusion converts them)."""
    return lambda h: tokenizer.encode_words(h.get("text", "").split())


class RescoreNBestJob(ResourceJob):
    """Rescores AM N-best lists with an LLM and writes the re-ranked N-best (LM scores kept for tuning)."""

    def __init__(
        self,
        nbest: tk.Path,
        llm: Union[tk.Path, str],
        *,
        lm_scale: Scale = 0.0,
        prior_scale: Scale = 0.0,
        length_reward: Scale = 0.0,
        use_labels: bool = False,
        label_offset: int = 0,
        lowercase: Optional[bool] = None,
        log_prior: Optional[tk.Path] = None,
        am_key: str = "am",
        batch_size: int = 32,
        dtype: str = "float32",
        device: str = "cpu",
    ):
        """
        :param nbest: N-best file (``llmasr.search.nbest`` format) from a search job
        :param llm: LLM directory (``save_pretrained`` output, with its tokenizer) or hub name
        :param lm_scale: LLM weight, float or Variable (e.g. tuned on dev)
        :param prior_scale: label-prior weight (uses ``scores["prior"]`` or ``log_prior``)
        :param length_reward: reward per unit of ``scores["length"]``
        :param use_labels: score the hypotheses' AM labels (+ ``label_offset``) instead of re-tokenised
            text: for an LLM whose vocabulary was swapped to the AM units
        :param label_offset: added to AM label ids to get LLM token ids when ``use_labels``
        :param lowercase: lower-case text before tokenising (None: as the LLM was trained)
        :param log_prior: label log-prior file (.npy or text) when the N-best has no prior scores
        :param am_key: which score is the AM score ("am", "ctc", ...)
        :param batch_size: hypotheses per LLM forward
        :param dtype: LLM weights' dtype ("float32", "bfloat16")
        :param device: "cpu" or "cuda"
        """
        self.nbest = nbest
        self.llm = llm
        self.lm_scale = lm_scale
        self.prior_scale = prior_scale
        self.length_reward = length_reward
        self.use_labels = use_labels
        self.label_offset = label_offset
        self.lowercase = lowercase
        self.log_prior = log_prior
        self.am_key = am_key
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = device
        self.out_nbest = self.output_path("nbest.json.gz")
        self.out_best = self.output_path("best.json")
        self.rqmt = {"cpu": 1, "mem": 8, "time": 4, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import torch

        from llmasr.models.llm import load_llm, load_llm_tokenizer
        from llmasr.search.nbest import read_nbest, write_nbest

        lm_scale = resolve_scale(self.lm_scale, "lm_scale")
        prior_scale = resolve_scale(self.prior_scale, "prior_scale")
        length_reward = resolve_scale(self.length_reward, "length_reward")
        torch.set_num_threads(self.run_threads())
        llm_loc = self.llm.get_path() if hasattr(self.llm, "get_path") else str(self.llm)
        nbest = read_nbest(self.nbest.get_path())
        if self.log_prior is not None:
            prior = read_log_prior(self.log_prior.get_path())
            for seq_id, hyps in nbest.items():
                for h in hyps:
                    labels = h.get("labels") or []
                    if labels and max(labels) >= len(prior):
                        raise ValueError(f"{self.nbest.get_path()}: {seq_id}: label {max(labels)} outside the "
                                         f"prior of size {len(prior)} ({self.log_prior.get_path()})")
                    h.setdefault("scores", {})["prior"] = float(sum(prior[x] for x in labels))
        model = load_llm(llm_loc, dtype=self.dtype, device=self.run_device())
        tokenizer = load_llm_tokenizer(llm_loc, lowercase=self.lowercase)
        if self.use_labels:
            def to_tokens(h):
                if h.get("labels") is None:
                    raise ValueError(f"{self.nbest.get_path()}: use_labels=True but an entry has no labels")
                return [x + self.label_offset for x in h["labels"]]
        else:
            to_tokens = text_to_tokens(tokenizer)
        logging.info("rescoring %d utterances with %s (lm %.3f, prior %.3f, length %.3f)", len(nbest), llm_loc,
                     lm_scale, prior_scale, length_reward)
        out = rescore_nbest(nbest, model, to_tokens, bos=tokenizer.bos_id, eos=tokenizer.eos_id, lm_scale=lm_scale,
                            prior_scale=prior_scale, length_reward=length_reward, am_key=self.am_key,
                            batch_size=self.batch_size)
        write_nbest(out, self.out_nbest.get_path())
        import json

        tmp = self.out_best.get_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump({s: (h[0]["text"] if h else "") for s, h in out.items()}, f, indent=1, ensure_ascii=False)
        os.replace(tmp, self.out_best.get_path())
