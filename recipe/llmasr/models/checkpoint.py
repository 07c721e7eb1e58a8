"""Reading the parameters of a RETURNN (torch backend) checkpoint, shared by every loader of trained models."""
from __future__ import annotations

import os
from typing import Dict

import torch


def read_state_dict(path: str, *, what: str = "checkpoint", mmap: bool = False) -> Dict[str, torch.Tensor]:
    """The parameters of ``epoch.NNN.pt`` (RETURNN stores ``{"model": state dict, "epoch": ..., ...}``) or of a
    bare state dict, on the CPU. ``what`` names the file in the error; ``mmap`` maps the tensors lazily (for
    reading only the names of a large checkpoint)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    data = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    return data["model"] if isinstance(data, dict) and "model" in data else data
