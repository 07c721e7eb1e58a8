"""The AED decoder of :class:`llmasr.models.conformer_modules.ConformerAedModel` as a :class:`LabelScorer` for the searches.

The model knows nothing of searches; this adapter feeds its cached incremental decoder steps to them.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from llmasr.models.conformer_modules import ConformerAedModel, select_state
from llmasr.search.scorer import LabelScorer


class AedDecoderScorer(LabelScorer):
    """The AED decoder over encoder outputs ``enc`` [B, T, D] (``enc_lengths`` [B]) of a batch of utterances, with
    cached incremental steps; its final score is log p(EOS | labels)."""

    def __init__(self, model: ConformerAedModel, enc: torch.Tensor, enc_lengths: torch.Tensor):
        self.model = model
        self.enc = enc
        self.enc_lengths = enc_lengths
        self.eos_idx = model.cfg.eos_idx
        self._base = model.decoder.initial_step_state(enc, enc_lengths)

    def initial_state(self, batch_indices: torch.Tensor) -> Dict[str, Any]:
        st = {"cross_kv": select_state(self._base["cross_kv"], batch_indices),
              "cross_mask": self._base["cross_mask"].index_select(0, batch_indices),
              "self_kv": [None] * len(self.model.decoder.layers),
              "pos": torch.zeros(len(batch_indices), dtype=torch.long, device=self.enc.device)}
        return {"dec": st, "last": None}

    def score(self, state, labels: torch.Tensor):
        logits, dec = self.model.decoder.step(labels, state["dec"])
        logp = logits.float().log_softmax(-1)
        return logp, {"dec": dec, "last": logp}

    def select(self, state, indices: torch.Tensor):
        return select_state(state, indices)

    def final_score(self, state) -> torch.Tensor:
        if state["last"] is None:
            raise ValueError("AedDecoderScorer.final_score before the first score() call")
        return state["last"][:, self.eos_idx]
