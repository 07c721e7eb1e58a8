"""An external causal LLM as a label scorer (shallow fusion), with a KV cache batched over hypotheses.

Rows of a state are hypotheses. Each row may consume a different number of new tokens per call (delayed
fusion scores all pending tokens of all hypotheses in one call), so the cache holds padded positions
marked invalid in an attention mask, and positions are given explicitly; the cache is compacted when
padding dominates. :func:`llmasr.models.llm.score_sequences` is the uncached full-forward reference (N-best
rescoring).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch

from llmasr.search.scorer import LabelScorer


@dataclasses.dataclass
class LLMState:
    """Per-row LLM state. cache: HF DynamicCache over [N, heads, T, dim]; mask [N, T] (1 = real token);
    length [N] real tokens so far (= next position id); next_logprobs [N, V_llm] = log p(next | prefix)."""

    batch_indices: torch.Tensor
    tokens: List[List[int]]
    cache: Optional[object] = None
    mask: Optional[torch.Tensor] = None
    length: Optional[torch.Tensor] = None
    next_logprobs: Optional[torch.Tensor] = None


def _select_cache(cache, indices: torch.Tensor):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, indices), layer.values.index_select(0, indices))
                                        for layer in cache.layers])


class LLMScorer(LabelScorer):
    """Next-token log-probs of a HF causal LM for a batch of hypotheses, KV-cached.

    :param model: a HF causal LM (``AutoModelForCausalLM``), in eval mode.
    :param bos_id: LLM token fed first. :param eos_id: LLM token whose log-prob is the final score.
    :param label_to_token: optional [V_labels] map from search labels to LLM tokens (-1: no token, scored
        -inf); identity when None (AM and LLM share units).
    :param use_cache: False recomputes the full prefix every call (reference/benchmark only).
    """

    def __init__(self, model, *, bos_id: int, eos_id: int, label_to_token: Optional[torch.Tensor] = None,
                 use_cache: bool = True, compact_ratio: float = 2.0):
        self.model = model
        self.bos_id = int(bos_id)
        self.eos_id = int(eos_id)
        self.label_to_token = label_to_token
        self.use_cache = use_cache
        self.compact_ratio = compact_ratio
        self.num_forward_calls = 0
        self.num_forward_tokens = 0
        try:
            self.device = next(model.parameters()).device
        except StopIteration:  # pragma: no cover
            self.device = torch.device("cpu")

    # --- LabelScorer interface -------------------------------------------------------------------
    def initial_state(self, batch_indices: torch.Tensor) -> LLMState:
        return LLMState(batch_indices=batch_indices, tokens=[[] for _ in range(len(batch_indices))])

    def start(self, batch_indices: torch.Tensor) -> LLMState:
        """Initial state with BOS already consumed (``next_logprobs`` is log p(first token))."""
        state = self.initial_state(batch_indices)
        _, state = self.advance(state, [[self.bos_id] for _ in range(len(batch_indices))])
        return state

    def score(self, state: LLMState, labels: torch.Tensor) -> Tuple[torch.Tensor, LLMState]:
        """Consumes one label per row (BOS on an empty state) and returns [N, V_labels] log-probs."""
        if state.next_logprobs is None:
            toks = [[self.bos_id] for _ in range(len(labels))]
        else:
            toks = [[t] for t in self.labels_to_tokens(labels).tolist()]
        _, state = self.advance(state, toks)
        return self.to_label_space(state.next_logprobs), state

    def select(self, state: LLMState, indices: torch.Tensor) -> LLMState:
        idx = indices.to(torch.long)
        il = idx.tolist()
        return LLMState(
            batch_indices=state.batch_indices[idx.to(state.batch_indices.device)],
            tokens=[list(state.tokens[i]) for i in il],
            cache=None if state.cache is None else _select_cache(state.cache, idx.to(self.device)),
            mask=None if state.mask is None else state.mask[idx.to(state.mask.device)],
            length=None if state.length is None else state.length[idx.to(state.length.device)],
            next_logprobs=None if state.next_logprobs is None else state.next_logprobs[idx.to(self.device)],
        )

    def concat(self, states: Sequence[LLMState]) -> LLMState:
        """Rows of several states in one: caches and masks are right-padded to the longest (padding masked)."""
        if len(states) == 1:
            return states[0]
        if any(s.cache is None or s.next_logprobs is None for s in states):
            raise NotImplementedError("LLMScorer.concat needs states that consumed BOS with the KV cache")
        width = max(s.mask.shape[1] for s in states)

        def pad(x: torch.Tensor, dim: int) -> torch.Tensor:
            extra = width - x.shape[dim]
            if not extra:
                return x
            shape = list(x.shape)
            shape[dim] = extra
            return torch.cat([x, x.new_zeros(shape)], dim)

        from transformers import DynamicCache

        layers = [(torch.cat([pad(s.cache.layers[i].keys, 2) for s in states]),
                   torch.cat([pad(s.cache.layers[i].values, 2) for s in states]))
                  for i in range(len(states[0].cache.layers))]
        return LLMState(batch_indices=torch.cat([s.batch_indices for s in states]),
                        tokens=[list(t) for s in states for t in s.tokens], cache=DynamicCache(ddp_cache_data=layers),
                        mask=torch.cat([pad(s.mask, 1) for s in states]), length=torch.cat([s.length for s in states]),
                        next_logprobs=torch.cat([s.next_logprobs for s in states]))

    def final_score(self, state: LLMState) -> torch.Tensor:
        """log p(EOS | prefix) per row."""
        if state.next_logprobs is None:
            raise ValueError("final_score on a state that has not consumed BOS")
        return state.next_logprobs[:, self.eos_id]

    # --- label <-> token mapping -----------------------------------------------------------------
    def labels_to_tokens(self, labels: torch.Tensor) -> torch.Tensor:
        if self.label_to_token is None:
            return labels
        return self.label_to_token.to(labels.device)[labels]

    def to_label_space(self, logprobs: torch.Tensor) -> torch.Tensor:
        """[N, V_llm] -> [N, V_labels] through ``label_to_token`` (labels without a token get -inf)."""
        if self.label_to_token is None:
            return logprobs
        m = self.label_to_token.to(logprobs.device)
        out = logprobs[:, m.clamp(min=0)]
        return out.masked_fill((m < 0)[None, :], float("-inf"))

    # --- batched variable-length advance ---------------------------------------------------------
    @torch.no_grad()
    def advance(self, state: LLMState, new_tokens: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, LLMState]:
        """Consumes a (possibly empty) token list per row in one LLM call.

        Returns the summed log-probs [N] of the consumed tokens (the very first token, BOS, scores 0)
        and the new state. Rows without new tokens keep their scores; no call when all are empty.
        The input state's cache is extended in place: use only the returned state afterwards (as
        with :meth:`score`); :meth:`select` makes independent copies.
        """
        n = len(new_tokens)
        if n != len(state.tokens):
            raise ValueError(f"advance: {n} token lists for a state of {len(state.tokens)} rows")
        counts = [len(t) for t in new_tokens]
        sums = torch.zeros(n, device=self.device)
        if max(counts, default=0) == 0:
            return sums, state
        if self.use_cache:
            logp_chunk, new_state = self._advance_cached(state, new_tokens, counts)
        else:
            logp_chunk, new_state = self._advance_full(state, new_tokens, counts)
        # logp_chunk [N, C, V]: log p(. | prefix + new_tokens[:j+1]) for j < counts[row]
        c = logp_chunk.shape[1]
        ids = torch.full((n, c), self.eos_id, dtype=torch.long)
        valid = torch.zeros((n, c), dtype=torch.bool)
        for i, toks in enumerate(new_tokens):
            ids[i, : len(toks)] = torch.tensor(list(toks), dtype=torch.long)
            valid[i, : len(toks)] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        if c > 1:  # tokens 2.. of each row, predicted inside the chunk
            rest = logp_chunk[:, :-1].gather(2, ids[:, 1:, None])[..., 0]  # [N, C-1]
            sums = sums + torch.where(valid[:, 1:], rest, torch.zeros_like(rest)).sum(1)
        if state.next_logprobs is not None:  # the first token, predicted by the previous call
            first = state.next_logprobs.gather(1, ids[:, :1])[:, 0]
            sums = sums + torch.where(valid[:, 0], first, torch.zeros_like(first))
        return sums, new_state

    def _forward(self, **kwargs):
        self.num_forward_calls += 1
        return self.model(**kwargs)

    def _advance_cached(self, state: LLMState, new_tokens, counts):
        from transformers import DynamicCache

        n, c = len(new_tokens), max(counts)
        ids = torch.full((n, c), self.eos_id, dtype=torch.long)
        chunk_mask = torch.zeros((n, c), dtype=torch.long)
        for i, toks in enumerate(new_tokens):
            ids[i, : len(toks)] = torch.tensor(list(toks), dtype=torch.long)
            chunk_mask[i, : len(toks)] = 1
        length = state.length if state.length is not None else torch.zeros(n, dtype=torch.long)
        pos = length[:, None] + torch.arange(c)[None, :]
        past_mask = state.mask if state.mask is not None else torch.zeros((n, 0), dtype=torch.long)
        mask = torch.cat([past_mask, chunk_mask], dim=1)
        cache = state.cache if state.cache is not None else DynamicCache()  # appended to in place
        self.num_forward_tokens += int(chunk_mask.sum())
        out = self._forward(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                            position_ids=pos.to(self.device), cache=cache, use_cache=True)
        logp = out.logits.float().log_softmax(-1)  # [N, C, V]
        last = torch.tensor([max(k - 1, 0) for k in counts], device=self.device)
        next_lp = logp[torch.arange(n, device=self.device), last]
        has_new = torch.tensor([k > 0 for k in counts], device=self.device)
        if state.next_logprobs is not None:
            next_lp = torch.where(has_new[:, None], next_lp, state.next_logprobs)
        new_state = LLMState(
            batch_indices=state.batch_indices,
            tokens=[list(a) + list(b) for a, b in zip(state.tokens, new_tokens)],
            cache=out.cache if getattr(out, "cache", None) is not None else cache,
            mask=mask, length=length + torch.tensor(counts, dtype=torch.long), next_logprobs=next_lp,
        )
        if new_state.mask.shape[1] > self.compact_ratio * int(new_state.length.max()) + 4:
            new_state = self._compact(new_state)
        return logp, new_state

    def _compact(self, state: LLMState) -> LLMState:
        """Drops padded cache positions: each row's real positions are moved to the left."""
        from transformers import DynamicCache

        mask = state.mask.bool()
        n, t = mask.shape
        width = int(state.length.max())
        # stable order of real positions first, padding after
        order = torch.argsort((~mask).long() * t + torch.arange(t)[None, :], dim=1)[:, :width]
        new_mask = (torch.arange(width)[None, :] < state.length[:, None]).long()
        gidx = order.to(self.device)
        layers = []
        for layer in state.cache.layers:
            k, v = layer.keys, layer.values  # [N, H, T, D]
            g = gidx[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            layers.append((k.gather(2, g), v.gather(2, g)))
        return dataclasses.replace(state, cache=DynamicCache(ddp_cache_data=layers), mask=new_mask)

    def _advance_full(self, state: LLMState, new_tokens, counts):
        """Uncached reference: recomputes each row's whole token history (right-padded)."""
        n, c = len(new_tokens), max(counts)
        seqs = [list(a) + list(b) for a, b in zip(state.tokens, new_tokens)]
        width = max(len(s) for s in seqs)
        ids = torch.full((n, width), self.eos_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        self.num_forward_tokens += int(mask.sum())
        out = self._forward(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        logp_all = out.logits.float().log_softmax(-1)  # [N, W, V]
        v = logp_all.shape[-1]
        logp = torch.zeros((n, c, v), device=self.device)
        next_lp = torch.zeros((n, v), device=self.device)
        for i, s in enumerate(seqs):
            start = len(state.tokens[i])
            if counts[i]:
                logp[i, : counts[i]] = logp_all[i, start : start + counts[i]]
            next_lp[i] = logp_all[i, len(s) - 1]
        if state.next_logprobs is not None:
            has_new = torch.tensor([k > 0 for k in counts], device=self.device)
            next_lp = torch.where(has_new[:, None], next_lp, state.next_logprobs)
        length = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return logp, LLMState(batch_indices=state.batch_indices, tokens=seqs, length=length, next_logprobs=next_lp)
