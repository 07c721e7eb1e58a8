"""Joint recognition of a label-synchronous model (AED decoder, speech LLM) with CTC.

(a) :func:`joint_label_sync_search`: label-synchronous beam search with CTC prefix scores;
(b) :func:`joint_time_sync_search`: time-synchronous CTC prefix search adding the model score whenever a
hypothesis emits a new label. Its optimisations, each with a switch: soft collapse of CTC frames, top-k label
pruning by CTC (both change results slightly; off by default), scoring only hypotheses that got a new label,
batching the model calls over beams and utterances (both on by default, same results as off).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from llmasr.search.beam_search import beam_search
from llmasr.search.ctc import CTCSearchStats, ctc_beam_search, soft_collapse
from llmasr.search.ctc_prefix_scorer import CTCPrefixScorer
from llmasr.search.scorer import LabelScorer


def joint_label_sync_search(
    scorers: Dict[str, Tuple[LabelScorer, float]], ctc_log_probs: torch.Tensor, ctc_lengths: torch.Tensor, *,
    ctc_scale: float, blank: int, bos: int, eos: int, beam_size: int, max_len: int,
    length_norm_exponent: float = 0.0, pre_beam_size: Optional[int] = None, length_norm_counts_eos: bool = False,
) -> List[List[dict]]:
    """Beam search over ``scorers`` plus ``ctc_scale`` * CTC prefix score (score name "ctc");
    ctc_scale 0 = plain beam search. ``ctc_log_probs`` [B, T, V] share label ids with the model."""
    partial = {}
    if ctc_scale:
        partial["ctc"] = (CTCPrefixScorer(ctc_log_probs, ctc_lengths, blank=blank, eos=eos), ctc_scale)
    return beam_search(scorers, ctc_log_probs.shape[0], beam_size, bos, eos, max_len, length_norm_exponent,
                       partial_scorers=partial, pre_beam_size=pre_beam_size,
                       length_norm_counts_eos=length_norm_counts_eos)


def joint_time_sync_search(
    model: LabelScorer, ctc_log_probs: torch.Tensor, ctc_lengths: torch.Tensor, *, model_scale: float = 1.0,
    blank: int, bos: int, eos: int, beam_size: int, label_topk: Optional[int] = None,
    soft_collapse_threshold: Optional[float] = None, extra_scorers: Optional[Dict[str, Tuple[LabelScorer, float]]] = None,
    score_new_labels_only: bool = True, batch_size: Optional[int] = None, batch_hyps: bool = True,
    stats: Optional[CTCSearchStats] = None, **kwargs,
) -> List[List[dict]]:
    """Time-synchronous CTC search with ``model_scale * log p_model(label | prefix)`` (score name "am")
    added per new label and ``log p_model(eos | labels)`` at the end.

    :param soft_collapse_threshold: if set, frames are merged first (see :func:`llmasr.search.ctc.soft_collapse`)
    :param label_topk: top-k label pruning by CTC per frame
    :param score_new_labels_only: False runs the model for every hypothesis every frame (naive reference)
    :param batch_size: utterances searched together (None = all, 1 = one at a time)
    :param batch_hyps: False = one model call per hypothesis instead of one per shared state object
    :param stats: work counters (frames searched, expansions, model calls and rows) to add to
    :param kwargs: further options of :func:`llmasr.search.ctc.ctc_beam_search`
    """
    if soft_collapse_threshold is not None:
        ctc_log_probs, ctc_lengths = soft_collapse(ctc_log_probs, ctc_lengths, blank=blank,
                                                   blank_threshold=soft_collapse_threshold)
    scorers = {"am": (model, model_scale), **(extra_scorers or {})}
    return ctc_beam_search(ctc_log_probs, ctc_lengths, blank=blank, beam_size=beam_size, scorers=scorers,
                           bos=bos, eos=eos, label_topk=label_topk, score_new_labels_only=score_new_labels_only,
                           batch_size=batch_size, batch_hyps=batch_hyps, stats=stats, **kwargs)
