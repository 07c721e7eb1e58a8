"""Configs of the Conformer acoustic models (CTC and AED): plain dataclasses, importable without torch.

A job holds only these configs, so that a worker unpickles it, and everything downstream of it, without importing
torch; the networks they describe are in :mod:`llmasr.models.conformer_modules`. The enums stay in this module: their
module is part of the job hashes.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Tuple, Union

from llmasr.hash_defaults import HashDefaults


@dataclass
class LogMelConfig:
    """Log-mel filterbank on raw audio (25 ms window, 10 ms shift)."""

    sample_rate: int = 16000
    num_filters: int = 80
    win_size: float = 0.025
    hop_size: float = 0.01
    n_fft: int = 512
    f_min: float = 60.0
    f_max: float = 7600.0


@dataclass
class SpecAugmentConfig:
    """Time and frequency masking on the log-mel features during training (i6_models ``specaugment_v1_by_length``)."""

    time_min_num_masks: int = 2
    time_max_mask_per_n_frames: int = 25
    time_mask_max_size: int = 20
    freq_min_num_masks: int = 2
    freq_max_num_masks: int = 5
    freq_mask_max_size: int = 8
    enabled: bool = True
    start_step: int = 0  # training steps without masking first (CTC learns its alignments faster on clean input)


class FeedForwardActivation(enum.Enum):
    """Activation inside the Conformer feed-forward modules."""

    SILU = "silu"
    RELU_SQUARED = "relu_squared"  # relu(x)^2, as in the paper's AM


class FrontendType(enum.Enum):
    """Convolutional front end before the Conformer blocks (both downsample time 6x)."""

    VGG = "vgg"  # i6_models VGG4LayerActFrontendV1: 4 convs, two max-pooling layers over time and frequency
    # RETURNN's ConformerConvSubsample layout (i6_models GenericFrontendV1): conv 3x3 (32 ch) -> ReLU -> pool 1x2
    # over frequency -> conv 3x3 stride 3 over time (64 ch) -> ReLU -> conv 3x3 stride 2 over time (64 ch) -> ReLU
    CONV_SUBSAMPLE = "conv_subsample"


def check_vtlp_range(warp_range: Tuple[float, ...], where: str) -> None:
    """A VTLP warp range is (low, high) with 0 < low <= high; anything else fails naming ``where``."""
    if len(warp_range) != 2 or not 0 < warp_range[0] <= warp_range[1]:
        raise ValueError(f"{where} must be (low, high) with 0 < low <= high, got {tuple(warp_range)}")


@dataclass
class ConformerEncoderConfig(HashDefaults):
    """Sizes of the Conformer encoder; the defaults are a 12 x 512 model, the paper's 16 x 1024 is
    :func:`paper_encoder_config`."""

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"speed_perturbation": (), "ff_activation": FeedForwardActivation.SILU,
                                                "frontend": FrontendType.VGG, "frontend_conv_channels": (32, 64, 64),
                                                "vtlp": ()}

    num_layers: int = 12
    dim: int = 512
    num_heads: int = 8
    ff_dim: int = 2048
    conv_kernel_size: int = 31
    dropout: float = 0.1
    att_dropout: float = 0.1
    frontend_channels: int = 32
    downsampling: Tuple[int, int] = (3, 2)  # time pooling of the two VGG pooling layers (product: 6)
    logmel: LogMelConfig = field(default_factory=LogMelConfig)
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    # training only: each batch is resampled by a factor drawn from these (Kaldi-style speed perturbation:
    # tempo and pitch change together); () leaves the audio as it is
    speed_perturbation: Tuple[float, ...] = ()
    ff_activation: FeedForwardActivation = FeedForwardActivation.SILU
    frontend: FrontendType = FrontendType.VGG  # CONV_SUBSAMPLE uses downsampling as its two time strides
    frontend_conv_channels: Tuple[int, int, int] = (32, 64, 64)  # CONV_SUBSAMPLE: channels of its three convs
    # training only: vocal tract length perturbation, each utterance's spectrum stretched along frequency by a factor
    # drawn from this (low, high) range (Jaitly and Hinton use (0.9, 1.1)); () leaves the features as they are
    vtlp: Tuple[float, ...] = ()

    def __post_init__(self):
        self.ff_activation = FeedForwardActivation(self.ff_activation)  # plain values from a JSON model config
        self.frontend = FrontendType(self.frontend)
        self.vtlp = tuple(self.vtlp)
        if self.vtlp:
            check_vtlp_range(self.vtlp, "ConformerEncoderConfig.vtlp")


@dataclass
class CtcModelConfig:
    """Conformer CTC model; output layer over ``vocab_size`` units + blank (index ``vocab_size``).

    ``vocab_size = 0`` means: take it from the SentencePiece model when the training job runs.
    """

    encoder: ConformerEncoderConfig = field(default_factory=ConformerEncoderConfig)
    vocab_size: int = 0
    aux_ctc_layers: Tuple[int, ...] = ()  # 1-based layer numbers with an extra CTC output layer
    aux_ctc_scales: Tuple[float, ...] = ()
    ctc_scale: float = 1.0


class DecoderNorm(enum.Enum):
    """Normalisation of the AED decoder's pre-norm blocks."""

    LAYER_NORM = "layer_norm"
    RMS_NORM = "rms_norm"


class DecoderPositions(enum.Enum):
    """How the AED decoder sees label positions."""

    SINUSOIDAL = "sinusoidal"  # added to the label embeddings
    ROPE = "rope"  # rotary embeddings on the self-attention queries and keys


class DecoderEmbeddingInit(enum.Enum):
    """Initial label embeddings of the AED decoder (they are multiplied by sqrt(dim) before the positions are added)."""

    SCALED = "scaled"  # N(0, 1/dim), as fairseq: after the sqrt(dim) scale as large as the sinusoidal positions
    UNIT = "unit"  # torch's N(0, 1): after the scale sqrt(dim) times the positions, which the decoder then hardly sees


@dataclass
class TransformerDecoderConfig(HashDefaults):
    """Pre-norm Transformer decoder with self-attention, cross-attention over the encoder, and a feed-forward block
    (the paper's: RMSNorm, gated feed-forward, RoPE; the defaults are the classic LayerNorm / ReLU / sinusoidal)."""

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"norm": DecoderNorm.LAYER_NORM, "gated_ff": False,
                                                "positions": DecoderPositions.SINUSOIDAL,
                                                "embedding_init": DecoderEmbeddingInit.UNIT}

    num_layers: int = 6
    dim: int = 512
    num_heads: int = 8
    ff_dim: int = 2048
    dropout: float = 0.1
    att_dropout: float = 0.1
    norm: DecoderNorm = DecoderNorm.LAYER_NORM
    gated_ff: bool = False  # SiLU-gated feed-forward (SwiGLU) instead of Linear -> ReLU -> Linear
    positions: DecoderPositions = DecoderPositions.SINUSOIDAL
    embedding_init: DecoderEmbeddingInit = DecoderEmbeddingInit.SCALED

    def __post_init__(self):
        self.norm = DecoderNorm(self.norm)
        self.positions = DecoderPositions(self.positions)
        self.embedding_init = DecoderEmbeddingInit(self.embedding_init)


@dataclass
class AedModelConfig:
    """Attention encoder-decoder: Conformer encoder + Transformer decoder + aux CTC on encoder layers.

    Labels are SentencePiece ids; ``bos_idx``/``eos_idx`` are the model's ``<s>``/``</s>``; CTC blank is ``vocab_size``.
    """

    encoder: ConformerEncoderConfig = field(default_factory=ConformerEncoderConfig)
    decoder: TransformerDecoderConfig = field(default_factory=TransformerDecoderConfig)
    vocab_size: int = 0
    bos_idx: int = 1
    eos_idx: int = 2
    label_smoothing: float = 0.1
    ce_scale: float = 1.0
    aux_ctc_layers: Tuple[int, ...] = ()  # 1-based; the last encoder layer is a typical choice
    aux_ctc_scales: Tuple[float, ...] = ()


ModelConfig = Union[CtcModelConfig, AedModelConfig]


def _plain_values(value: Any) -> Any:
    """Enums by their values, recursively (JSON and RETURNN config literals)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_values(v) for v in value)
    return value


def model_config_to_dict(cfg: ModelConfig) -> Dict[str, Any]:
    """Plain dict (JSON-able) of a model config, with its type under ``"model_type"``."""
    d = _plain_values(dataclasses.asdict(cfg))
    d["model_type"] = "aed" if isinstance(cfg, AedModelConfig) else "ctc"
    return d


def _from_dict(cls, d: Dict[str, Any]):
    kwargs = {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in names:
            raise ValueError(f"{cls.__name__}: unknown field {k!r} (known: {sorted(names)})")
        sub = {"encoder": ConformerEncoderConfig, "decoder": TransformerDecoderConfig, "logmel": LogMelConfig,
               "specaug": SpecAugmentConfig}.get(k)
        if sub is not None and isinstance(v, dict):
            v = _from_dict(sub, v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def model_config_from_dict(d: Dict[str, Any]) -> ModelConfig:
    """Inverse of :func:`model_config_to_dict`."""
    d = dict(d)
    model_type = d.pop("model_type", "ctc")
    if model_type == "ctc":
        return _from_dict(CtcModelConfig, d)
    if model_type == "aed":
        return _from_dict(AedModelConfig, d)
    raise ValueError(f"model config: unknown model_type {model_type!r} (expected 'ctc' or 'aed')")


def tiny_encoder_config(**kwargs) -> ConformerEncoderConfig:
    """A very small encoder for tests (2 layers x 32)."""
    opts = dict(num_layers=2, dim=32, num_heads=2, ff_dim=64, conv_kernel_size=7, dropout=0.0, att_dropout=0.0,
                frontend_channels=4)
    opts.update(kwargs)
    return ConformerEncoderConfig(**opts)


def paper_encoder_config(num_layers: int = 16) -> ConformerEncoderConfig:
    """The paper's Conformer encoder: ``num_layers`` x 1024, 8 heads, FF 4096 with relu^2, 6x time downsampling by
    the ConformerConvSubsample-style front end (32/64/64 channels) on 80 log-mel features."""
    return ConformerEncoderConfig(num_layers=num_layers, dim=1024, num_heads=8, ff_dim=4096, frontend_channels=64,
                                  ff_activation=FeedForwardActivation.RELU_SQUARED,
                                  frontend=FrontendType.CONV_SUBSAMPLE, frontend_conv_channels=(32, 64, 64))


def paper_aed_config(vocab_size: int = 10240) -> AedModelConfig:
    """The paper's AED: 16 x 1024 Conformer encoder, 6 x 1024 decoder (RMSNorm, gated FF of 2816 = 1024 * 4 * 2/3
    rounded up to 256, RoPE), aux CTC at layers 4, 10 and 16, label smoothing 0.1, unigram 10k units."""
    return AedModelConfig(
        encoder=paper_encoder_config(16),
        decoder=TransformerDecoderConfig(num_layers=6, dim=1024, num_heads=8, ff_dim=2816, norm=DecoderNorm.RMS_NORM,
                                         gated_ff=True, positions=DecoderPositions.ROPE),
        vocab_size=vocab_size, label_smoothing=0.1, aux_ctc_layers=(4, 10, 16), aux_ctc_scales=(0.3, 0.3, 1.0),
    )


def paper_ctc_config(vocab_size: int = 10240) -> CtcModelConfig:
    """The paper's CTC AM: the 16 x 1024 encoder with the CTC output on layer 16 and aux CTC at layers 4 and 10."""
    return CtcModelConfig(encoder=paper_encoder_config(16), vocab_size=vocab_size, aux_ctc_layers=(4, 10),
                          aux_ctc_scales=(0.3, 0.3))
