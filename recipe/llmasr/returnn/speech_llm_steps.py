"""RETURNN model and train step of a speech LLM (imported by the configs of
:class:`llmasr.returnn.speech_llm.SpeechLLMTrainingJob`).

The dataset gives raw audio and the AM's SentencePiece ids ("classes"); for an LLM with its own tokenizer the ids
are decoded to text and re-tokenised here, for a speech LLM over the AM units (vocabulary swap) they are the
targets as they are. The aux CTC loss uses the AM ids.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch

_TOKENIZER: Dict[str, Any] = {}


def _config():
    from returnn.config import get_global_config

    return get_global_config()


def get_model(*, epoch: int = 0, step: int = 0, **_kwargs) -> torch.nn.Module:
    """Builds the speech LLM from the config's ``speech_llm_setup`` (encoder initialised from the AED)."""
    from llmasr.models.speech_llm_modules import build_from_setup

    torch.manual_seed(int(_config().int("random_seed", 42)))
    model, tokenizer = build_from_setup(_config().typed_value("speech_llm_setup"), with_aed_weights=True)
    _TOKENIZER["llm"] = tokenizer
    return model


def _am_spm():
    if "am" not in _TOKENIZER:
        import sentencepiece as spm

        _TOKENIZER["am"] = spm.SentencePieceProcessor(model_file=_config().typed_value("target_spm_model"))
    return _TOKENIZER["am"]


def targets_from_am_ids(am_ids: List[List[int]], *, vocab_swap: bool) -> List[List[int]]:
    """LLM targets of a batch: the AM ids (vocabulary swap) or the LLM tokens of their text."""
    if vocab_swap:
        return am_ids
    texts = [_am_spm().decode(ids) for ids in am_ids]
    return [_TOKENIZER["llm"].encode(t) for t in texts]


def train_step(*, model: torch.nn.Module, extern_data, **_kwargs) -> None:
    """CE over the transcription tokens (+ EOS) per token, and the aux CTC loss per AM label."""
    import returnn.frontend as rf

    from llmasr.returnn.steps import audio_from_extern_data, frames_from_extern_data, set_train_step, trains_on_frames

    ctx = rf.get_run_ctx()
    set_train_step(model, int(ctx.step))
    classes = extern_data["classes"]
    labels = classes.raw_tensor.long().cpu()
    lengths = classes.dims[1].dyn_size_ext.raw_tensor.long().cpu()
    am_ids = [labels[b, : int(lengths[b])].tolist() for b in range(labels.shape[0])]
    setup = _config().typed_value("speech_llm_setup")
    targets = targets_from_am_ids(am_ids, vocab_swap=bool(setup.get("am_spm_model")))
    if trains_on_frames():  # stored outputs of the frozen encoder
        losses = model.compute_losses_from_frames(*frames_from_extern_data(extern_data), targets, ctc_targets=am_ids)
    else:
        losses = model.compute_losses(*audio_from_extern_data(extern_data), targets, ctc_targets=am_ids)
    norms = {"ce": sum(len(t) + 1 for t in targets), "aux_ctc": max(1, sum(len(t) for t in am_ids))}
    for name, (loss, scale) in losses.items():  # "aux_ctc" or "aux_ctc_<layer>": per AM label
        norm = norms["aux_ctc"] if name.startswith("aux_ctc") else norms.get(name, 1)
        ctx.mark_as_loss(loss / norm, name, scale=scale)
