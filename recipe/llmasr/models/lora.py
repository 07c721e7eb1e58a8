"""One LoRA set-up for every place an LLM gets adapters (the speech LLM's decoder, LLM fine-tuning on text): peft's
``LoraConfig`` built from the same few options, so that the two cannot drift apart."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence, Tuple


def lora_config(*, rank: int, alpha: float, dropout: float = 0.0, targets: Sequence[str] = ("q_proj", "v_proj"),
                use_rslora: bool = False, causal_lm: bool = False) -> Any:
    """peft ``LoraConfig``: adapters of rank ``rank`` on the ``targets`` linear layers, update scaled by
    alpha / rank (or alpha / sqrt(rank) with ``use_rslora``); ``causal_lm`` sets the task type for text training."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not targets:
        raise ValueError("LoRA needs at least one target module")
    kwargs = dict(r=int(rank), lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                  use_rslora=bool(use_rslora))
    if causal_lm:
        kwargs.update(bias="none", task_type="CAUSAL_LM")
    return LoraConfig(**kwargs)


@dataclasses.dataclass(frozen=True)
class LoraSetup:
    """A LoRA choice as a config names it once and hands to both users.

    :param rank: r; :param alpha: alpha; :param dropout: dropout on the adapter input
    :param targets: linear layers of the LLM that get adapters; :param use_rslora: alpha / sqrt(r) scaling
    """

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: Tuple[str, ...] = ("q_proj", "v_proj")
    use_rslora: bool = False

    def speech_llm_fields(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`llmasr.models.speech_llm.SpeechLLMConfig`."""
        return dict(lora_rank=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                    lora_targets=tuple(self.targets), use_rslora=self.use_rslora)

    def fine_tune_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :class:`llmasr.llm.train.FineTuneLLMJob`."""
        return dict(lora_rank=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                    lora_target_modules=tuple(self.targets), use_rslora=self.use_rslora)
