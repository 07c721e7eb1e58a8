"""LabelScorer for a :class:`SpeechLLM`: the speech prefix is run once, then next tokens use the KV cache."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer


@dataclasses.dataclass
class SpeechLLMState:
    """Per-row state: HF DynamicCache (None before the first step), attention mask [N,T], next position [N]."""

    cache: object
    mask: torch.Tensor
    pos: torch.Tensor
    logprobs: Optional[torch.Tensor] = None  # log p(next | prefix) after the last consumed label


def _select_cache(cache, indices: torch.Tensor):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, indices), layer.values.index_select(0, indices))
                                        for layer in cache.layers])


class SpeechLLMScorer(LabelScorer):
    """Scores LLM tokens given the speech of each utterance; call :meth:`set_audio` per batch first.

    :param model: a :class:`llmasr.models.speech_llm.SpeechLLM`
    :param use_cache: False recomputes the full sequence every step (reference for tests)
    """

    def __init__(self, model, *, use_cache: bool = True):
        self.model = model
        self.use_cache = use_cache
        self.eos_id = model.cfg.eos_id
        self._prefix = None

    @torch.no_grad()
    def set_audio(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> None:
        """Computes the (left-padded) prefix embeddings for the utterances of the batch."""
        self._prefix = self.model.prefix_embeddings(audio, audio_lens)

    @torch.no_grad()
    def initial_state(self, batch_indices: torch.Tensor) -> SpeechLLMState:
        from transformers import DynamicCache

        emb, mask = self._prefix
        emb, mask = emb[batch_indices], mask[batch_indices]
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        if not self.use_cache:
            return SpeechLLMState(cache=emb, mask=mask, pos=pos[:, -1] + 1)
        cache = DynamicCache()
        self.model.llm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True)
        return SpeechLLMState(cache=cache, mask=mask, pos=pos[:, -1] + 1)

    @torch.no_grad()
    def score(self, state: SpeechLLMState, labels: torch.Tensor) -> Tuple[torch.Tensor, SpeechLLMState]:
        tok_emb = self.model.embed(labels)[:, None]
        mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], 1)
        if self.use_cache:
            out = self.model.llm(inputs_embeds=tok_emb, attention_mask=mask, position_ids=state.pos[:, None],
                                 past_key_values=state.cache, use_cache=True)
            cache = out.past_key_values
        else:
            cache = torch.cat([state.cache, tok_emb], 1)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = self.model.llm(inputs_embeds=cache, attention_mask=mask, position_ids=pos)
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        return logprobs, SpeechLLMState(cache=cache, mask=mask, pos=state.pos + 1, logprobs=logprobs)

    def select(self, state: SpeechLLMState, indices: torch.Tensor) -> SpeechLLMState:
        cache = _select_cache(state.cache, indices) if self.use_cache else state.cache.index_select(0, indices)
        lp = None if state.logprobs is None else state.logprobs.index_select(0, indices)
        return SpeechLLMState(cache=cache, mask=state.mask.index_select(0, indices),
                              pos=state.pos.index_select(0, indices), logprobs=lp)

    def final_score(self, state: SpeechLLMState) -> torch.Tensor:
        """log p(EOS | prefix) from the last step."""
        return state.logprobs[:, self.eos_id]
