"""Waveform augmentation applied inside the AMs during training (SpecAugment, on features, is in the encoder)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import torch


def resample(x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Band-limited resampling of signals [..., n] to ``num_samples`` samples (FFT: spectrum cut or zero-padded)."""
    n = x.shape[-1]
    if num_samples == n:
        return x
    spec = torch.fft.rfft(x.float())
    keep = min(spec.shape[-1], num_samples // 2 + 1)
    out = spec.new_zeros(spec.shape[:-1] + (num_samples // 2 + 1,))
    out[..., :keep] = spec[..., :keep]
    return torch.fft.irfft(out, n=num_samples) * (num_samples / n)


def speed_perturb(audio: torch.Tensor, lengths: torch.Tensor, factors: Sequence[float],
                  generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Speed perturbation: each utterance of ``audio`` [B, S] (``lengths`` [B] samples) is played ``f`` times as
    fast, ``f`` drawn uniformly from ``factors`` (an utterance of n samples becomes round(n / f) long).

    The utterances with the same factor are resampled together; their padded length is rounded up so that both
    FFT sizes have only small prime factors (``f`` is taken as a fraction p/q with q <= 32).

    :return: the perturbed batch, zero-padded to its longest utterance, and its lengths
    """
    if not factors or any(f <= 0 for f in factors):
        raise ValueError(f"speed perturbation factors must be positive, got {tuple(factors)}")
    picks = torch.randint(len(factors), (audio.shape[0],), generator=generator)
    new_lengths = lengths.clone()
    groups = []
    for i, f in enumerate(factors):
        idx = (picks == i).nonzero().flatten().to(audio.device)
        if len(idx) == 0:
            continue
        n = lengths[idx]
        new_lengths[idx] = torch.clamp(torch.round(n.double() / f).to(lengths.dtype), min=1)
        if f == 1.0:
            groups.append((idx, audio[idx, : int(n.max())]))
            continue
        ratio = Fraction(f).limit_denominator(32)  # speed p/q: p*k*256 samples become q*k*256
        block = ratio.numerator * 256
        padded = math.ceil(int(n.max()) / block) * block
        x = audio[idx, : min(padded, audio.shape[1])]
        if x.shape[1] < padded:
            x = torch.nn.functional.pad(x, (0, padded - x.shape[1]))
        groups.append((idx, resample(x, padded * ratio.denominator // ratio.numerator).to(audio.dtype)))
    out = audio.new_zeros(audio.shape[0], int(new_lengths.max()))
    for idx, y in groups:
        width = min(y.shape[1], out.shape[1])
        out[idx, :width] = y[:, :width]
    mask = torch.arange(out.shape[1], device=out.device)[None, :] < new_lengths.to(out.device)[:, None]
    return out * mask, new_lengths
