"""Label-wise shallow fusion: AM and LLM share units, each new label adds lm_scale*log p_LM - prior_scale*log prior.

CTC: the project's time-synchronous CTC prefix search (:func:`llmasr.search.ctc.ctc_beam_search`) with the LLM
as a label scorer: its state advances only for hypotheses that emitted a new label (one KV-cached call per
frame for all hypotheses of all utterances), equal label sequences recombine. AED: the label-synchronous beam
search over weighted scorers, with the LLM and the prior as two more scorers.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from llmasr.search.ctc_fusion import SearchStats, ctc_search_without_llm, run_ctc_fusion
from llmasr.search.llm_scorer import LLMScorer
from llmasr.search.scorer import LabelScorer
from llmasr.search.scorers import LabelPriorScorer


def ctc_labelwise_fusion_search(
    ctc_logprobs: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    llm_scorer: Optional[LLMScorer],
    blank: int,
    beam_size: int = 8,
    label_topk: Optional[int] = None,
    lm_scale: float = 0.5,
    log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0,
    length_reward: float = 0.0,
    labels_to_text: Optional[Callable[[Sequence[int]], str]] = None,
    nbest: int = 1,
    stats: Optional[SearchStats] = None,
) -> List[List[dict]]:
    """Time-synchronous CTC prefix beam search with label-wise LLM fusion, per utterance.

    :param ctc_logprobs: [B, T, V] (or [T, V]) CTC log-probs over the AM labels (incl. ``blank``).
    :param llm_scorer: LLM over the same units (its ``label_to_token`` maps AM labels to LLM ids).
    :param label_topk: labels tried per frame, the best by CTC (default ``beam_size``).
    Returns per utterance the N-best list (shared N-best entry format) with the LLM's EOS scored at the end.
    """
    if llm_scorer is None or lm_scale == 0.0:
        return ctc_search_without_llm(ctc_logprobs, lengths, blank=blank, beam_size=beam_size, label_topk=label_topk,
                                      log_prior=log_prior, prior_scale=prior_scale, length_reward=length_reward,
                                      labels_to_text=labels_to_text, nbest=nbest, stats=stats)
    return run_ctc_fusion(ctc_logprobs, lengths, llm_scorer, stats, blank=blank, beam_size=beam_size,
                          label_topk=label_topk, labels_to_text=labels_to_text, nbest=nbest,
                          scorers={"lm": (llm_scorer, lm_scale)}, bos=llm_scorer.bos_id, score_final=True,
                          log_prior=log_prior, prior_scale=prior_scale, length_reward=length_reward)


def labelwise_scorers(
    decoder: LabelScorer, llm_scorer: LLMScorer, *, lm_scale: float, log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0, extra: Optional[Dict[str, Tuple[LabelScorer, float]]] = None,
) -> Dict[str, Tuple[LabelScorer, float]]:
    """The weighted scorers of AED + LLM label-wise fusion for the label-synchronous beam search."""
    scorers: Dict[str, Tuple[LabelScorer, float]] = {"decoder": (decoder, 1.0), "lm": (llm_scorer, lm_scale)}
    if log_prior is not None and prior_scale:
        scorers["prior"] = (LabelPriorScorer(log_prior), -prior_scale)
    scorers.update(extra or {})
    return scorers


def aed_labelwise_fusion_search(decoder: LabelScorer, llm_scorer: LLMScorer, *, lm_scale: float,
                                log_prior: Optional[torch.Tensor] = None, prior_scale: float = 0.0,
                                **beam_search_kwargs):
    """AED + LLM label-wise fusion: :func:`llmasr.search.beam_search.beam_search` over the fused scorers.

    ``beam_search_kwargs`` go to the beam search (batch size, beam size, BOS/EOS, max length, ...).
    """
    from llmasr.search.beam_search import beam_search

    scorers = labelwise_scorers(decoder, llm_scorer, lm_scale=lm_scale, log_prior=log_prior,
                                prior_scale=prior_scale)
    return beam_search(scorers=scorers, **beam_search_kwargs)
