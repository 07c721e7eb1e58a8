"""Attention maps of a trained speech LLM: how the LLM decoder attends to the speech and text positions.

:func:`plot_attention` draws one map (mean over heads) with the prompt / speech / text boundaries marked, like the
decoder self-attention figures of speech-LLM papers; :class:`PlotAttentionJob` writes such maps for the first
utterances of a corpus from a trained checkpoint (see :meth:`llmasr.models.speech_llm_modules.SpeechLLM.attention_weights`).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob

Segments = Dict[str, List[Tuple[int, int]]]
SEGMENT_COLORS = {"prompt": "tab:orange", "speech": "tab:red", "text": "tab:cyan"}


def is_self_attention(shape: Sequence[int], segments: Segments) -> bool:
    """True if ``segments`` partition one axis used for queries and keys (self-attention, [.., L, L]); False for
    cross-attention maps, whose "speech" ranges index the key axis and the others the query axis."""
    if shape[-1] != shape[-2]:
        return False
    ranges = sorted(r for rs in segments.values() for r in rs)
    pos = 0
    for start, end in ranges:
        if start != pos:
            return False
        pos = end
    return pos == shape[-1]


def speech_attention_share(weights: Any, segments: Segments) -> float:
    """Self-attention: mean (over heads and text query positions) of the attention mass on the speech positions."""
    w = _to_numpy(weights)
    if w.ndim == 2:
        w = w[None]
    rows = [i for a, b in segments.get("text", []) for i in range(a, b)]
    cols = [i for a, b in segments.get("speech", []) for i in range(a, b)]
    if not rows:
        raise ValueError("segments have no text positions")
    return float(w[:, rows][:, :, cols].sum(-1).mean()) if cols else 0.0


def _to_numpy(weights: Any):
    """A tensor or array-like as a float numpy array."""
    import numpy as np

    if hasattr(weights, "detach"):
        return weights.detach().float().cpu().numpy()
    return np.asarray(weights, dtype=float)


def _segment_ticks(ax, segments: Segments, names: Sequence[str], axis: str, length: int) -> None:
    """Boundary lines and segment names (on the secondary axis) for the ranges of ``names``."""
    ticks, labels = [], []
    for name in names:
        for start, end in segments.get(name, []):
            ticks.append((start + end - 1) / 2)
            labels.append(name)
            for b in (start, end):
                if 0 < b < length:
                    line = ax.axvline if axis == "x" else ax.axhline
                    line(b - 0.5, color="white", linewidth=1.0, linestyle="--")
    sec = ax.secondary_xaxis("top") if axis == "x" else ax.secondary_yaxis("right")
    sec.set_ticks(ticks, labels)
    sec_labels = sec.get_xticklabels() if axis == "x" else sec.get_yticklabels()
    for label, name in zip(sec_labels, labels):
        label.set_color(SEGMENT_COLORS.get(name, "black"))
        if axis == "y":
            label.set_rotation(90)
            label.set_verticalalignment("center")


def plot_attention(weights: Any, segments: Segments, out_png: str, title: str = "", *,
                   text_tokens: Optional[Sequence[str]] = None) -> None:
    """Writes a heat map of attention weights (mean over heads) to ``out_png`` (atomically).

    :param weights: [heads, L_query, L_key] (or [L_query, L_key]) tensor or array
    :param segments: name -> [start, end) ranges, from ``SpeechLLM.attention_weights``: a partition of 0..L for
        self-attention; for cross-attention "speech" indexes the keys and "prompt"/"text" the queries
    :param out_png: output file
    :param title: figure title
    :param text_tokens: labels of the "text" query positions (e.g. BOS and the token pieces)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    w = _to_numpy(weights)
    if w.ndim == 3:
        w = w.mean(0)
    if w.ndim != 2:
        raise ValueError(f"attention weights must be [heads, L_q, L_k] or [L_q, L_k], got shape {w.shape}")
    n_q, n_k = w.shape
    self_att = is_self_attention(w.shape, segments)
    size = min(12.0, 3.0 + 0.08 * max(n_q, n_k))
    fig, ax = plt.subplots(figsize=(size + 1.5, size * max(n_q / max(n_k, 1), 0.35) + 1.0))
    # a square-root colour scale keeps the weak but frequent attention to the speech visible next to attention sinks
    im = ax.imshow(w, aspect="auto", interpolation="nearest", cmap="viridis", norm=PowerNorm(0.5, vmin=0.0,
                                                                                            vmax=max(w.max(), 1e-6)))
    query_names = [n for n in segments if self_att or n != "speech"]
    key_names = list(segments) if self_att else ["speech"]
    _segment_ticks(ax, segments, query_names, "y", n_q)
    _segment_ticks(ax, segments, key_names, "x", n_k)
    if text_tokens is not None and segments.get("text") and len(text_tokens) <= 80:
        start, end = segments["text"][0]
        ax.set_yticks(list(range(start, end)), list(text_tokens)[: end - start], fontsize=7)
    if self_att:
        ax.set_xlabel("key position (prompt / speech / text)")
        ax.set_ylabel("query position")
    else:
        ax.set_xlabel("speech frame (adapter output)")
        ax.set_ylabel("LLM text position (query)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="attention weight (mean over heads)", pad=0.08)
    fig.tight_layout()
    tmp = out_png + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)


# ---------------------------------------------------------------------------------------------------------------
# job


def _location(path: Any) -> Any:
    return path.get_path() if isinstance(path, tk.Path) else path


class PlotAttentionJob(ResourceJob):
    """Attention maps of a trained speech LLM on the first utterances of a corpus (reference transcription as text).

    Outputs ``attention/NNN_<utt>_layerL.png`` per utterance and layer and ``attention/index.json`` (one entry per
    plot: utterance, layer, file, shape, segments, kind "self"/"cross", and the mean attention mass of the text on
    the speech ("speech_attention", self-attention) or the layer's ``tanh(gate)`` ("gate", cross-attention)).
    """

    def __init__(self, checkpoint: tk.Path, setup: Union[Dict[str, Any], tk.Path], corpus: tk.Path, *,
                 utterances: int = 2, layers: Sequence[int] = (-1,)):
        """
        :param checkpoint: RETURNN checkpoint (``{"model": state_dict, ...}``) or a bare state dict
        :param setup: keyword arguments of :func:`llmasr.models.speech_llm_modules.build_speech_llm`, the ``SpeechLLMConfig``
            (or its literal dict) under "config", paths as tk.Path or str ("aed_checkpoint" is ignored: the weights
            come from ``checkpoint``); or a setup JSON file of that form (``SpeechLLMTrainingJob.out_setup``)
        :param corpus: corpus manifest; the first ``utterances`` entries are plotted
        :param utterances: number of utterances
        :param layers: LLM layers (PREFIX: decoder self-attention; CROSS_ATTENTION: index into the cross-attention
            layers), negative from the end
        """
        if utterances < 1:
            raise ValueError(f"utterances must be >= 1, got {utterances}")
        if not layers:
            raise ValueError("layers must not be empty")
        if isinstance(setup, dict) and "config" not in setup:
            raise ValueError("setup needs the SpeechLLMConfig under key 'config'")
        self.checkpoint = checkpoint
        self.setup = setup
        self.corpus = corpus
        self.utterances = utterances
        self.layers = tuple(int(la) for la in layers)
        self.out_dir = self.output_path("attention", directory=True)
        self.out_index = self.output_path("attention/index.json")
        self.rqmt = {"cpu": 1, "mem": 8, "time": 1}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def _build_kwargs(self) -> Dict[str, Any]:
        setup = self.setup
        if not isinstance(setup, dict):
            with open(_location(setup)) as f:
                setup = json.load(f)
        kwargs = {k: _location(v) for k, v in setup.items() if k not in ("config", "aed_checkpoint")}
        from llmasr.models.speech_llm import SpeechLLMConfig, config_from_dict

        config = setup["config"]
        if not isinstance(config, (SpeechLLMConfig, dict)):
            raise TypeError(f"setup['config'] must be a SpeechLLMConfig or a dict, got {type(config).__name__}")
        kwargs["config"] = config if isinstance(config, SpeechLLMConfig) else config_from_dict(config)
        return kwargs

    def run(self):
        import torch

        from llmasr.data.audio import load_audio
        from llmasr.data.corpus import read_corpus
        from llmasr.models.checkpoint import read_state_dict
        from llmasr.models.speech_llm import SpeechInterface
        from llmasr.models.speech_llm_modules import build_speech_llm, find_decoder_layers, hf_model

        kwargs = self._build_kwargs()
        cfg = kwargs.pop("config")
        ckpt = _location(self.checkpoint)
        state = read_state_dict(ckpt, what="speech LLM checkpoint")
        model, tokenizer = build_speech_llm(cfg, aed_checkpoint=None, **kwargs)
        model.load_state_dict(state)
        model.eval()
        entries = read_corpus(_location(self.corpus))[: self.utterances]
        if not entries:
            raise ValueError(f"corpus {_location(self.corpus)} is empty")
        cross = model.cfg.interface == SpeechInterface.CROSS_ATTENTION
        n_layers = len(model.cross_attention_layers) if cross else int(hf_model(model.llm).config.num_hidden_layers)
        out_dir = self.out_dir.get_path()
        os.makedirs(out_dir, exist_ok=True)
        index = []
        for u, entry in enumerate(entries):
            audio = torch.from_numpy(load_audio(entry.audio, name=entry.id))
            target = tokenizer.encode(entry.text)
            tokens = ["<bos>"] + [tokenizer.id_to_piece(i) for i in target]
            for layer in self.layers:
                if not -n_layers <= layer < n_layers:
                    raise ValueError(f"layer {layer} outside the model's {n_layers} "
                                     f"{'cross-attention' if cross else 'decoder'} layers")
                resolved = layer % n_layers
                weights, segments = model.attention_weights(audio, audio.shape[0], target, layer=layer)
                name = f"{u:03d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', entry.id)}_layer{resolved}.png"
                kind = "cross" if cross else "self"
                plot_attention(weights, segments, os.path.join(out_dir, name),
                               f"{entry.id}: {kind}-attention, layer {resolved}", text_tokens=tokens)
                item = {"id": entry.id, "layer": resolved, "file": name, "kind": kind, "text": entry.text,
                        "shape": list(weights.shape),
                        "segments": {k: [list(r) for r in v] for k, v in segments.items()}}
                if cross:  # how much the layer lets the speech in
                    gate = find_decoder_layers(model.llm)[model.cross_attention_layers[resolved]].cross_attn.gate
                    item["gate"] = float(torch.tanh(gate.detach()))
                else:
                    item["speech_attention"] = speech_attention_share(weights, segments)
                index.append(item)
                logging.info("%s layer %d: %s", entry.id, resolved, name)
        tmp = self.out_index.get_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(index, f, indent=1)
        os.replace(tmp, self.out_index.get_path())
