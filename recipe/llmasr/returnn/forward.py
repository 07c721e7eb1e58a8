"""Recognition and other forward passes of trained AMs as RETURNN forward jobs (``task = "forward"``).

The search runs inside ``forward_step`` (:mod:`llmasr.returnn.steps`); a forward callback writes the N-best list
(shared gzipped-JSON format), ``search_stats.json`` (audio and decode seconds, for RTFx), the CTC prior or a dump of
the CTC log-probs.
"""
from __future__ import annotations

import enum
import os
from typing import Any, ClassVar, Dict, Optional, Sequence, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.returnn.config import ogg_zip_dataset, write_config
from llmasr.returnn.training import run_returnn, spm_vocab_size


class RecogMode(enum.Enum):
    """What the forward job computes."""

    CTC_GREEDY = "ctc_greedy"
    CTC_BEAM = "ctc_beam"  # CTC prefix beam search, N-best
    AED_BEAM = "aed_beam"  # label-synchronous beam search with length normalisation
    AED_CTC = "aed_ctc"  # AED + CTC prefix scores (joint)


FORWARD_IMPORTS = ["from llmasr.returnn.steps import get_model, forward_step, forward_callback_for_mode",
                   "forward_callback = forward_callback_for_mode()"]


def forward_params(model_config: str, checkpoint: str, data: Sequence[str], spm_model: str, *, mode: str,
                   opts: Dict[str, Any], outputs: Dict[str, str], batch_seconds: float, max_seqs: int,
                   device: str = "cpu", max_utterances: Optional[int] = None) -> Dict[str, Any]:
    """Settings of a RETURNN forward config over OggZip data with a trained checkpoint; ``max_utterances`` draws a
    fixed random subset of that many utterances (OggZipDataset ``fixed_random_subset``)."""
    import json

    if not os.path.isfile(model_config):
        raise FileNotFoundError(f"model config {model_config} does not exist")
    with open(model_config) as f:
        model_dict = json.load(f)
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    dataset = ogg_zip_dataset(data, spm_model, train=False)
    if max_utterances:
        dataset["fixed_random_subset"] = int(max_utterances)
    params = {
        "backend": "torch",
        "task": "forward",
        "device": device,
        "use_tensorflow": False,
        "model_config": model_dict,
        "extern_data": {"data": {"dim": 1, "dtype": "float32"},
                        "classes": {"dim": spm_vocab_size(spm_model), "sparse": True, "dtype": "int32"}},
        "forward_data": dataset,
        "load": os.path.abspath(checkpoint),
        "batch_size": {"data": int(batch_seconds * 16000), "classes": 10 ** 9},
        "max_seqs": max_seqs,
        "batching": "sorted_reverse",
        "recog_mode": mode,
        "recog_opts": opts,
        "spm_model": spm_model,
        "sample_rate": 16000,
        "log_verbosity": 4,
    }
    params.update(outputs)
    return params


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


class _ForwardJobBase(ResourceJob):
    """A RETURNN forward pass of a trained AM over OggZip data; subclasses add their outputs and options."""

    def __init__(self, checkpoint: tk.Path, model_config: tk.Path, data: Union[tk.Path, Sequence[tk.Path]],
                 spm_model: tk.Path, *, batch_seconds: float, max_seqs: int, cpu: int, device: str):
        self.checkpoint = checkpoint
        self.model_config = model_config
        self.data = _as_list(data)
        self.spm_model = spm_model
        self.batch_seconds = batch_seconds
        self.max_seqs = max_seqs
        self.device = device
        self.out_returnn_config = self.output_path("returnn.config")
        self.rqmt = {"cpu": cpu, "mem": 4, "time": 4, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def _write_and_run(self, mode: str, opts: Dict[str, Any], outputs: Dict[str, str],
                       max_utterances: Optional[int] = None) -> None:
        config = self.out_returnn_config.get_path()
        params = forward_params(self.model_config.get_path(), self.checkpoint.get_path(),
                                [p.get_path() for p in self.data], self.spm_model.get_path(), mode=mode, opts=opts,
                                outputs=outputs, batch_seconds=self.batch_seconds, max_seqs=self.max_seqs,
                                device=self.run_device(), max_utterances=max_utterances)
        extra = f"\nimport torch\ntorch.set_num_threads({self.run_threads()})\n"
        write_config(config, params, imports=FORWARD_IMPORTS, extra_code=extra)
        run_returnn(config, cwd=os.path.abspath("."), threads=self.run_threads())


class ReturnnForwardJob(_ForwardJobBase):
    """Recognition with a trained AM: writes ``out_nbest`` (gzipped JSON) and ``out_search_stats``."""

    __sis_hash_exclude__ = {"lexicon": None, "length_reward": 0.0}

    def __init__(
        self,
        checkpoint: tk.Path,
        model_config: tk.Path,
        data: Union[tk.Path, Sequence[tk.Path]],
        spm_model: tk.Path,
        *,
        mode: RecogMode = RecogMode.CTC_GREEDY,
        beam_size: int = 8,
        nbest: int = 8,
        label_topk: int = 8,
        length_norm_exponent: float = 1.0,
        ctc_scale: Union[float, tk.Variable] = 0.3,
        max_len_ratio: float = 1.0,
        batch_seconds: float = 200.0,
        max_seqs: int = 32,
        cpu: int = 1,
        device: str = "cpu",
        lexicon: Optional[tk.Path] = None,
        length_reward: Union[float, tk.Variable] = 0.0,
    ):
        """
        :param checkpoint: RETURNN checkpoint (``ReturnnTrainingJob.out_checkpoints[e]``, best or averaged)
        :param model_config: ``ReturnnTrainingJob.out_model_config``
        :param data: OggZip file(s) to recognise
        :param spm_model: SentencePiece model of the AM's labels (to turn hypotheses into words)
        :param mode: CTC_GREEDY, CTC_BEAM, AED_BEAM or AED_CTC
        :param beam_size: hypotheses kept per step
        :param nbest: hypotheses written per utterance
        :param label_topk: CTC beam: labels tried per frame
        :param length_norm_exponent: AED: final score / length^exponent
        :param ctc_scale: AED_CTC: weight of the CTC prefix score (the decoder gets 1 - ctc_scale); a variable, e.g.
            the scale chosen on dev by ``SelectBestScaleJob``, is read when the job runs
        :param max_len_ratio: AED: maximum output labels per encoder frame
        :param batch_seconds: audio per forward batch; :param max_seqs: utterances per batch
        :param cpu: threads; :param device: "cpu" or "cuda"
        :param lexicon: CTC_BEAM, AED_BEAM, AED_CTC: a word list (:class:`llmasr.text.lexicon.WordListJob`); the
            search may then output only its words (None: any word the AM's units spell)
        :param length_reward: CTC_BEAM: added per output label (against the deletions of a lexicon search); a
            variable (chosen on dev) is read when the job runs
        """
        if not isinstance(mode, RecogMode):
            raise ValueError(f"mode must be a RecogMode, got {mode!r}")
        if length_reward != 0.0 and mode != RecogMode.CTC_BEAM:
            raise ValueError(f"ReturnnForwardJob: length_reward is an option of CTC_BEAM, not {mode.name}")
        if lexicon is not None and mode == RecogMode.CTC_GREEDY:
            raise ValueError("ReturnnForwardJob: a lexicon needs a beam search (CTC_BEAM, AED_BEAM, AED_CTC), "
                             "not CTC_GREEDY")
        if beam_size < 1 or nbest < 1:
            raise ValueError(f"beam_size and nbest must be >= 1, got {beam_size}, {nbest}")
        super().__init__(checkpoint, model_config, data, spm_model, batch_seconds=batch_seconds, max_seqs=max_seqs,
                         cpu=cpu, device=device)
        self.mode = mode
        self.beam_size = beam_size
        self.nbest = nbest
        self.label_topk = label_topk
        self.length_norm_exponent = length_norm_exponent
        self.ctc_scale = ctc_scale
        self.max_len_ratio = max_len_ratio
        self.lexicon = lexicon
        self.length_reward = length_reward
        self.out_nbest = self.output_path("nbest.json.gz")
        self.out_search_stats = self.output_path("search_stats.json")

    def run(self):
        ctc_scale = self.ctc_scale.get() if isinstance(self.ctc_scale, tk.Variable) else self.ctc_scale
        opts = {"beam_size": self.beam_size, "nbest": self.nbest, "label_topk": self.label_topk,
                "length_norm_exponent": self.length_norm_exponent, "ctc_scale": float(ctc_scale),
                "max_len_ratio": self.max_len_ratio}
        if self.lexicon is not None:
            opts["lexicon"] = self.lexicon.get_path()
        length_reward = self.length_reward.get() if isinstance(self.length_reward, tk.Variable) else self.length_reward
        if length_reward:
            opts["length_reward"] = float(length_reward)
        self._write_and_run(self.mode.value, opts, {"nbest_file": self.out_nbest.get_path(),
                                                    "stats_file": self.out_search_stats.get_path()})


class EstimateCtcPriorJob(_ForwardJobBase):
    """CTC label prior: the softmax averaged over all frames of the data, blank removed and renormalised.

    ``out_log_prior``: one log-probability per CTC output (blank last, its entry 0.0); ``out_log_label_prior``: the
    labels only (for label-synchronous searches).
    """

    __sis_hash_exclude__ = {"max_utterances": None}

    def __init__(self, checkpoint: tk.Path, model_config: tk.Path, data: Union[tk.Path, Sequence[tk.Path]],
                 spm_model: tk.Path, *, batch_seconds: float = 200.0, max_seqs: int = 32, cpu: int = 1,
                 device: str = "cpu", max_utterances: Optional[int] = None):
        """
        :param checkpoint: AM checkpoint; :param model_config: its ``model_config.json``
        :param data: OggZip file(s), usually (a subset of) the training data
        :param spm_model: SentencePiece model (targets of the dataset)
        :param batch_seconds: audio per batch; :param max_seqs: utterances per batch; :param cpu: threads
        :param device: "cpu" or "cuda"
        :param max_utterances: average over a fixed random subset of this many utterances (the paper: 100k), not
            all of ``data``
        """
        super().__init__(checkpoint, model_config, data, spm_model, batch_seconds=batch_seconds, max_seqs=max_seqs,
                         cpu=cpu, device=device)
        if max_utterances is not None and max_utterances < 1:
            raise ValueError(f"EstimateCtcPriorJob.max_utterances must be >= 1, got {max_utterances}")
        self.max_utterances = max_utterances
        self.out_log_prior = self.output_path("log_prior.txt")
        self.out_log_label_prior = self.output_path("log_label_prior.txt")

    def run(self):
        self._write_and_run("ctc_prior", {}, {"prior_file": self.out_log_prior.get_path(),
                                             "label_prior_file": self.out_log_label_prior.get_path()},
                            max_utterances=self.max_utterances)


class _DumpJob(_ForwardJobBase):
    """A forward pass that writes one HDF file (``output/<DUMP_FILE>``) in forward mode ``DUMP_MODE``."""

    DUMP_MODE: ClassVar[str]
    DUMP_FILE: ClassVar[str]
    DUMP_KEY: ClassVar[str]  # the forward step's option naming the file

    def __init__(self, checkpoint: tk.Path, model_config: tk.Path, data: Union[tk.Path, Sequence[tk.Path]],
                 spm_model: tk.Path, *, batch_seconds: float = 200.0, max_seqs: int = 32, cpu: int = 1,
                 device: str = "cpu"):
        """
        :param checkpoint: AM checkpoint; :param model_config: its ``model_config.json``
        :param data: OggZip file(s); :param spm_model: SentencePiece model (of the stored targets)
        :param batch_seconds: audio per batch; :param max_seqs: utterances per batch; :param cpu: threads
        :param device: "cpu" or "cuda"
        """
        super().__init__(checkpoint, model_config, data, spm_model, batch_seconds=batch_seconds, max_seqs=max_seqs,
                         cpu=cpu, device=device)
        self.out_file = self.output_path(self.DUMP_FILE)

    def run(self):
        self._write_and_run(self.DUMP_MODE, {}, {self.DUMP_KEY: self.out_file.get_path()})


class DumpCtcLogProbsJob(_DumpJob):
    """Writes every utterance's [T, V+1] CTC log-probs to a RETURNN HDF (written and read one utterance at a time,
    :mod:`llmasr.search.ctc_logprobs`) for the CTC fusion searches and the joint speech-LLM searches."""

    DUMP_MODE, DUMP_FILE, DUMP_KEY = "ctc_logprobs", "ctc_logprobs.hdf", "logprobs_file"

    @property
    def out_ctc_logprobs(self) -> tk.Path:
        return self.out_file


class DumpEncoderFramesJob(_DumpJob):
    """Stores the encoder outputs (last layer) and target labels of every utterance in an HDF file, so that models
    on a frozen encoder (an AED decoder, speech LLMs) train without running the encoder every epoch.

    The audio is forwarded as it is (no SpecAugment, no speed perturbation): one dump serves all epochs.
    """

    DUMP_MODE, DUMP_FILE, DUMP_KEY = "encoder_frames", "encoder_frames.hdf", "frames_file"

    @property
    def out_frames(self) -> tk.Path:
        return self.out_file
