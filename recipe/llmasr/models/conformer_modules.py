"""Conformer acoustic models: log-mel frontend, Conformer encoder (i6_models blocks), CTC and AED (attention decoder).

Audio in: raw 16 kHz samples [B, S]. Encoder: 80-dim log-mel -> SpecAugment (training) -> VGG conv frontend with 6x
time downsampling -> Conformer blocks. CTC: a softmax over the units plus blank (the last index) on the last layer
and on optional intermediate layers (aux losses). AED: encoder + Transformer decoder with cached incremental decoding
(exposed to searches by :class:`llmasr.search.aed_scorer.AedDecoderScorer`) + aux CTC. Their configs are in
:mod:`llmasr.models.conformer`.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from i6_models.assemblies.conformer import ConformerBlockV2Config, ConformerEncoderV2, ConformerEncoderV2Config
from i6_models.config import ModuleFactoryV1
from i6_models.parts.conformer import (
    ConformerConvolutionV1,
    ConformerConvolutionV1Config,
    ConformerMHSAV1,
    ConformerMHSAV1Config,
    ConformerPositionwiseFeedForwardV1Config,
)
from i6_models.parts.conformer.norm import LayerNormNC
from i6_models.parts.frontend.common import mask_pool
from i6_models.parts.frontend.generic_frontend import FrontendLayerType, GenericFrontendV1, GenericFrontendV1Config
from i6_models.parts.frontend.vgg_act import VGG4LayerActFrontendV1, VGG4LayerActFrontendV1Config
from i6_models.primitives.specaugment import specaugment_v1_by_length

from llmasr.models.augment import speed_perturb, vtlp_warp
from llmasr.models.checkpoint import read_state_dict
from llmasr.models.conformer import (AedModelConfig, ConformerEncoderConfig, CtcModelConfig, DecoderEmbeddingInit,
                                     DecoderNorm, DecoderPositions, FeedForwardActivation, FrontendType, LogMelConfig,
                                     ModelConfig, TransformerDecoderConfig, model_config_from_dict)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """ReLU followed by squaring (the "relu^2" feed-forward activation)."""
    return torch.square(F.relu(x))


# ---------------------------------------------------------------------------------------------------------------
# encoder


def mel_filterbank(num_filters: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Triangular filters on the HTK mel scale, [num_filters, n_fft // 2 + 1]."""
    def to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(to_mel(f_min), to_mel(f_max), num_filters + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lower) / (center - lower)
    down = (upper - bins[None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class LogMelFeatures(nn.Module):
    """Raw audio [B, S] -> log10 mel features [B, T, num_filters] (frames without centring)."""

    def __init__(self, cfg: LogMelConfig):
        super().__init__()
        self.win_length = int(round(cfg.win_size * cfg.sample_rate))
        self.hop_length = int(round(cfg.hop_size * cfg.sample_rate))
        self.n_fft = cfg.n_fft
        self.sample_rate = cfg.sample_rate
        if self.n_fft < self.win_length:
            raise ValueError(f"LogMelConfig.n_fft={cfg.n_fft} is smaller than the window ({self.win_length} samples)")
        self.register_buffer("mel_basis", mel_filterbank(cfg.num_filters, cfg.n_fft, cfg.sample_rate, cfg.f_min,
                                                         cfg.f_max), persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, vtlp: Tuple[float, ...] = ()
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """:param vtlp: (low, high): warp each utterance's spectrum by a factor from that range (training only)"""
        if audio.shape[1] < self.win_length:
            audio = F.pad(audio, (0, self.win_length - audio.shape[1]))
        frames = audio.unfold(1, self.win_length, self.hop_length) * self.window  # [B, T, win]
        spec = torch.fft.rfft(frames, n=self.n_fft).abs() ** 2  # [B, T, n_fft/2+1]
        if vtlp:
            spec = vtlp_warp(spec, vtlp, self.sample_rate)
        mel = spec @ self.mel_basis.T
        feats = torch.log10(torch.clamp(mel, min=1e-10))
        out_lengths = torch.clamp((lengths - self.win_length) // self.hop_length + 1, min=1)
        return feats, out_lengths


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """[B] lengths -> [B, T] bool mask, True inside the sequence."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def frontend_factory(cfg: ConformerEncoderConfig) -> ModuleFactoryV1:
    """The i6_models front end of ``cfg.frontend``; both reduce time by ``cfg.downsampling[0] * [1]``."""
    p1, p2 = cfg.downsampling
    if cfg.frontend == FrontendType.CONV_SUBSAMPLE:
        c1, c2, c3 = cfg.frontend_conv_channels
        conv, act, pool = FrontendLayerType.Conv2d, FrontendLayerType.Activation, FrontendLayerType.Pool2d
        return ModuleFactoryV1(GenericFrontendV1, GenericFrontendV1Config(
            in_features=cfg.logmel.num_filters, layer_ordering=[conv, act, pool, conv, act, conv, act],
            conv_kernel_sizes=[(3, 3)] * 3, conv_strides=[(1, 1), (p1, 1), (p2, 1)], conv_paddings=None,
            conv_out_dims=[c1, c2, c3], pool_kernel_sizes=[(1, 2)], pool_strides=[(1, 2)], pool_paddings=[(0, 0)],
            activations=[nn.ReLU(), nn.ReLU(), nn.ReLU()], out_features=cfg.dim))
    return ModuleFactoryV1(VGG4LayerActFrontendV1, VGG4LayerActFrontendV1Config(
        in_features=cfg.logmel.num_filters, conv1_channels=cfg.frontend_channels,
        conv2_channels=cfg.frontend_channels, conv3_channels=cfg.frontend_channels,
        conv4_channels=cfg.frontend_channels, conv_kernel_size=(3, 3), conv_padding=None,
        pool1_kernel_size=(p1, 2), pool1_stride=(p1, 2), pool1_padding=None,
        pool2_kernel_size=(p2, 2), pool2_stride=(p2, 2), pool2_padding=None,
        activation=nn.functional.silu, out_features=cfg.dim))


class ConformerEncoder(nn.Module):
    """Raw audio -> Conformer encoder frames (6x downsampled log-mel frames), built from i6_models blocks."""

    def __init__(self, cfg: ConformerEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.features = LogMelFeatures(cfg.logmel)
        p1, p2 = cfg.downsampling
        ff_activation = {FeedForwardActivation.SILU: nn.functional.silu,
                         FeedForwardActivation.RELU_SQUARED: relu_squared}[cfg.ff_activation]
        block = ConformerBlockV2Config(
            ff_cfg=ConformerPositionwiseFeedForwardV1Config(input_dim=cfg.dim, hidden_dim=cfg.ff_dim,
                                                           dropout=cfg.dropout, activation=ff_activation),
            mhsa_cfg=ConformerMHSAV1Config(input_dim=cfg.dim, num_att_heads=cfg.num_heads,
                                           att_weights_dropout=cfg.att_dropout, dropout=cfg.dropout),
            conv_cfg=ConformerConvolutionV1Config(channels=cfg.dim, kernel_size=cfg.conv_kernel_size,
                                                  dropout=cfg.dropout, activation=nn.functional.silu,
                                                  norm=LayerNormNC(cfg.dim)),
        )
        with warnings.catch_warnings():  # typeguard cannot resolve i6_models' string annotations; harmless
            warnings.simplefilter("ignore")
            self.conformer = ConformerEncoderV2(ConformerEncoderV2Config(
                num_layers=cfg.num_layers, frontend=frontend_factory(cfg), block_cfg=block))
        self.downsampling = p1 * p2
        self.train_step: Optional[int] = None  # set by the training loop for SpecAugment's start_step

    @property
    def out_dim(self) -> int:
        return self.cfg.dim

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor,
                return_layers: Optional[List[int]] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """
        :param audio: [B, S] raw samples
        :param audio_lengths: [B] number of samples
        :param return_layers: 0-based layer indices to return (default: the last)
        :return: list of [B, T, D] layer outputs, and [B] frame lengths
        """
        with torch.no_grad():
            if self.training and self.cfg.speed_perturbation:
                audio, audio_lengths = speed_perturb(audio, audio_lengths, self.cfg.speed_perturbation)
            feats, feat_lens = self.features(audio, audio_lengths, self.cfg.vtlp if self.training else ())
            if self.training and self.cfg.specaug.enabled and (self.train_step or 0) >= self.cfg.specaug.start_step:
                s = self.cfg.specaug
                feats = specaugment_v1_by_length(
                    feats, time_min_num_masks=s.time_min_num_masks,
                    time_max_mask_per_n_frames=s.time_max_mask_per_n_frames, time_mask_max_size=s.time_mask_max_size,
                    freq_min_num_masks=s.freq_min_num_masks, freq_max_num_masks=s.freq_max_num_masks,
                    freq_mask_max_size=s.freq_mask_max_size)
        pad = (-feats.shape[1]) % self.downsampling  # so that lengths are ceil(frames / 6) however a batch is padded
        if pad:
            feats = F.pad(feats, (0, 0, 0, pad))
        mask = lengths_to_mask(feat_lens, feats.shape[1])
        last = len(self.conformer.module_list) - 1
        return_layers = [last] if return_layers is None else list(return_layers)
        if not all(0 <= i <= last for i in return_layers):
            raise ValueError(f"return_layers {return_layers} outside the encoder's layers 0..{last}")
        if isinstance(self.conformer.frontend, GenericFrontendV1):
            x, mask = masked_generic_frontend(self.conformer.frontend, feats, mask)
        else:
            x, mask = masked_vgg_frontend(self.conformer.frontend, feats, mask)
        outs = []
        for i in range(max(return_layers) + 1):
            x = masked_conformer_block(self.conformer.module_list[i], x, mask)
            if i in return_layers:
                outs.append(x)
        return [outs[sorted(return_layers).index(i)] for i in return_layers], mask.sum(dim=1)


# Batch padding must not reach an utterance's frames: i6_models' convolutions (VGG frontend, Conformer convolution
# module) do not mask, so the two forwards below are theirs with padded frames zeroed before every convolution and
# pooling; an utterance then gets the same encoder output alone and in any padded batch.


def _zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` [B, T, ...] with the frames outside ``mask`` [B, T] set to 0."""
    shape = [mask.shape[0], mask.shape[1]] + [1] * (x.dim() - 2)
    return x * mask.reshape(shape).to(x.dtype)


def masked_vgg_frontend(frontend: VGG4LayerActFrontendV1, feats: torch.Tensor, mask: torch.Tensor
                        ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``VGG4LayerActFrontendV1`` on features [B, T, F] with mask [B, T] -> ([B, T', D], mask [B, T'])."""
    fe = frontend

    def channels(x, m):  # [B, C, T, F]: zero on the time axis (dim 2)
        return x * m[:, None, :, None].to(x.dtype)

    def pooled(m, layer):
        return mask_pool(m, kernel_size=layer.kernel_size[0], stride=layer.stride[0], padding=layer.padding[0])

    x = feats[:, None, :, :]
    for conv in (fe.conv1, fe.conv2):
        x = conv(channels(x, mask))
        mask = pooled(mask, conv)
    x = fe.pool1(channels(fe.activation(x), mask))
    mask = pooled(mask, fe.pool1)
    for conv in (fe.conv3, fe.conv4):
        x = conv(channels(x, mask))
        mask = pooled(mask, conv)
    x = fe.pool2(channels(fe.activation(x), mask))
    mask = pooled(mask, fe.pool2)
    x = torch.flatten(x.transpose(1, 2), start_dim=2)  # [B, T', C * F']
    return fe.linear(x), mask


def masked_generic_frontend(frontend: GenericFrontendV1, feats: torch.Tensor, mask: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``GenericFrontendV1`` (the conv-subsampling front end) on features [B, T, F] with mask [B, T], padded frames
    zeroed before every convolution and pooling -> ([B, T', D], mask [B, T'])."""
    x = feats[:, None, :, :]  # [B, 1, T, F]
    for layer in frontend.frontend_layers:
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            x = layer(x * mask[:, None, :, None].to(x.dtype))
            kernel, stride, padding = (layer.kernel_size, layer.stride, layer.padding)
            first = (lambda v: v[0] if isinstance(v, (tuple, list)) else v)
            mask = mask_pool(mask, kernel_size=first(kernel), stride=first(stride), padding=first(padding))
        else:
            x = layer(x)
    x = torch.flatten(x.transpose(1, 2), start_dim=2)  # [B, T', C * F']
    return frontend.linear(x), mask


def masked_conformer_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ConformerBlockV2`` on [B, T, D] with the convolution module's depthwise convolution masked."""
    for scale, module in zip(block.scales, block.module_list):
        if isinstance(module, ConformerMHSAV1):
            y = module(x, mask)
        elif isinstance(module, ConformerConvolutionV1):
            y = module.layer_norm(x)
            y = F.glu(module.pointwise_conv1(y), dim=-1)
            y = module.depthwise_conv(_zero_padding(y, mask).transpose(1, 2))
            y = module.activation(module.norm(y).transpose(1, 2))
            y = module.dropout(module.pointwise_conv2(y))
        else:
            y = module(x)
        x = scale * y + x
    return block.final_layer_norm(x)


# ---------------------------------------------------------------------------------------------------------------
# CTC


def _check_aux(layers, scales, num_layers, where):
    if len(layers) != len(scales):
        raise ValueError(f"{where}: aux_ctc_layers {layers} and aux_ctc_scales {scales} differ in length")
    for la in layers:
        if not 1 <= la <= num_layers:
            raise ValueError(f"{where}: aux_ctc_layers entry {la} outside 1..{num_layers}")


def ctc_loss_sum(logits: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                 blank: int) -> torch.Tensor:
    """Summed CTC loss over the batch; ``logits`` [B, T, V+1]."""
    log_probs = logits.log_softmax(-1).transpose(0, 1).float()  # [T, B, V+1]
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=blank, reduction="sum", zero_infinity=True)


class ConformerCtcModel(nn.Module):
    """Conformer encoder + CTC output layer(s)."""

    def __init__(self, cfg: CtcModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"CtcModelConfig.vocab_size must be positive, got {cfg.vocab_size}")
        _check_aux(cfg.aux_ctc_layers, cfg.aux_ctc_scales, cfg.encoder.num_layers, "CtcModelConfig")
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg.encoder)
        self.blank_idx = cfg.vocab_size
        self.output = nn.Linear(cfg.encoder.dim, cfg.vocab_size + 1)
        self.aux_outputs = nn.ModuleDict({str(la): nn.Linear(cfg.encoder.dim, cfg.vocab_size + 1)
                                          for la in cfg.aux_ctc_layers if la != cfg.encoder.num_layers})

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, Dict[int, torch.Tensor]]:
        """Returns CTC logits [B, T, V+1], frame lengths [B] and aux logits by (1-based) layer."""
        n = self.cfg.encoder.num_layers
        aux = [la for la in self.cfg.aux_ctc_layers if la != n] if self.training else []
        layers = sorted(set([la - 1 for la in aux] + [n - 1]))
        outs, lengths = self.encoder(audio, audio_lengths, return_layers=layers)
        by_layer = dict(zip([la + 1 for la in layers], outs))
        logits = self.output(by_layer[n])
        aux_logits = {la: self.aux_outputs[str(la)](by_layer[la]) for la in aux}
        return logits, lengths, aux_logits

    def ctc_log_probs(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """CTC log-probs [B, T, V+1] (blank last) and frame lengths [B]."""
        logits, lengths, _ = self(audio, audio_lengths)
        return logits.log_softmax(-1), lengths

    def compute_losses(self, audio, audio_lengths, targets, target_lengths) -> Dict[str, Tuple[torch.Tensor, float]]:
        """Summed losses by name with their scale: ``{"ctc": (sum, scale), "aux_ctc_4": ...}``."""
        logits, lengths, aux = self(audio, audio_lengths)
        losses = {"ctc": (ctc_loss_sum(logits, lengths, targets, target_lengths, self.blank_idx), self.cfg.ctc_scale)}
        for la, scale in zip(self.cfg.aux_ctc_layers, self.cfg.aux_ctc_scales):
            if la in aux:
                losses[f"aux_ctc_{la}"] = (ctc_loss_sum(aux[la], lengths, targets, target_lengths, self.blank_idx),
                                           scale)
        return losses


# ---------------------------------------------------------------------------------------------------------------
# AED


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position encodings [..., dim] for integer ``positions``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    ang = positions.float()[..., None] * freqs
    enc = torch.cat([ang.sin(), ang.cos()], dim=-1)
    if enc.shape[-1] < dim:
        enc = F.pad(enc, (0, dim - enc.shape[-1]))
    return enc


def rotate_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoPE, half-split layout) of ``x`` [B, H, L, Dh] at ``positions`` [B, L]."""
    half = x.shape[-1] // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = positions.float()[:, None, :, None] * freqs  # [B, 1, L, Dh/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half: 2 * half]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half:]], dim=-1)


def decoder_norm(cfg: TransformerDecoderConfig) -> nn.Module:
    """The pre-norm of a decoder block (LayerNorm or RMSNorm)."""
    return nn.RMSNorm(cfg.dim) if cfg.norm == DecoderNorm.RMS_NORM else nn.LayerNorm(cfg.dim)


class GatedFeedForward(nn.Module):
    """SiLU-gated feed-forward block (SwiGLU): ``W_out(silu(W_gate x) * W_in x)``."""

    def __init__(self, dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.gate = nn.Linear(dim, ff_dim)
        self.inner = nn.Linear(dim, ff_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(ff_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(F.silu(self.gate(x)) * self.inner(x)))


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerDecoderConfig, enc_dim: int):
        super().__init__()
        d, self.h = cfg.dim, cfg.num_heads
        if d % self.h:
            raise ValueError(f"TransformerDecoderConfig: dim={d} not divisible by num_heads={self.h}")
        self.rope = cfg.positions == DecoderPositions.ROPE
        self.self_ln = decoder_norm(cfg)
        self.self_qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_ln = decoder_norm(cfg)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(enc_dim, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.ff_ln = decoder_norm(cfg)
        if cfg.gated_ff:
            self.ff = GatedFeedForward(d, cfg.ff_dim, cfg.dropout)
        else:
            self.ff = nn.Sequential(nn.Linear(d, cfg.ff_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                    nn.Linear(cfg.ff_dim, d))
        self.dropout = nn.Dropout(cfg.dropout)
        self.att_dropout = cfg.att_dropout

    def _heads(self, x):  # [B, L, D] -> [B, H, L, D/H]
        b, n, d = x.shape
        return x.view(b, n, self.h, d // self.h).transpose(1, 2)

    def _merge(self, x):  # [B, H, L, D/H] -> [B, L, D]
        b, h, n, dh = x.shape
        return x.transpose(1, 2).reshape(b, n, h * dh)

    def cross_keys_values(self, enc: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(enc).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x, cross_kv, cross_mask, self_cache=None, causal=True, positions=None):
        """
        :param x: [B, L, D] (L new positions)
        :param positions: [B, L] label positions of ``x`` (RoPE only)
        :param cross_kv: encoder keys/values [B, H, T, D/H] each
        :param cross_mask: [B, 1, 1, T] bool, True where attending is allowed
        :param self_cache: (k, v) of previous positions [B, H, l, D/H] or None
        :return: output [B, L, D] and the new self-attention cache (k, v) including the L new positions
        """
        drop = self.att_dropout if self.training else 0.0
        q, k, v = [self._heads(t) for t in self.self_qkv(self.self_ln(x)).chunk(3, dim=-1)]
        if self.rope:  # cached keys are stored rotated, so a step only rotates its new position
            q, k = rotate_positions(q, positions), rotate_positions(k, positions)
        if self_cache is not None:
            k = torch.cat([self_cache[0], k], dim=2)
            v = torch.cat([self_cache[1], v], dim=2)
        mask = None
        if causal and x.shape[1] > 1:
            n_new, n_all = x.shape[1], k.shape[2]
            mask = torch.ones(n_new, n_all, dtype=torch.bool, device=x.device).tril(n_all - n_new)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.dropout(self.self_out(self._merge(a)))
        q = self._heads(self.cross_q(self.cross_ln(x)))
        a = F.scaled_dot_product_attention(q, cross_kv[0], cross_kv[1], attn_mask=cross_mask, dropout_p=drop)
        x = x + self.dropout(self.cross_out(self._merge(a)))
        x = x + self.dropout(self.ff(self.ff_ln(x)))
        return x, (k, v)


class TransformerDecoder(nn.Module):
    """Label embedding (+ sinusoidal positions, or RoPE in the self-attention) -> pre-norm decoder layers -> output
    softmax over the units."""

    def __init__(self, cfg: TransformerDecoderConfig, enc_dim: int, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.dim)
        if cfg.embedding_init == DecoderEmbeddingInit.SCALED:
            nn.init.normal_(self.embedding.weight, std=cfg.dim ** -0.5)
        self.layers = nn.ModuleList([_DecoderLayer(cfg, enc_dim) for _ in range(cfg.num_layers)])
        self.final_ln = decoder_norm(cfg)
        self.output = nn.Linear(cfg.dim, vocab_size)
        self.dropout = nn.Dropout(cfg.dropout)

    @staticmethod
    def _positions(labels: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
        """[B, L] positions of ``labels`` [B, L] starting at ``start`` (int or [B])."""
        return torch.arange(labels.shape[1], device=labels.device)[None, :] + (
            start[:, None] if torch.is_tensor(start) else start)

    def _embed(self, labels: torch.Tensor, start: torch.Tensor | int) -> torch.Tensor:
        x = self.embedding(labels) * math.sqrt(self.cfg.dim)
        if self.cfg.positions == DecoderPositions.SINUSOIDAL:
            x = x + sinusoidal_positions(self._positions(labels, start), self.cfg.dim)
        return self.dropout(x)

    def encoder_state(self, enc: torch.Tensor, enc_lengths: torch.Tensor):
        """Cross-attention keys/values per layer and the encoder mask [B, 1, 1, T]."""
        kvs = [layer.cross_keys_values(enc) for layer in self.layers]
        mask = lengths_to_mask(enc_lengths, enc.shape[1])[:, None, None, :]
        return kvs, mask

    def forward(self, labels: torch.Tensor, enc: torch.Tensor, enc_lengths: torch.Tensor) -> torch.Tensor:
        """Full (teacher-forced) forward: ``labels`` [B, L] (BOS first) -> logits [B, L, V]."""
        kvs, mask = self.encoder_state(enc, enc_lengths)
        x = self._embed(labels, 0)
        pos = self._positions(labels, 0).expand(labels.shape[0], -1)
        for layer, kv in zip(self.layers, kvs):
            x, _ = layer(x, kv, mask, positions=pos)
        return self.output(self.final_ln(x))

    def step(self, labels: torch.Tensor, state: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """One cached step: ``labels`` [N] -> logits [N, V]; ``state`` from :meth:`initial_step_state`."""
        x = self._embed(labels[:, None], state["pos"])
        pos = state["pos"][:, None]
        caches = []
        for layer, kv, cache in zip(self.layers, state["cross_kv"], state["self_kv"]):
            x, new_cache = layer(x, kv, state["cross_mask"], self_cache=cache, positions=pos)
            caches.append(new_cache)
        logits = self.output(self.final_ln(x))[:, 0]
        return logits, dict(state, self_kv=caches, pos=state["pos"] + 1)

    def initial_step_state(self, enc: torch.Tensor, enc_lengths: torch.Tensor) -> Dict[str, Any]:
        kvs, mask = self.encoder_state(enc, enc_lengths)
        return {"cross_kv": kvs, "cross_mask": mask, "self_kv": [None] * len(self.layers),
                "pos": torch.zeros(enc.shape[0], dtype=torch.long, device=enc.device)}


def select_state(state: Any, indices: torch.Tensor) -> Any:
    """Selects rows (dim 0) of every tensor in a nested state."""
    if torch.is_tensor(state):
        return state.index_select(0, indices)
    if isinstance(state, dict):
        return {k: select_state(v, indices) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(select_state(v, indices) for v in state)
    return state


class ConformerAedModel(nn.Module):
    """Conformer encoder + Transformer decoder + aux CTC layers.

    ``encoder`` is a :class:`ConformerEncoder` (reused by speech LLMs); the searches score labels with the decoder
    through :class:`llmasr.search.aed_scorer.AedDecoderScorer`.
    """

    def __init__(self, cfg: AedModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"AedModelConfig.vocab_size must be positive, got {cfg.vocab_size}")
        for name in ("bos_idx", "eos_idx"):
            if not 0 <= getattr(cfg, name) < cfg.vocab_size:
                raise ValueError(f"AedModelConfig.{name}={getattr(cfg, name)} outside the vocabulary 0..{cfg.vocab_size - 1}")
        _check_aux(cfg.aux_ctc_layers, cfg.aux_ctc_scales, cfg.encoder.num_layers, "AedModelConfig")
        self.cfg = cfg
        self.encoder = ConformerEncoder(cfg.encoder)
        self.decoder = TransformerDecoder(cfg.decoder, cfg.encoder.dim, cfg.vocab_size)
        self.blank_idx = cfg.vocab_size
        self.aux_outputs = nn.ModuleDict({str(la): nn.Linear(cfg.encoder.dim, cfg.vocab_size + 1)
                                          for la in cfg.aux_ctc_layers})

    def encode(self, audio: torch.Tensor, audio_lengths: torch.Tensor, with_ctc: bool = False):
        """Encoder output [B, T, D], lengths [B] and (if ``with_ctc``) CTC logits by layer."""
        n = self.cfg.encoder.num_layers
        ctc_layers = list(self.cfg.aux_ctc_layers) if with_ctc else []
        layers = sorted(set([la - 1 for la in ctc_layers] + [n - 1]))
        outs, lengths = self.encoder(audio, audio_lengths, return_layers=layers)
        by_layer = dict(zip([la + 1 for la in layers], outs))
        ctc = {la: self.aux_outputs[str(la)](by_layer[la]) for la in ctc_layers}
        return by_layer[n], lengths, ctc

    def ctc_log_probs(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Log-probs [B, T, V+1] of the aux CTC layer on the highest layer (blank last), and frame lengths."""
        if not self.cfg.aux_ctc_layers:
            raise ValueError("AedModelConfig.aux_ctc_layers is empty: this AED has no CTC output")
        enc, lengths, ctc = self.encode(audio, audio_lengths, with_ctc=True)
        return ctc[max(ctc)].log_softmax(-1), lengths

    def compute_losses(self, audio, audio_lengths, targets, target_lengths) -> Dict[str, Tuple[torch.Tensor, float]]:
        """Summed losses by name with scales: label-smoothed CE (over labels + EOS) and the aux CTC losses."""
        enc, lengths, ctc = self.encode(audio, audio_lengths, with_ctc=True)
        return self._losses(enc, lengths, ctc, targets, target_lengths)

    def compute_losses_from_frames(self, frames: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                                   target_lengths: torch.Tensor) -> Dict[str, Tuple[torch.Tensor, float]]:
        """:meth:`compute_losses` on stored outputs of the (frozen) encoder's last layer [B, T, D]: trains the decoder
        and the aux CTC layer of the last encoder layer; other aux CTC layers have no input here."""
        n = self.cfg.encoder.num_layers
        if any(la != n for la in self.cfg.aux_ctc_layers):
            raise ValueError(f"AedModelConfig.aux_ctc_layers={self.cfg.aux_ctc_layers}: training on stored encoder "
                             f"outputs (last layer, {n}) allows an aux CTC only on layer {n}")
        ctc = {la: self.aux_outputs[str(la)](frames) for la in self.cfg.aux_ctc_layers}
        return self._losses(frames, lengths, ctc, targets, target_lengths)

    def _losses(self, enc, lengths, ctc, targets, target_lengths) -> Dict[str, Tuple[torch.Tensor, float]]:
        b = targets.shape[0]
        bos = torch.full((b, 1), self.cfg.bos_idx, dtype=targets.dtype, device=targets.device)
        dec_in = torch.cat([bos, targets], dim=1)
        dec_out = torch.cat([targets, torch.zeros_like(bos)], dim=1)
        dec_out[torch.arange(b), target_lengths] = self.cfg.eos_idx
        logits = self.decoder(dec_in, enc, lengths)
        mask = lengths_to_mask(target_lengths + 1, dec_out.shape[1])
        ce = F.cross_entropy(logits[mask].float(), dec_out[mask], label_smoothing=self.cfg.label_smoothing,
                             reduction="sum")
        losses = {"ce": (ce, self.cfg.ce_scale)}
        for la, scale in zip(self.cfg.aux_ctc_layers, self.cfg.aux_ctc_scales):
            losses[f"aux_ctc_{la}"] = (ctc_loss_sum(ctc[la], lengths, targets, target_lengths, self.blank_idx), scale)
        return losses


def build_model(cfg: ModelConfig) -> nn.Module:
    """The module for a model config (CTC or AED)."""
    if isinstance(cfg, AedModelConfig):
        return ConformerAedModel(cfg)
    if isinstance(cfg, CtcModelConfig):
        return ConformerCtcModel(cfg)
    raise TypeError(f"build_model: unsupported config type {type(cfg).__name__}")


def load_model_checkpoint(checkpoint: str, model_config: Union[ModelConfig, str, Dict[str, Any]]) -> nn.Module:
    """Builds the model and loads a RETURNN (torch) checkpoint ``epoch.NNN.pt`` (or a bare state dict); eval mode.

    :param model_config: the config, a dict, or the path of the training job's ``model_config.json``
    """
    import json

    if isinstance(model_config, str):
        with open(model_config) as f:
            model_config = json.load(f)
    if isinstance(model_config, dict):
        model_config = model_config_from_dict(model_config)
    state = read_state_dict(checkpoint)
    model = build_model(model_config)
    model.load_state_dict(state)
    return model.eval()


def load_encoder_from_checkpoint(checkpoint: str, model_config: Union[ModelConfig, str, Dict[str, Any]]
                                 ) -> Tuple[ConformerEncoder, ModelConfig]:
    """The Conformer encoder of a trained CTC/AED checkpoint (e.g. to initialise a speech LLM), and the full config.

    ``encoder(audio [B, S], lengths [B])`` returns ``([enc [B, T, D]], frame lengths [B])``.
    """
    model = load_model_checkpoint(checkpoint, model_config)
    return model.encoder, model.cfg
