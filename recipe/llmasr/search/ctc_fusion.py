"""What label-wise and delayed LLM fusion on the CTC prefix search (:func:`llmasr.search.ctc.ctc_beam_search`) share:
the run over a batch of CTC outputs with its work counters, the shared N-best entry format of the results, and the
search without an LLM (the label prior subtracted once an utterance has ended)."""
from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional, Sequence

import torch

from llmasr.search.ctc import FrameScorer, Hypothesis, ctc_beam_search
from llmasr.search.llm_scorer import LLMScorer


@dataclasses.dataclass
class SearchStats:
    """LLM forward calls and the tokens they scored (padding excluded) in one search, counted by the LLM scorer,
    and the frames searched."""

    llm_forward_calls: int = 0
    llm_forward_tokens: int = 0
    frames: int = 0


def fusion_results(out: List[List[dict]], labels_to_text) -> List[List[dict]]:
    """Core search results in the shared N-best entry format (CTC score also as "am", text, all scores)."""
    for hyps in out:
        for h in hyps:
            sc = h["scores"]
            sc["am"] = sc["ctc"]
            sc.setdefault("lm", 0.0)
            sc.setdefault("prior", 0.0)
            h["text"] = labels_to_text(h["labels"]) if labels_to_text is not None else ""
    return out


def run_ctc_fusion(ctc_logprobs: torch.Tensor, lengths: Optional[torch.Tensor], llm_scorer: Optional[LLMScorer],
                   stats: Optional[SearchStats], *, blank: int, labels_to_text, label_topk: Optional[int],
                   beam_size: int, **kwargs) -> List[List[dict]]:
    """Runs :func:`llmasr.search.ctc.ctc_beam_search` on ``ctc_logprobs`` [B, T, V] (or [T, V]) and counts the
    LLM work in ``stats``; ``label_topk`` defaults to ``beam_size``."""
    if ctc_logprobs.dim() == 2:
        ctc_logprobs = ctc_logprobs[None]
    n, _, vocab = ctc_logprobs.shape
    if lengths is None:
        lengths = torch.full((n,), ctc_logprobs.shape[1], dtype=torch.long)
    if blank < 0 or blank >= vocab:
        raise ValueError(f"blank index {blank} outside the CTC output of size {vocab}")
    log_prior = kwargs.get("log_prior")
    if log_prior is not None and log_prior.shape[0] != vocab:
        raise ValueError(f"log_prior has {log_prior.shape[0]} entries but the CTC output has {vocab}")
    calls0 = llm_scorer.num_forward_calls if llm_scorer is not None else 0
    toks0 = llm_scorer.num_forward_tokens if llm_scorer is not None else 0
    out = ctc_beam_search(ctc_logprobs.float(), lengths, blank=blank, beam_size=beam_size,
                          label_topk=min(label_topk or beam_size, vocab - 1), **kwargs)
    if stats is not None:
        stats.frames += int(lengths.sum())
        if llm_scorer is not None:
            stats.llm_forward_calls += llm_scorer.num_forward_calls - calls0
            stats.llm_forward_tokens += llm_scorer.num_forward_tokens - toks0
    return fusion_results(out, labels_to_text)


class FinalPriorScorer(FrameScorer):
    """Records at an utterance's last frame the label log-prior of all its labels as "prior" (subtracted with
    ``prior_scale`` by the search), so that the beam itself is pruned by CTC alone."""

    def __init__(self, log_prior: Optional[torch.Tensor]):
        self.prior = None if log_prior is None else log_prior.detach().double().cpu().tolist()

    def start(self, utt_ids: torch.Tensor, roots: List[Hypothesis]) -> None:
        pass

    def update(self, t: int, beams: List[List[Hypothesis]], final: List[bool]) -> None:
        for beam, last in zip(beams, final):
            if last:
                for h in beam:
                    h.scores["prior"] = 0.0 if self.prior is None else sum(self.prior[x] for x in h.labels)


def ctc_search_without_llm(
    ctc_logprobs: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    blank: int,
    beam_size: int,
    label_topk: Optional[int] = None,
    log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0,
    length_reward: float = 0.0,
    labels_to_text: Optional[Callable[[Sequence[int]], str]] = None,
    nbest: int = 1,
    stats: Optional[SearchStats] = None,
) -> List[List[dict]]:
    """The CTC prefix search that fusion with ``lm_scale=0`` comes down to: the prior of a hypothesis' labels is
    subtracted once its utterance has ended (an N-best for rescoring). Arguments as in
    :func:`llmasr.search.delayed_scorer.delayed_fusion_search`."""
    return run_ctc_fusion(ctc_logprobs, lengths, None, stats, blank=blank, beam_size=beam_size, label_topk=label_topk,
                          labels_to_text=labels_to_text, nbest=nbest, prior_scale=prior_scale,
                          length_reward=length_reward, frame_scorers=[FinalPriorScorer(log_prior)])
