"""Speech LLM: acoustic encoder -> frame-stacking adapter -> decoder-only HF causal LM (soft-prompt prefix)."""
from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from llmasr.models.adapter import FrameStackAdapter


class SpeechInterface(enum.Enum):
    """How the LLM sees the speech: as a soft prompt before the text (PREFIX) or via cross-attention."""

    PREFIX = "prefix"
    CROSS_ATTENTION = "cross_attention"


class LLMTraining(enum.Enum):
    """Which LLM parameters are trained."""

    FROZEN = "frozen"
    LORA = "lora"
    FULL = "full"


@dataclasses.dataclass
class SpeechLLMConfig:
    """Options of :class:`SpeechLLM`; the encoder and LLM modules are passed separately.

    :param encoder_dim: encoder output dimension
    :param adapter_k: extra downsampling by frame stacking
    :param adapter_hidden: hidden size of a 2-layer MLP adapter (0 = linear)
    :param interface: only PREFIX is implemented
    :param llm_training: frozen / lora / full
    :param lora_rank: LoRA rank when ``llm_training`` is LORA
    :param freeze_encoder: keep the encoder parameters fixed
    :param freeze_embedding: keep the LLM input embedding fixed
    :param prompt_pre: token ids before the speech frames (e.g. "USER: ")
    :param prompt_post: token ids after the speech frames (e.g. " Transcribe speech to text. ASSISTANT: ")
    :param bos_id: id fed after the prompt, before the transcription
    :param eos_id: id the model must predict after the transcription
    """

    encoder_dim: int
    adapter_k: int = 1
    adapter_hidden: int = 0
    interface: SpeechInterface = SpeechInterface.PREFIX
    llm_training: LLMTraining = LLMTraining.FROZEN
    lora_rank: int = 8
    freeze_encoder: bool = False
    freeze_embedding: bool = True
    prompt_pre: Tuple[int, ...] = ()
    prompt_post: Tuple[int, ...] = ()
    bos_id: int = 0
    eos_id: int = 1


class SpeechLLM(nn.Module):
    """Encoder ``(audio[B,S], lens[B]) -> (frames[B,T,D], lens[B])``, adapter, then a HF causal LM."""

    def __init__(self, cfg: SpeechLLMConfig, encoder: nn.Module, llm: nn.Module):
        super().__init__()
        if cfg.interface != SpeechInterface.PREFIX:
            raise NotImplementedError(f"speech interface {cfg.interface} is not implemented yet")
        self.cfg = cfg
        self.encoder = encoder
        hidden = llm.get_input_embeddings().weight.shape[1]
        self.adapter = FrameStackAdapter(cfg.encoder_dim, hidden, k=cfg.adapter_k, hidden_dim=cfg.adapter_hidden)
        if cfg.llm_training == LLMTraining.LORA:
            from peft import LoraConfig, get_peft_model

            llm = get_peft_model(llm, LoraConfig(r=cfg.lora_rank, target_modules=["q_proj", "v_proj"]))
        elif cfg.llm_training == LLMTraining.FROZEN:
            for p in llm.parameters():
                p.requires_grad_(False)
        self.llm = llm
        if cfg.freeze_embedding:
            llm.get_input_embeddings().weight.requires_grad_(False)
        if cfg.freeze_encoder:
            for p in encoder.parameters():
                p.requires_grad_(False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM input embeddings of token ids."""
        return self.llm.get_input_embeddings()(ids)

    def prefix_embeddings(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prefix [prompt_pre, speech, prompt_post, BOS-less] as ([B,L,H], mask [B,L])."""
        frames, lens = self.encoder(audio, audio_lens)
        speech, slens = self.adapter(frames, lens)
        dev = speech.device
        pre = self.embed(torch.tensor(self.cfg.prompt_pre, dtype=torch.long, device=dev))
        post = self.embed(torch.tensor(self.cfg.prompt_post, dtype=torch.long, device=dev))
        rows = [torch.cat([pre, speech[b, : int(slens[b])], post], 0) for b in range(speech.shape[0])]
        max_len = max(r.shape[0] for r in rows)
        out = speech.new_zeros(len(rows), max_len, speech.shape[-1])
        mask = torch.zeros(len(rows), max_len, dtype=torch.long, device=dev)
        for b, r in enumerate(rows):
            out[b, max_len - r.shape[0]:] = r
            mask[b, max_len - r.shape[0]:] = 1
        return out, mask

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor, targets: Sequence[Sequence[int]]):
        """CE loss (sum, count) over the transcription tokens + EOS; prompt and speech positions are masked."""
        prefix, pmask = self.prefix_embeddings(audio, audio_lens)
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
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        logits = logits[:, prefix.shape[1]:]
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                           reduction="sum")
        return loss, int((labels != -100).sum())


def load_encoder_from_aed_checkpoint(encoder: nn.Module, checkpoint: str, *, prefix: str = "encoder.") -> None:
    """Copies the encoder parameters (keys starting with ``prefix``) of a trained AED checkpoint into ``encoder``."""
    import os

    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"AED checkpoint not found: {checkpoint}")
    ckpt = torch.load(checkpoint, map_location="cpu")
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    enc = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not enc:
        raise ValueError(f"no parameters with prefix {prefix!r} in AED checkpoint {checkpoint}")
    encoder.load_state_dict(enc, strict=True)
    logging.info("loaded %d encoder tensors from %s", len(enc), checkpoint)
