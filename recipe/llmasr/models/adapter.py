"""Adapter from acoustic encoder frames to the LLM embedding space: stack k frames, then project."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class FrameStackAdapter(nn.Module):
    """Concatenates ``k`` consecutive frames (zero-padding the tail) and maps them to the LLM width.

    :param in_dim: encoder output dimension
    :param out_dim: LLM hidden size
    :param k: extra downsampling factor (1, 2, 4, ...)
    :param hidden_dim: if set, a 2-layer MLP with this hidden size; else a single linear layer
    """

    def __init__(self, in_dim: int, out_dim: int, *, k: int = 1, hidden_dim: int = 0):
        super().__init__()
        if k < 1:
            raise ValueError(f"adapter downsampling k must be >= 1, got {k}")
        self.k = k
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(in_dim * k, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            self.proj = nn.Linear(in_dim * k, out_dim)

    def forward(self, frames: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """frames [B,T,D], lens [B] -> ([B, ceil(T/k), out_dim], [B] = ceil(lens/k))."""
        b, t, d = frames.shape
        pad = (-t) % self.k
        mask = (torch.arange(t, device=frames.device)[None, :] < lens[:, None]).unsqueeze(-1)
        frames = frames * mask  # padded frames must not leak into the last stacked frame
        if pad:
            frames = torch.nn.functional.pad(frames, (0, 0, 0, pad))
        stacked = frames.reshape(b, (t + pad) // self.k, d * self.k)
        out_lens = torch.div(lens + self.k - 1, self.k, rounding_mode="floor")
        return self.proj(stacked), out_lens
