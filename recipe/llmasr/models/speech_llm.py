"""Configs of the speech LLM (:class:`llmasr.models.speech_llm_modules.SpeechLLM`): plain dataclasses and enums,
importable without torch.

A job holds only these configs, so that a worker unpickles it, and everything downstream of it, without importing
torch. The enums stay in this module: their module is part of the job hashes.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar, Dict, Sequence, Tuple

from llmasr.hash_defaults import HashDefaults


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
class SpeechLLMConfig(HashDefaults):
    """The choices a researcher makes for a :class:`SpeechLLM` (part of the job hashes through
    :class:`llmasr.returnn.speech_llm.SpeechLLMSetup`); what follows from the encoder, the LLM's tokenizer and the
    prompt is filled in when the model is built (:meth:`resolve`, :class:`ResolvedSpeechLLMConfig`).

    :param adapter_k: extra downsampling by frame stacking
    :param adapter_hidden: hidden size of a 2-layer MLP adapter (0 = linear)
    :param interface: PREFIX (soft prompt) or CROSS_ATTENTION (gated cross-attention layers in the LLM)
    :param llm_training: frozen / lora / full (the adapter, cross-attention and CTC layers always train)
    :param lora_rank: LoRA rank when ``llm_training`` is LORA
    :param lora_alpha: LoRA alpha (the update is scaled by alpha / r, or alpha / sqrt(r) with ``use_rslora``)
    :param lora_dropout: dropout on the LoRA input; :param lora_targets: the LLM's linear layers that get adapters
    :param use_rslora: rank-stabilised LoRA scaling (alpha / sqrt(r)), which keeps large ranks such as 320 learning
    :param freeze_encoder: keep the encoder parameters fixed
    :param freeze_embedding: keep the LLM input embedding fixed (unless its vocabulary was swapped)
    :param cross_attention_every: CROSS_ATTENTION: a cross-attention layer before decoder blocks 0, k, 2k, ...
    :param cross_attention_heads: heads of the cross-attention layers (0 = the LLM's number of attention heads)
    :param cross_attention_gate_init: the gates' start value g (the layer adds tanh(g) * attention); 0 (Flamingo)
        starts with the LLM unchanged, but then the attention's output layer gets no gradient until the gate moves
    :param ctc_vocab_size: aux CTC output size including the blank, which is the last index (0 = no aux CTC; a
        training with ``aux_ctc_scale`` > 0 sets it to the AM's units + blank)
    :param aux_ctc_scale: scale of the aux CTC loss in :meth:`SpeechLLM.compute_losses`
    :param aux_ctc_layers: 1-based encoder layers with their own CTC output layer (each loss scaled by
        ``aux_ctc_scale``, joint search uses the highest); () = one CTC output on the last layer
    """

    adapter_k: int = 1
    adapter_hidden: int = 0
    interface: SpeechInterface = SpeechInterface.PREFIX
    llm_training: LLMTraining = LLMTraining.FROZEN
    lora_rank: int = 8
    freeze_encoder: bool = False
    freeze_embedding: bool = True
    cross_attention_every: int = 1
    cross_attention_heads: int = 0
    ctc_vocab_size: int = 0
    aux_ctc_scale: float = 0.0
    lora_alpha: float = 8.0  # peft's default
    lora_dropout: float = 0.0
    lora_targets: Tuple[str, ...] = ("q_proj", "v_proj")
    use_rslora: bool = False
    aux_ctc_layers: Tuple[int, ...] = ()
    cross_attention_gate_init: float = 0.0

    # options added later stay out of the job hashes at their defaults
    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"lora_alpha": 8.0, "lora_dropout": 0.0,
                                                "lora_targets": ("q_proj", "v_proj"), "use_rslora": False,
                                                "aux_ctc_layers": (), "cross_attention_gate_init": 0.0}
    # the derived fields, once part of this config, are hashed at the values every config gave them, so that job
    # ids stay as they were
    _HASHED_DERIVED: ClassVar[Dict[str, Any]] = {"encoder_dim": 0, "prompt_pre": (), "prompt_post": (), "bos_id": 0,
                                                 "eos_id": 1, "train_vocabulary": False}

    def __post_init__(self):
        self.interface = SpeechInterface(self.interface)  # also accepts the plain values of a literal config
        self.llm_training = LLMTraining(self.llm_training)
        self.lora_targets = tuple(str(t) for t in self.lora_targets)
        self.aux_ctc_layers = tuple(int(la) for la in self.aux_ctc_layers)
        if self.cross_attention_every < 1:
            raise ValueError(f"SpeechLLMConfig.cross_attention_every must be >= 1, got {self.cross_attention_every}")
        if self.ctc_vocab_size == 1 or self.ctc_vocab_size < 0:
            raise ValueError(f"SpeechLLMConfig.ctc_vocab_size must be 0 (off) or labels + blank >= 2, "
                             f"got {self.ctc_vocab_size}")

    def __sis_state__(self) -> Dict[str, Any]:
        return {**super().__sis_state__(), **self._HASHED_DERIVED}

    def options(self) -> Dict[str, Any]:
        """The researcher's choices (the fields of this class, also of a resolved config)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(SpeechLLMConfig)}

    def resolve(self, *, encoder_dim: int, bos_id: int, eos_id: int, prompt_pre: Sequence[int] = (),
                prompt_post: Sequence[int] = (), train_vocabulary: bool = False) -> "ResolvedSpeechLLMConfig":
        """These options with what the model is built from (see :class:`ResolvedSpeechLLMConfig`)."""
        return ResolvedSpeechLLMConfig(**self.options(), encoder_dim=encoder_dim, bos_id=bos_id, eos_id=eos_id,
                                       prompt_pre=tuple(prompt_pre), prompt_post=tuple(prompt_post),
                                       train_vocabulary=train_vocabulary)


@dataclasses.dataclass(kw_only=True)
class ResolvedSpeechLLMConfig(SpeechLLMConfig):
    """A :class:`SpeechLLMConfig` with what follows from the parts the model is built from, as :class:`SpeechLLM`
    needs it (:func:`build_speech_llm` fills it in; tests set it directly).

    :param encoder_dim: encoder output dimension
    :param bos_id: id fed after the prompt, before the transcription
    :param eos_id: id the model must predict after the transcription
    :param prompt_pre: token ids before the speech frames (e.g. of "USER: ")
    :param prompt_post: token ids after the speech frames (e.g. of " Transcribe speech to text. ASSISTANT: ")
    :param train_vocabulary: train the LLM's input/output embeddings even when the LLM is frozen or LoRA-adapted
        (after a vocabulary swap: the new matrices must learn)
    """

    encoder_dim: int
    bos_id: int
    eos_id: int
    prompt_pre: Tuple[int, ...] = ()
    prompt_post: Tuple[int, ...] = ()
    train_vocabulary: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.prompt_pre = tuple(int(i) for i in self.prompt_pre)
        self.prompt_post = tuple(int(i) for i in self.prompt_post)

    def __sis_state__(self) -> Dict[str, Any]:
        return HashDefaults.__sis_state__(self)


def config_from_dict(d: Dict[str, Any]) -> SpeechLLMConfig:
    """A :class:`SpeechLLMConfig` from its literal dict (the "config" entry of a stored setup: enum values, lists);
    the derived fields that setups of older versions stored are left out (they are derived again)."""
    fields = {f.name: f for f in dataclasses.fields(SpeechLLMConfig)}
    d = {k: v for k, v in d.items() if k not in SpeechLLMConfig._HASHED_DERIVED}  # setups stored by older versions
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown SpeechLLMConfig fields {unknown}")
    defaults = SpeechLLMConfig()
    kwargs = {}
    for name, value in d.items():
        default = getattr(defaults, name)
        if isinstance(default, enum.Enum):
            value = type(default)(value)
        elif isinstance(default, tuple):
            value = tuple(value)
        kwargs[name] = value
    return SpeechLLMConfig(**kwargs)
