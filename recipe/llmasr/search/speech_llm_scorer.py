"""LabelScorer for a :class:`SpeechLLM`: the LLM prefix before BOS is run once, then next tokens use the KV cache.

PREFIX interface: the prefix is [prompt_pre, speech, prompt_post]. CROSS_ATTENTION interface: the prefix is only the
text prompt, and every LLM call attends to the speech memory of each row's utterance (its keys/values are projected
once per batch).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from llmasr.search.scorer import LabelScorer


@dataclasses.dataclass
class SpeechLLMState:
    """Per-row state: HF DynamicCache (None while nothing was consumed; the prefix embeddings [N,L,H] when
    uncached), attention mask [N,T], next position [N], utterance of each row [N] (speech memory)."""

    cache: object
    mask: torch.Tensor
    pos: torch.Tensor
    logprobs: Optional[torch.Tensor] = None  # log p(next | prefix) after the last consumed label
    rows: Optional[torch.Tensor] = None


def _select_cache(cache, indices: torch.Tensor):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, indices), layer.values.index_select(0, indices))
                                        for layer in cache.layers])


class SpeechLLMScorer(LabelScorer):
    """Scores LLM tokens given the speech of each utterance; call :meth:`set_audio` per batch first.

    :param model: a :class:`llmasr.models.speech_llm_modules.SpeechLLM` (either interface)
    :param use_cache: False recomputes the full sequence every step (reference for tests)
    """

    def __init__(self, model, *, use_cache: bool = True):
        self.model = model
        self.use_cache = use_cache
        self.eos_id = model.cfg.eos_id
        self._prefix = None
        self._memory = None

    @torch.no_grad()
    def set_audio(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> None:
        """Computes the (left-padded) prefix embeddings and the speech memory for the utterances of the batch."""
        prefix, mask, self._memory = self.model.speech_inputs(audio, audio_lens)
        self._prefix = (prefix, mask)

    def _memory_for(self, rows: torch.Tensor):
        return None if self._memory is None else self._memory.for_rows(rows)

    @torch.no_grad()
    def initial_state(self, batch_indices: torch.Tensor) -> SpeechLLMState:
        if self._prefix is None:
            raise RuntimeError("SpeechLLMScorer.initial_state before set_audio")
        emb, mask = self._prefix
        rows = batch_indices.to(emb.device)
        emb, mask = emb.index_select(0, rows), mask.index_select(0, rows)
        pos = mask.sum(1)
        if not self.use_cache or emb.shape[1] == 0:
            return SpeechLLMState(cache=emb if not self.use_cache else None, mask=mask, pos=pos, rows=rows)
        out = self.model.run_llm(self._memory_for(rows), inputs_embeds=emb, attention_mask=mask,
                                 position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=True)
        return SpeechLLMState(cache=out.cache, mask=mask, pos=pos, rows=rows)

    @torch.no_grad()
    def score(self, state: SpeechLLMState, labels: torch.Tensor) -> Tuple[torch.Tensor, SpeechLLMState]:
        tok_emb = self.model.embed(labels)[:, None]
        mask = torch.cat([state.mask, state.mask.new_ones(state.mask.shape[0], 1)], 1)
        memory = self._memory_for(state.rows)
        if self.use_cache:
            out = self.model.run_llm(memory, inputs_embeds=tok_emb, attention_mask=mask,
                                     position_ids=state.pos[:, None], cache=state.cache, use_cache=True)
            cache = out.cache
        else:
            cache = torch.cat([state.cache, tok_emb], 1)
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            out = self.model.run_llm(memory, inputs_embeds=cache, attention_mask=mask, position_ids=pos)
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        return logprobs, SpeechLLMState(cache=cache, mask=mask, pos=state.pos + 1, logprobs=logprobs, rows=state.rows)

    def select(self, state: SpeechLLMState, indices: torch.Tensor) -> SpeechLLMState:
        if state.cache is None:
            cache = None
        elif self.use_cache:
            cache = _select_cache(state.cache, indices)
        else:
            cache = state.cache.index_select(0, indices)
        lp = None if state.logprobs is None else state.logprobs.index_select(0, indices)
        rows = None if state.rows is None else state.rows.index_select(0, indices)
        return SpeechLLMState(cache=cache, mask=state.mask.index_select(0, indices),
                              pos=state.pos.index_select(0, indices), logprobs=lp, rows=rows)

    def concat(self, states) -> SpeechLLMState:
        """Rows of several cached states in one: caches and masks right-padded to the longest (padding masked;
        position ids are explicit, so the padding changes no score)."""
        if len(states) == 1:
            return states[0]
        if not self.use_cache or any(s.cache is None or s.logprobs is None for s in states):
            raise NotImplementedError("SpeechLLMScorer.concat needs cached states after a scored label")
        from transformers import DynamicCache

        width = max(s.mask.shape[1] for s in states)

        def pad(x: torch.Tensor, dim: int) -> torch.Tensor:
            shape = list(x.shape)
            shape[dim] = width - x.shape[dim]
            return x if not shape[dim] else torch.cat([x, x.new_zeros(shape)], dim)

        layers = [(torch.cat([pad(s.cache.layers[i].keys, 2) for s in states]),
                   torch.cat([pad(s.cache.layers[i].values, 2) for s in states]))
                  for i in range(len(states[0].cache.layers))]
        return SpeechLLMState(cache=DynamicCache(ddp_cache_data=layers), mask=torch.cat([pad(s.mask, 1) for s in states]),
                              pos=torch.cat([s.pos for s in states]), logprobs=torch.cat([s.logprobs for s in states]),
                              rows=None if states[0].rows is None else torch.cat([s.rows for s in states]))

    def final_score(self, state: SpeechLLMState) -> torch.Tensor:
        """log p(EOS | prefix) from the last step."""
        return state.logprobs[:, self.eos_id]
