"""Augmentation inside the AMs during training: speed perturbation of the waveform, VTLP of the spectrum (SpecAugment,
on the features, is in the encoder)."""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import torch

from llmasr.models.conformer import check_vtlp_range


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
    """Speed perturbation: the batch ``audio`` [B, S] (``lengths`` [B] samples) is played ``f`` times as fast,
    ``f`` drawn uniformly from ``factors`` once per batch (an utterance of n samples becomes round(n / f) long).

    One factor per batch keeps the padded batch as long as its longest utterance needs (a factor per utterance
    would pad every batch to its slowest one); over the epochs each utterance still meets every factor.
    The padded length is rounded up so that both FFT sizes have only small prime factors (``f`` is taken as a
    fraction p/q with q <= 32).

    :return: the perturbed batch (zero after each utterance's end) and its lengths
    """
    if not factors or any(f <= 0 for f in factors):
        raise ValueError(f"speed perturbation factors must be positive, got {tuple(factors)}")
    f = float(factors[int(torch.randint(len(factors), (1,), generator=generator))])
    if f == 1.0:
        return audio, lengths
    new_lengths = torch.clamp(torch.round(lengths.double() / f).to(lengths.dtype), min=1)
    ratio = Fraction(f).limit_denominator(32)  # speed p/q: p*k*256 samples become q*k*256
    block = ratio.numerator * 256
    padded = math.ceil(int(lengths.max()) / block) * block
    x = audio[:, : min(padded, audio.shape[1])]
    if x.shape[1] < padded:
        x = torch.nn.functional.pad(x, (0, padded - x.shape[1]))
    out = resample(x, padded * ratio.denominator // ratio.numerator)[:, : int(new_lengths.max())].to(audio.dtype)
    mask = torch.arange(out.shape[1], device=out.device)[None, :] < new_lengths.to(out.device)[:, None]
    return out * mask, new_lengths


def vtlp_warp(power_spec: torch.Tensor, warp_range: Tuple[float, float], sample_rate: int,
              boundary_hz: float = 4800.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly and Hinton, 2013) of power spectra [B, T, K] (bins 0 .. Nyquist).

    Each utterance draws a factor ``a`` uniformly from ``warp_range`` and its spectrum is stretched along frequency:
    a component at ``f`` moves to ``a * f`` up to ``boundary_hz * min(a, 1)``, above that the map is linear up to
    the Nyquist frequency, which stays where it is. Formants and harmonics move together, the tempo does not (speed
    perturbation changes both); the warped spectrum is read off the original by linear interpolation between bins.
    """
    check_vtlp_range(warp_range, "VTLP warp range")
    lo, hi = warp_range
    batch, num_bins = power_spec.shape[0], power_spec.shape[-1]
    alpha = lo + (hi - lo) * torch.rand(batch, 1, generator=generator, dtype=torch.float64)
    nyquist = sample_rate / 2
    out_hz = torch.linspace(0.0, nyquist, num_bins, dtype=torch.float64)[None, :]  # [1, K]
    knee_out = boundary_hz * torch.clamp(alpha, max=1.0)  # [B, 1]: output frequency where the linear part starts
    knee_in = knee_out / alpha
    upper = knee_in + (out_hz - knee_out) * (nyquist - knee_in) / (nyquist - knee_out)
    src_hz = torch.where(out_hz <= knee_out, out_hz / alpha, upper)  # [B, K]: where each output bin reads from
    pos = torch.clamp(src_hz / nyquist * (num_bins - 1), 0.0, num_bins - 1.0)
    left = pos.floor().long().clamp(max=num_bins - 2)
    frac = (pos - left).to(power_spec.device, power_spec.dtype)[:, None, :]
    index = left[:, None, :].expand(batch, power_spec.shape[1], num_bins).to(power_spec.device)
    below = torch.gather(power_spec, 2, index)
    above = torch.gather(power_spec, 2, index + 1)
    return below * (1 - frac) + above * frac
