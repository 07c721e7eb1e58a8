"""Tiny random models and corpora the search and speech-LLM tests build (no training)."""
import json
import os
from typing import Sequence, Tuple

import numpy as np
import torch


def save_tiny_aed(out_dir: str, vocab: int, *, name: str = "aed.pt") -> Tuple[str, str, torch.nn.Module]:
    """A random tiny AED saved as a RETURNN-style checkpoint (``{"model": state_dict}``) and its config JSON."""
    from llmasr.models.conformer import (AedModelConfig, TransformerDecoderConfig, model_config_to_dict,
                                         tiny_encoder_config)
    from llmasr.models.conformer_modules import build_model

    cfg = AedModelConfig(encoder=tiny_encoder_config(), vocab_size=vocab,
                         decoder=TransformerDecoderConfig(num_layers=1, dim=32, num_heads=2, ff_dim=64))
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt, config = os.path.join(out_dir, name), os.path.join(out_dir, "model_config.json")
    torch.save({"model": model.state_dict()}, ckpt)
    with open(config, "w") as f:
        json.dump(model_config_to_dict(cfg), f)
    return ckpt, config, model


def write_noise_corpus(out_dir: str, texts: Sequence[str], *, name: str = "dev.jsonl.gz") -> str:
    """A corpus manifest of noise recordings (0.5 s + 0.125 s per utterance index) with the given transcripts."""
    from llmasr.data.audio import write_audio
    from llmasr.data.corpus import CorpusEntry, write_corpus

    rng = np.random.default_rng(0)
    entries = []
    for i, text in enumerate(texts):
        path = os.path.join(out_dir, f"u{i}.flac")
        samples = 8000 + 2000 * i
        write_audio((0.1 * rng.standard_normal(samples)).astype("float32"), path)
        entries.append(CorpusEntry(id=f"u{i}", audio=path, duration=samples / 16000, speaker="s", text=text))
    manifest = os.path.join(out_dir, name)
    write_corpus(entries, manifest)
    return manifest
