"""Speech LLM training through RETURNN: the AED's encoder -> adapter -> a pre-trained LLM, trained on OggZip data.

:class:`SpeechLLMSetup` names everything the model is built from (it is part of the job hashes); the RETURNN
config holds it as literals (:func:`setup_to_dict`), from which :func:`llmasr.models.speech_llm.build_from_setup`
builds the model (in training and in recognition).
"""
from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any, ClassVar, Dict, Optional, Sequence, Union

from sisyphus import tk

from llmasr.hash_defaults import HashDefaults
from llmasr.models.conformer import ConformerEncoderConfig
from llmasr.models.speech_llm import SpeechLLMConfig
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.training import ReturnnTrainingBase, spm_vocab_size, write_json


@dataclasses.dataclass(frozen=True)
class SpeechLLMSetup(HashDefaults):
    """What a speech LLM is built from.

    :param config: adapter, interface, fine-tuning strategy, aux CTC (encoder_dim/bos/eos/prompt ids are filled in
        when the model is built; ``ctc_vocab_size`` 0 with ``aux_ctc_scale`` > 0: the AM's units + blank)
    :param llm: LLM directory (``save_pretrained``) or hub name (e.g. "Qwen/Qwen2-0.5B")
    :param aed_checkpoint: trained AED (or CTC) checkpoint whose encoder initialises the speech encoder (None: the
        encoder starts from random weights and trains with the LLM; needs ``encoder``)
    :param aed_model_config: its ``model_config.json`` (None with ``encoder``)
    :param am_spm_model: if set, the LLM's vocabulary is swapped to these SentencePiece units (the AM's)
    :param prompt_pre_text: text before the speech (e.g. "USER: ")
    :param prompt_post_text: text after the speech (e.g. " Transcribe speech to text. ASSISTANT: ")
    :param encoder: the speech encoder's own config (e.g. the paper's 18 layers) instead of the AED's; with an
        ``aed_checkpoint`` its weights must fit
    """

    config: SpeechLLMConfig
    llm: Union[tk.Path, str]
    aed_checkpoint: Optional[tk.Path]
    aed_model_config: Optional[tk.Path]
    am_spm_model: Optional[tk.Path] = None
    prompt_pre_text: str = ""
    prompt_post_text: str = ""
    encoder: Optional[ConformerEncoderConfig] = None

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"encoder": None}

    def __post_init__(self):
        if self.encoder is None and (self.aed_checkpoint is None or self.aed_model_config is None):
            raise ValueError("SpeechLLMSetup: without an encoder config, aed_checkpoint and aed_model_config are needed")


def _plain(value: Any) -> Any:
    """Config value -> Python literal (enums by value, paths resolved)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tk.Path):
        return value.get_path()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def setup_to_dict(setup: SpeechLLMSetup) -> Dict[str, Any]:
    """The setup as a literal dict for a RETURNN config."""
    cfg = {f.name: _plain(getattr(setup.config, f.name)) for f in dataclasses.fields(setup.config)}
    from llmasr.models.conformer import CtcModelConfig, model_config_to_dict

    d = {"config": cfg, "llm": _plain(setup.llm),
         "aed_checkpoint": _plain(setup.aed_checkpoint) if setup.aed_checkpoint is not None else None,
         "aed_model_config": _plain(setup.aed_model_config) if setup.aed_model_config is not None else None,
         "am_spm_model": _plain(setup.am_spm_model) if setup.am_spm_model is not None else None,
         "prompt_pre_text": setup.prompt_pre_text, "prompt_post_text": setup.prompt_post_text}
    if setup.encoder is not None:
        d["encoder"] = model_config_to_dict(CtcModelConfig(encoder=setup.encoder))["encoder"]
    return d


SPEECH_LLM_TRAIN_IMPORTS = ["from llmasr.returnn.speech_llm_steps import get_model, train_step"]


class SpeechLLMTrainingJob(ReturnnTrainingBase):
    """Trains a speech LLM with ``python -m returnn`` (PyTorch backend); resumable, one checkpoint per epoch."""

    def __init__(
        self,
        setup: SpeechLLMSetup,
        train_data: Union[tk.Path, Sequence[tk.Path]],
        dev_data: Union[tk.Path, Sequence[tk.Path]],
        spm_model: tk.Path,
        *,
        options: TrainingOptions = TrainingOptions(),
        cpu: int = 2,
        mem: int = 16,
        time: float = 24,
        gpu: int = 0,
    ):
        """
        :param setup: encoder, adapter, LLM and fine-tuning choices
        :param train_data: OggZip file(s) (targets: the AM's SentencePiece ids, see ``spm_model``), or, with a frozen
            encoder, its stored outputs (:class:`llmasr.returnn.forward.DumpEncoderFramesJob`), computed once
        :param dev_data: OggZip file(s) for dev scores (stored encoder outputs with the training data)
        :param spm_model: the SentencePiece model of the OggZip targets (the AM's)
        :param options: batching, optimiser and learning-rate schedule
        :param cpu: cores; :param mem: GiB; :param time: hours; :param gpu: GPUs
        """
        if not isinstance(setup, SpeechLLMSetup):
            raise TypeError(f"setup must be a SpeechLLMSetup, got {type(setup).__name__}")
        self.setup = setup
        self._init_training(train_data, dev_data, spm_model, options, cpu=cpu, mem=mem, time=time, gpu=gpu)
        self.out_setup = self.output_path("setup.json")

    def _frames_input(self):
        import json

        from llmasr.models.conformer import model_config_from_dict
        from llmasr.returnn.training import encoder_frames_input

        if not self.setup.config.freeze_encoder:
            raise ValueError("SpeechLLMTrainingJob: stored encoder outputs (.hdf) as training data need "
                             "SpeechLLMConfig.freeze_encoder=True (a trained encoder must see the audio)")
        with open(self.setup.aed_model_config.get_path()) as f:
            return encoder_frames_input(model_config_from_dict(json.load(f)).encoder)

    def create_files(self):
        spm_model = self.spm_model.get_path()
        vocab = spm_vocab_size(spm_model)
        setup = setup_to_dict(self.setup)
        for key in ("aed_checkpoint", "aed_model_config", "am_spm_model"):
            if setup[key] is not None and not os.path.exists(setup[key]):
                raise FileNotFoundError(f"SpeechLLMSetup.{key}: {setup[key]} does not exist")
        if setup["config"].get("aux_ctc_scale") and not setup["config"].get("ctc_vocab_size"):
            setup["config"]["ctc_vocab_size"] = vocab + 1  # the AM's units + blank
        if setup["config"].get("ctc_vocab_size") and setup["config"]["ctc_vocab_size"] != vocab + 1:
            raise ValueError(f"SpeechLLMConfig.ctc_vocab_size={setup['config']['ctc_vocab_size']} but the aux CTC "
                             f"over {spm_model} needs {vocab} labels + blank = {vocab + 1}")
        params = self._training_params({}, vocab)
        del params["model_config"]
        params["speech_llm_setup"] = setup
        params["target_spm_model"] = spm_model
        self._write_returnn_config(params, SPEECH_LLM_TRAIN_IMPORTS)
        write_json(setup, self.out_setup.get_path())
