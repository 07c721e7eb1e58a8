"""Speech LLM: acoustic encoder -> frame-stacking adapter -> decoder-only HF causal LM (Qwen2, Llama, ...).

Two ways for the LLM to see the speech (:class:`SpeechInterface`):

* PREFIX: the adapter outputs are a soft prompt between ``prompt_pre`` and ``prompt_post``, before BOS + text.
* CROSS_ATTENTION: gated cross-attention layers (Flamingo-style, tanh gate initialised to 0, so the LLM starts
  unchanged) are inserted before every ``cross_attention_every``-th decoder block and attend to the adapter outputs;
  the LLM input is only the text prompt + BOS + text. The HF decoder layers are wrapped in place, so the HF KV cache
  keeps working; the speech memory of the current batch is set on the model around each LLM call
  (:meth:`SpeechLLM.speech_memory`).

An optional aux CTC output layer on the encoder frames (before the adapter) adds a CTC loss.
:func:`build_speech_llm` builds the whole model from an LLM directory and an AED model config/checkpoint.
Its configs are in :mod:`llmasr.models.speech_llm`.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from llmasr.models.adapter import FrameStackAdapter
from llmasr.models.checkpoint import read_state_dict
from llmasr.models.lora import lora_config
from llmasr.models.speech_llm import (LLMTraining, ResolvedSpeechLLMConfig, SpeechInterface, SpeechLLMConfig,
                                      config_from_dict)

if TYPE_CHECKING:
    from llmasr.models.llm import LLMTokenizer

Segments = Dict[str, List[Tuple[int, int]]]


# ---------------------------------------------------------------------------------------------------------------
# cross-attention interface


class SpeechMemory:
    """What the cross-attention layers attend to: adapter outputs of a batch of utterances.

    :param frames: [B, T, H] adapter outputs
    :param mask: [B, T] bool, True on valid frames
    :param rows: [N] utterance index of each LLM batch row (beam search: several rows per utterance); None = identity

    Keys/values are projected once per layer over the B utterances (cached here) and gathered per row, so a beam
    search does not re-project the memory for every hypothesis and step.
    """

    def __init__(self, frames: torch.Tensor, mask: torch.Tensor, rows: Optional[torch.Tensor] = None, *,
                 _kv: Optional[Dict[int, torch.Tensor]] = None):
        self.frames = frames
        self.mask = mask
        self.rows = rows
        self._kv: Dict[int, torch.Tensor] = {} if _kv is None else _kv
        self.record_weights = False
        self.weights: Dict[int, torch.Tensor] = {}  # layer key -> [N, heads, L, T] when record_weights

    def for_rows(self, rows: torch.Tensor) -> "SpeechMemory":
        """The same memory (sharing the K/V cache) for LLM rows of the given utterances ``rows`` [N]."""
        return SpeechMemory(self.frames, self.mask, rows, _kv=self._kv)

    def keys_values(self, key: int, proj: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
        """``proj(frames)`` of layer ``key`` [N, T, *] and the mask [N, T], gathered for the rows."""
        if key not in self._kv:
            self._kv[key] = proj(self.frames)
        kv, mask = self._kv[key], self.mask
        if self.rows is not None:
            kv, mask = kv.index_select(0, self.rows), mask.index_select(0, self.rows)
        return kv, mask


class _MemorySlot:
    """Holder shared by the model and its cross-attention layers: the memory of the running LLM call."""

    def __init__(self):
        self.current: Optional[SpeechMemory] = None


class GatedCrossAttention(nn.Module):
    """Pre-norm multi-head attention from the LLM hidden states to the speech memory, added as
    ``x + tanh(gate) * attn(norm(x), memory)``; with ``gate_init`` 0 (Flamingo) the LLM starts unchanged."""

    def __init__(self, dim: int, num_heads: int, gate_init: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention: hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.full((), float(gate_init)))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [N, L, D] -> [N, heads, L, D/heads]
        n, length, d = x.shape
        return x.view(n, length, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, memory: SpeechMemory, key: int) -> torch.Tensor:
        """hidden [N, L, D] -> [N, L, D]; weights are stored in ``memory.weights[key]`` if it records them."""
        q = self._heads(self.to_q(self.norm(hidden)))
        kv, mask = memory.keys_values(key, self.to_kv)
        if kv.shape[0] != hidden.shape[0]:
            raise ValueError(f"speech memory has {kv.shape[0]} rows but the LLM batch has {hidden.shape[0]}")
        k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
        att_mask = mask[:, None, None, :]
        if memory.record_weights:
            scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
            weights = scores.masked_fill(~att_mask, float("-inf")).softmax(-1)
            memory.weights[key] = weights.detach()
            att = weights.to(v.dtype) @ v
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=att_mask)
        att = att.transpose(1, 2).reshape(hidden.shape)
        return hidden + torch.tanh(self.gate).to(hidden.dtype) * self.to_out(att)


class CrossAttentionDecoderLayer(nn.Module):
    """A HF decoder layer preceded by a :class:`GatedCrossAttention` to the current speech memory.

    Called like the wrapped layer (same arguments and outputs), so the HF model loop, masks and KV cache stay as
    they are; unknown attributes are looked up on the wrapped layer.
    """

    def __init__(self, layer: nn.Module, cross_attn: GatedCrossAttention, slot: _MemorySlot, key: int):
        super().__init__()
        self.layer = layer
        self.cross_attn = cross_attn
        self.key = key
        self._slot = slot

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("layer")
            if inner is None:
                raise
            return getattr(inner, name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        memory = self._slot.current
        if memory is None:
            raise RuntimeError("cross-attention LLM called without speech memory: call the LLM inside "
                               "SpeechLLM.speech_memory(...) (or use SpeechLLM.run_llm)")
        hidden_states = self.cross_attn(hidden_states, memory, self.key)
        return self.layer(hidden_states, *args, **kwargs)


def hf_model(llm: nn.Module) -> nn.Module:
    """The HF ``PreTrainedModel`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(type(llm), "get_base_model", None)
    return llm.get_base_model() if callable(get_base) else llm


def find_decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a HF causal LM (``model.layers`` of Qwen2/Llama), also inside peft wrappers."""
    model = hf_model(llm)
    n = getattr(model.config, "num_hidden_layers", None)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if isinstance(layers, nn.ModuleList) and (n is None or len(layers) == n):
        return layers
    found = [m for name, m in model.named_modules() if isinstance(m, nn.ModuleList)
             and name.rsplit(".", 1)[-1] in ("layers", "h", "layer", "blocks") and (n is None or len(m) == n)]
    if len(found) != 1:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__} "
                         f"({len(found)} candidate module lists with {n} entries)")
    return found[0]


# ---------------------------------------------------------------------------------------------------------------
# model


def _pad_batch(seqs: Sequence[Sequence[int]], pad: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-padded [B, max_len] ids and lengths [B]."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), max([len(s) for s in seqs] + [1])), pad, dtype=torch.long)
    for b, s in enumerate(seqs):
        if len(s):
            out[b, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return out.to(device), lens.to(device)


class SpeechLLM(nn.Module):
    """Encoder ``(audio[B,S], lens[B]) -> (frames[B,T,D] or [layer outputs], lens[B])``, adapter, then a HF causal LM.

    :param cfg: options
    :param encoder: acoustic encoder, e.g. :class:`llmasr.models.conformer_modules.ConformerEncoder` (the last returned layer
        is used when it returns a list of layer outputs)
    :param llm: HF causal LM; wrapped with LoRA / frozen / extended by cross-attention layers in place
    """

    def __init__(self, cfg: "ResolvedSpeechLLMConfig", encoder: nn.Module, llm: nn.Module):
        super().__init__()
        if not isinstance(cfg, ResolvedSpeechLLMConfig):
            raise TypeError(f"SpeechLLM needs a ResolvedSpeechLLMConfig (SpeechLLMConfig.resolve(encoder_dim=..., "
                            f"bos_id=..., eos_id=...) or build_speech_llm), got {type(cfg).__name__}")
        self.cfg = cfg
        self.encoder = encoder
        emb = llm.get_input_embeddings().weight
        hidden = emb.shape[1]
        self.adapter = FrameStackAdapter(cfg.encoder_dim, hidden, k=cfg.adapter_k, hidden_dim=cfg.adapter_hidden)
        self.ctc_head = (nn.Linear(cfg.encoder_dim, cfg.ctc_vocab_size) if cfg.ctc_vocab_size
                         and not cfg.aux_ctc_layers else None)
        self.ctc_heads = nn.ModuleDict({str(la): nn.Linear(cfg.encoder_dim, cfg.ctc_vocab_size)
                                        for la in cfg.aux_ctc_layers}) if cfg.aux_ctc_layers else None
        if cfg.aux_ctc_layers and not cfg.ctc_vocab_size:
            raise ValueError(f"SpeechLLMConfig.aux_ctc_layers={cfg.aux_ctc_layers} needs ctc_vocab_size")
        if self.ctc_heads is not None:
            n = getattr(getattr(encoder, "cfg", None), "num_layers", None)
            if n is None or max(cfg.aux_ctc_layers) > n or min(cfg.aux_ctc_layers) < 1:
                raise ValueError(f"SpeechLLMConfig.aux_ctc_layers={cfg.aux_ctc_layers} outside the encoder's "
                                 f"layers 1..{n}")
        if cfg.llm_training == LLMTraining.LORA:
            from peft import get_peft_model

            llm = get_peft_model(llm, lora_config(rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                                                  targets=cfg.lora_targets, use_rslora=cfg.use_rslora))
        elif cfg.llm_training == LLMTraining.FROZEN:
            for p in llm.parameters():
                p.requires_grad_(False)
        self.llm = llm
        if cfg.freeze_embedding and not cfg.train_vocabulary:
            llm.get_input_embeddings().weight.requires_grad_(False)
        if cfg.train_vocabulary:  # e.g. swapped vocabulary: the new matrices must learn even with LoRA / frozen
            for module in (llm.get_input_embeddings(), llm.get_output_embeddings()):
                if module is not None:
                    for p in module.parameters():
                        p.requires_grad_(True)
        if cfg.freeze_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)
        self._memory_slot = _MemorySlot()
        self.cross_attention_layers: List[int] = []
        if cfg.interface == SpeechInterface.CROSS_ATTENTION:
            self._add_cross_attention(hidden, emb.dtype, emb.device)

    def _add_cross_attention(self, hidden: int, dtype: torch.dtype, device: torch.device) -> None:
        """Wraps every ``cross_attention_every``-th decoder layer (added after LoRA/freezing: always trained)."""
        layers = find_decoder_layers(self.llm)
        heads = self.cfg.cross_attention_heads or int(hf_model(self.llm).config.num_attention_heads)
        for i in range(0, len(layers), self.cfg.cross_attention_every):
            xattn = GatedCrossAttention(hidden, heads, self.cfg.cross_attention_gate_init).to(device=device,
                                                                                               dtype=dtype)
            layers[i] = CrossAttentionDecoderLayer(layers[i], xattn, self._memory_slot, key=i)
            self.cross_attention_layers.append(i)

    # -- building blocks ---------------------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings of token ids."""
        return self.llm.get_input_embeddings()(ids)

    def encode(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder frames [B, T, D] (last layer if the encoder returns a list of layers) and lengths [B]."""
        frames, lens, _ = self._encode_layers(audio, audio_lens)
        return frames, lens

    def _encode_layers(self, audio: torch.Tensor, audio_lens: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor, Dict[int, torch.Tensor]]:
        """Last-layer frames, lengths, and the frames of the ``aux_ctc_layers`` (1-based layer -> [B, T, D])."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_encoder):
            if not self.cfg.aux_ctc_layers:
                frames, lens = self.encoder(audio, audio_lens)
                return (frames[-1] if isinstance(frames, (list, tuple)) else frames), lens, {}
            last = self.encoder.cfg.num_layers
            layers = sorted(set(self.cfg.aux_ctc_layers) | {last})
            outs, lens = self.encoder(audio, audio_lens, return_layers=[la - 1 for la in layers])
        by_layer = dict(zip(layers, outs))
        return by_layer[last], lens, by_layer

    def _adapt(self, frames: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        speech, slens = self.adapter(frames, lens)
        return speech.to(self.llm.get_input_embeddings().weight.dtype), slens.clamp(min=1)

    def _prefix(self, speech: torch.Tensor, slens: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[SpeechMemory]]:
        """LLM input before BOS ([B, P, H], mask [B, P], left-padded) and the cross-attention memory (or None)."""
        dev = speech.device
        pre = self.embed(torch.tensor(self.cfg.prompt_pre, dtype=torch.long, device=dev))
        post = self.embed(torch.tensor(self.cfg.prompt_post, dtype=torch.long, device=dev))
        b = speech.shape[0]
        if self.cfg.interface == SpeechInterface.CROSS_ATTENTION:
            prompt = torch.cat([pre, post], 0)
            mask = torch.arange(speech.shape[1], device=dev)[None, :] < slens[:, None]
            return (prompt[None].expand(b, -1, -1), torch.ones(b, prompt.shape[0], dtype=torch.long, device=dev),
                    SpeechMemory(speech, mask))
        rows = [torch.cat([pre, speech[i, : int(slens[i])], post], 0) for i in range(b)]
        max_len = max(r.shape[0] for r in rows)
        out = speech.new_zeros(b, max_len, speech.shape[-1])
        mask = torch.zeros(b, max_len, dtype=torch.long, device=dev)
        for i, r in enumerate(rows):
            out[i, max_len - r.shape[0]:] = r
            mask[i, max_len - r.shape[0]:] = 1
        return out, mask, None

    def speech_inputs(self, audio: torch.Tensor, audio_lens: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor, Optional[SpeechMemory]]:
        """Left-padded LLM prefix before BOS ([B, P, H], mask [B, P]) and the speech memory (CROSS_ATTENTION only).

        PREFIX: [prompt_pre, speech, prompt_post]; CROSS_ATTENTION: [prompt_pre, prompt_post] and the speech as memory.
        """
        return self._prefix(*self._adapt(*self.encode(audio, audio_lens)))

    def prefix_embeddings(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix [prompt_pre, speech, prompt_post] (PREFIX; only the prompt for CROSS_ATTENTION)."""
        prefix, mask, _ = self.speech_inputs(audio, audio_lens)
        return prefix, mask

    @contextlib.contextmanager
    def speech_memory(self, memory: Optional[SpeechMemory]) -> Iterator[None]:
        """Makes ``memory`` the one the cross-attention layers attend to during the LLM calls inside the block."""
        previous = self._memory_slot.current
        self._memory_slot.current = memory
        try:
            yield
        finally:
            self._memory_slot.current = previous

    def run_llm(self, memory: Optional[SpeechMemory], **kwargs) -> Any:
        """Calls the LLM (HF keyword arguments) with ``memory`` set for the cross-attention layers."""
        with self.speech_memory(memory):
            return self.llm(**kwargs)

    # -- losses ------------------------------------------------------------------------------------------------

    def _ce(self, frames: torch.Tensor, lens: torch.Tensor, targets: Sequence[Sequence[int]]
            ) -> Tuple[torch.Tensor, int]:
        prefix, pmask, memory = self._prefix(*self._adapt(frames, lens))
        dev = prefix.device
        max_t = max(len(t) for t in targets) + 1
        inp = torch.full((len(targets), max_t), self.cfg.eos_id, dtype=torch.long, device=dev)
        labels = torch.full((len(targets), max_t), -100, dtype=torch.long, device=dev)
        tmask = torch.zeros(len(targets), max_t, dtype=torch.long, device=dev)
        for b, t in enumerate(targets):
            seq = [self.cfg.bos_id] + list(t)
            inp[b, : len(seq)] = torch.tensor(seq)
            labels[b, : len(seq)] = torch.tensor(list(t) + [self.cfg.eos_id])
            tmask[b, : len(seq)] = 1
        embeds = torch.cat([prefix, self.embed(inp)], 1)
        mask = torch.cat([pmask, tmask], 1)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.run_llm(memory, inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        logits = logits[:, prefix.shape[1]:]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum")
        return loss, int((labels != -100).sum())

    def _ctc(self, head: nn.Module, frames: torch.Tensor, lens: torch.Tensor, targets: Sequence[Sequence[int]]
             ) -> torch.Tensor:
        from llmasr.models.conformer_modules import ctc_loss_sum

        blank = self.cfg.ctc_vocab_size - 1
        bad = [i for t in targets for i in t if not 0 <= i < blank]
        if bad:
            raise ValueError(f"aux CTC targets must be in 0..{blank - 1} (blank = {blank}), got e.g. {bad[0]}")
        tgt, tlens = _pad_batch(targets, 0, frames.device)
        return ctc_loss_sum(head(frames), lens, tgt, tlens, blank)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor, targets: Sequence[Sequence[int]]
                ) -> Tuple[torch.Tensor, int]:
        """CE loss (sum, count) over the transcription tokens + EOS; prompt and speech positions are masked."""
        return self._ce(*self.encode(audio, audio_lens), targets)

    def compute_losses(self, audio: torch.Tensor, audio_lens: torch.Tensor, targets: Sequence[Sequence[int]],
                       ctc_targets: Optional[Sequence[Sequence[int]]] = None) -> Dict[str, Tuple[torch.Tensor, float]]:
        """Summed losses with their scales: ``{"ce": (CE over tokens + EOS, 1.0), "aux_ctc": (CTC, aux_ctc_scale)}``
        (aux CTC only with ``ctc_vocab_size``; its targets default to ``targets``)."""
        frames, lens, by_layer = self._encode_layers(audio, audio_lens)
        return self.compute_losses_from_frames(frames, lens, targets, ctc_targets, layers=by_layer)

    def compute_losses_from_frames(self, frames: torch.Tensor, lens: torch.Tensor, targets: Sequence[Sequence[int]],
                                   ctc_targets: Optional[Sequence[Sequence[int]]] = None,
                                   layers: Optional[Dict[int, torch.Tensor]] = None
                                   ) -> Dict[str, Tuple[torch.Tensor, float]]:
        """:meth:`compute_losses` on stored encoder outputs ``frames`` [B, T, D] (a frozen encoder's output, computed
        once instead of every epoch); ``layers``: the frames of the ``aux_ctc_layers`` (1-based layer -> [B, T, D])."""
        ce, _ = self._ce(frames, lens, targets)
        losses = {"ce": (ce, 1.0)}
        ctc_targets = targets if ctc_targets is None else ctc_targets
        if self.ctc_head is not None:
            losses["aux_ctc"] = (self._ctc(self.ctc_head, frames, lens, ctc_targets), float(self.cfg.aux_ctc_scale))
        if self.cfg.aux_ctc_layers and layers is None:
            raise ValueError(f"SpeechLLMConfig.aux_ctc_layers={self.cfg.aux_ctc_layers} need the encoder's layer "
                             f"outputs; stored frames hold only the last layer")
        for la in self.cfg.aux_ctc_layers:
            losses[f"aux_ctc_{la}"] = (self._ctc(self.ctc_heads[str(la)], layers[la], lens, ctc_targets),
                                       float(self.cfg.aux_ctc_scale))
        return losses

    def ctc_log_probs(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Aux CTC log-probs [B, T, ctc_vocab_size] (blank last) and frame lengths [B], e.g. for joint search."""
        if self.ctc_head is None and self.ctc_heads is None:
            raise ValueError("SpeechLLMConfig.ctc_vocab_size is 0: this speech LLM has no CTC output")
        frames, lens, by_layer = self._encode_layers(audio, audio_lens)
        if self.ctc_heads is not None:
            top = max(self.cfg.aux_ctc_layers)
            return self.ctc_heads[str(top)](by_layer[top]).float().log_softmax(-1), lens
        return self.ctc_head(frames).float().log_softmax(-1), lens

    # -- analysis ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _eager_attention(self) -> Iterator[None]:
        """Eager attention inside the block (SDPA / flash kernels return no attention weights)."""
        model = hf_model(self.llm)
        previous = model.config._attn_implementation
        if previous == "eager":
            yield
            return
        setter = getattr(model, "set_attn_implementation", None)
        if setter is not None:
            setter("eager")
        else:
            model.config._attn_implementation = "eager"
        try:
            yield
        finally:
            if setter is not None:
                setter(previous)
            else:
                model.config._attn_implementation = previous

    @torch.no_grad()
    def attention_weights(self, audio: torch.Tensor, audio_lens: Union[torch.Tensor, int], target: Sequence[int],
                          layer: int = -1) -> Tuple[torch.Tensor, Segments]:
        """Attention weights of one utterance (audio [S] or [1, S]) with its transcription ``target`` (BOS prepended).

        PREFIX: the LLM self-attention of decoder layer ``layer``, [heads, L, L] over [prompt_pre, speech,
        prompt_post, BOS + text]; segments ``{"prompt": [...], "speech": [...], "text": [...]}`` are [start, end)
        position ranges that partition 0..L.
        CROSS_ATTENTION: the weights of cross-attention layer ``layer`` (index into the cross-attention layers),
        [heads, L_text, T_speech]; "prompt" and "text" index the rows, "speech" the columns.
        """
        if audio.dim() == 1:
            audio = audio[None]
        audio_lens = torch.as_tensor(audio_lens, device=audio.device).reshape(1)
        was_training = self.training
        self.eval()
        try:
            speech, slens = self._adapt(*self.encode(audio, audio_lens))
            speech = speech[:, : int(slens[0])]
            prefix, _, memory = self._prefix(speech, slens)
            ids = torch.tensor([[self.cfg.bos_id] + list(target)], dtype=torch.long, device=prefix.device)
            embeds = torch.cat([prefix, self.embed(ids)], 1)
            length = embeds.shape[1]
            pos = torch.arange(length, device=embeds.device)[None]
            n_pre, n_post, n_speech = len(self.cfg.prompt_pre), len(self.cfg.prompt_post), int(slens[0])
            if memory is None:
                with self._eager_attention():
                    out = self.run_llm(None, inputs_embeds=embeds, position_ids=pos, output_attentions=True,
                                       use_cache=False)
                if not out.attentions or out.attentions[layer] is None:
                    raise RuntimeError("the LLM returned no attention weights (output_attentions unsupported?)")
                weights = out.attentions[layer][0]
                ranges = {"prompt": [(0, n_pre), (n_pre + n_speech, n_pre + n_speech + n_post)],
                          "speech": [(n_pre, n_pre + n_speech)], "text": [(n_pre + n_speech + n_post, length)]}
            else:
                memory.record_weights = True
                self.run_llm(memory, inputs_embeds=embeds, position_ids=pos, use_cache=False)
                weights = memory.weights[self.cross_attention_layers[layer]][0]
                ranges = {"prompt": [(0, n_pre + n_post)], "speech": [(0, n_speech)],
                          "text": [(n_pre + n_post, length)]}
        finally:
            self.train(was_training)
        segments = {k: [(int(a), int(b)) for a, b in v if b > a] for k, v in ranges.items()}
        return weights.float().cpu(), segments


# ---------------------------------------------------------------------------------------------------------------
# building


def load_encoder_from_aed_checkpoint(encoder: nn.Module, checkpoint: str, *, prefix: str = "encoder.") -> None:
    """Copies the encoder parameters (keys starting with ``prefix``) of a trained AED checkpoint into ``encoder``."""
    state = read_state_dict(checkpoint, what="AED checkpoint")
    enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc:
        raise ValueError(f"no parameters with prefix {prefix!r} in AED checkpoint {checkpoint}")
    encoder.load_state_dict(enc, strict=True)
    logging.info("loaded %d encoder tensors from %s", len(enc), checkpoint)


def _location(path: Any) -> str:
    return path.get_path() if hasattr(path, "get_path") else str(path)


def build_speech_llm(cfg: SpeechLLMConfig, *, llm: Any, aed_model_config: Any, aed_checkpoint: Optional[Any] = None,
                     am_spm_model: Optional[Any] = None, prompt_pre_text: str = "", prompt_post_text: str = "",
                     seed: int = 0, encoder_config: Optional[Any] = None) -> Tuple[SpeechLLM, "LLMTokenizer"]:
    """Builds a speech LLM: the Conformer encoder of an AED, an adapter and a pre-trained LLM.

    :param cfg: options; the encoder's dimension, BOS/EOS, the prompt ids (of the prompt texts) and whether the
        vocabulary trains are derived here (:meth:`SpeechLLMConfig.resolve`)
    :param llm: LLM directory or hub name (:func:`llmasr.models.llm.load_llm`), str or tk.Path
    :param aed_model_config: the AED's (or CTC model's) ``model_config.json``
    :param aed_checkpoint: its checkpoint, whose encoder weights initialise the encoder; None = random init (when a
        whole speech-LLM checkpoint is loaded afterwards)
    :param am_spm_model: if set, the LLM vocabulary is swapped to these SentencePiece units (the AM's), which then
        are the targets; the new embedding/output matrices train even with a frozen / LoRA LLM
    :param prompt_pre_text: text before the speech; :param prompt_post_text: text after it
    :param seed: initialisation seed of the new parameters (building twice gives the same model)
    :param encoder_config: the encoder's own :class:`~llmasr.models.conformer.ConformerEncoderConfig` (or its dict)
        instead of the AED's (``aed_model_config`` may then be None)
    :return: the model (in training mode) and the tokenizer of its targets
    """
    import json

    from llmasr.models.conformer import ConformerEncoderConfig, CtcModelConfig, model_config_from_dict
    from llmasr.models.conformer_modules import ConformerEncoder
    from llmasr.models.llm import LLMTokenizer, load_llm, load_llm_tokenizer, swap_vocabulary

    if encoder_config is not None:
        if not isinstance(encoder_config, ConformerEncoderConfig):
            encoder_config = model_config_from_dict({"model_type": "ctc", "encoder": dict(encoder_config)}).encoder
        am_cfg = CtcModelConfig(encoder=encoder_config)
    else:
        with open(_location(aed_model_config)) as f:
            am_cfg = model_config_from_dict(json.load(f))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model_llm = load_llm(_location(llm), eval_mode=False)
        tokenizer = load_llm_tokenizer(_location(llm))
        if am_spm_model is not None:
            am_tok = LLMTokenizer(spm_model=_location(am_spm_model))
            swap_vocabulary(model_llm, tokenizer, am_tok)
            tokenizer = am_tok
        encoder = ConformerEncoder(am_cfg.encoder)
        if aed_checkpoint is not None:
            load_encoder_from_aed_checkpoint(encoder, _location(aed_checkpoint))
        cfg = cfg.resolve(encoder_dim=am_cfg.encoder.dim, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                          prompt_pre=tokenizer.encode(prompt_pre_text) if prompt_pre_text else (),
                          prompt_post=tokenizer.encode(prompt_post_text) if prompt_post_text else (),
                          train_vocabulary=am_spm_model is not None)
        model = SpeechLLM(cfg, encoder, model_llm)
    model.train()
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.info("speech LLM (%s, %s): %d parameters, %d trained", cfg.interface.value, cfg.llm_training.value,
                 sum(p.numel() for p in model.parameters()), n_train)
    return model, tokenizer


def build_from_setup(setup: Dict[str, Any], *, with_aed_weights: bool) -> Tuple[SpeechLLM, "LLMTokenizer"]:
    """(SpeechLLM, target tokenizer) from a stored setup (the literal dict of
    :func:`llmasr.returnn.speech_llm.setup_to_dict`, e.g. a training's ``setup.json``); the AED's encoder weights
    are loaded if asked."""
    return build_speech_llm(config_from_dict(setup["config"]), llm=setup["llm"],
                            aed_model_config=setup["aed_model_config"],
                            aed_checkpoint=setup["aed_checkpoint"] if with_aed_weights else None,
                            encoder_config=setup.get("encoder"), am_spm_model=setup["am_spm_model"],
                            prompt_pre_text=setup["prompt_pre_text"], prompt_post_text=setup["prompt_post_text"])


def load_speech_llm(checkpoint: str, setup: Dict[str, Any], *, device: str = "cpu"
                    ) -> Tuple[SpeechLLM, "LLMTokenizer"]:
    """A trained speech LLM (eval mode) and its target tokenizer from a RETURNN checkpoint and its stored setup.

    The checkpoint is memory-mapped and its tensors replace the model's (``assign``): no second copy of the weights
    is held (a Qwen2-1.5B speech LLM peaked at model + state dict, about 15 GB, before)."""
    model, tokenizer = build_from_setup(setup, with_aed_weights=False)
    state = read_state_dict(checkpoint, what="speech LLM checkpoint", mmap=True)
    model.load_state_dict(state, assign=True)
    del state
    return model.to(device).eval(), tokenizer
