"""AM training with RETURNN's PyTorch backend, and checkpoint selection/averaging by dev score."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Union

from sisyphus import Task, tk

from llmasr.models.conformer import AedModelConfig, ConformerEncoderConfig, CtcModelConfig, model_config_to_dict
from llmasr.resources import ResourceJob
from llmasr.returnn.config import (SCHEDULED_LR_CODE, TRAIN_IMPORTS, FramesInput, LearningRateSchedule,
                                   TrainingOptions, is_frames_file, training_params, write_config)


def returnn_env(threads: int = 0) -> Dict[str, str]:
    """Environment of a RETURNN subprocess: the recipe folder importable, thread count limited if asked."""
    from llmasr.returnn.config import RECIPE_DIR

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([RECIPE_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def returnn_command(config_path: str, gpus: int = 0) -> List[str]:
    """``python -m returnn CONFIG``; with several GPUs wrapped into ``torch.distributed.run`` (one process per GPU)."""
    from sisyphus.cluster_engine import torchrun_command

    return torchrun_command([sys.executable, "-m", "returnn", config_path], gpus)


def run_returnn(config_path: str, cwd: str, threads: int = 0, log_path: Optional[str] = None, gpus: int = 0) -> None:
    """Runs RETURNN on ``config_path`` in ``cwd``; raises with the log tail when it fails."""
    log_path = log_path or os.path.join(cwd, "returnn.log")
    with open(log_path, "a") as log:
        proc = subprocess.run(returnn_command(config_path, gpus), cwd=cwd, env=returnn_env(threads),
                              stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path, errors="replace") as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"RETURNN failed (exit code {proc.returncode}) with config {config_path}; "
                           f"log {log_path} ends with:\n{tail}")


def spm_vocab_size(spm_model: str) -> int:
    import sentencepiece as spm

    if not os.path.isfile(spm_model):
        raise FileNotFoundError(f"SentencePiece model {spm_model} does not exist")
    return spm.SentencePieceProcessor(model_file=spm_model).get_piece_size()


def resolve_model_config(model_config: Union[CtcModelConfig, AedModelConfig], vocab_size: int) -> Dict:
    """Model config dict with the vocabulary size taken from the SentencePiece model (checked if given)."""
    d = model_config_to_dict(model_config)
    if d["vocab_size"] == 0:
        d["vocab_size"] = vocab_size
    elif d["vocab_size"] != vocab_size:
        raise ValueError(f"model_config.vocab_size={d['vocab_size']} but the SentencePiece model has {vocab_size} pieces")
    return d


class ReturnnTrainingBase(ResourceJob):
    """What every RETURNN training job shares: per-epoch checkpoint outputs, the learning-rates file, a resumable
    ``run`` task, and writing the config (data, batching, optimiser, schedule, device, multi-GPU)."""

    def _init_training(self, train_data, dev_data, spm_model: tk.Path, options: TrainingOptions, *, cpu: int,
                       mem: int, time: float, gpu: int) -> None:
        options.check()
        self.train_data = list(train_data) if isinstance(train_data, (list, tuple)) else [train_data]
        self.dev_data = list(dev_data) if isinstance(dev_data, (list, tuple)) else [dev_data]
        self.spm_model = spm_model
        self.options = options
        self.out_returnn_config = self.output_path("returnn.config")
        self.out_model_dir = self.output_path("models", directory=True)
        self.out_checkpoints = {e: self.output_path(f"models/epoch.{e:03d}.pt") for e in range(1, options.num_epochs + 1)}
        self.out_learning_rates = self.output_path("learning_rates")
        self.out_last_checkpoint = self.out_checkpoints[options.num_epochs]
        self.rqmt = {"cpu": cpu, "mem": mem, "time": time, "gpu": gpu}

    def tasks(self):
        yield Task("create_files", mini_task=True)
        yield Task("run", rqmt=self.rqmt, resume="run", progress="epochs_saved")

    def epochs_saved(self) -> int:
        """Checkpoints written so far: a time-limited run that saved one more made progress (not a failure)."""
        return sum(os.path.isfile(p.get_path()) for p in self.out_checkpoints.values())

    def _frames_input(self) -> FramesInput:
        """Dimension and rate of stored encoder outputs, when the training data are such (see ``is_frames_file``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot train on stored encoder outputs")

    def _training_params(self, model_config: Dict, vocab: int) -> Dict:
        """The RETURNN settings for this job's data, options and device."""
        train, dev = [p.get_path() for p in self.train_data], [p.get_path() for p in self.dev_data]
        frames = self._frames_input() if any(is_frames_file(p) for p in train + dev) else None
        params = training_params(model_config, train, dev, self.spm_model.get_path(), vocab,
                                 os.path.join(self.out_model_dir.get_path(), "epoch"),
                                 self.out_learning_rates.get_path(), self.options, frames=frames)
        if self.run_gpus():
            params["device"] = "cuda"
        else:  # options.bf16 means bfloat16 autocast on a GPU; the CPU trains in float32
            params.pop("torch_amp", None)
        if self.run_processes() > 1:  # one process per GPU (or CPU share), started by torch.distributed.run (run())
            # DistributedDataParallel, gradients all-reduced each step; NCCL between GPUs, gloo on the CPU. The
            # models' buffers are constants (mel filterbank, window): no broadcast, which RETURNN's rank-0-only dev
            # evaluation would otherwise mismatch with the other ranks' wait (a collective mismatch, abort). Each
            # process reads its own shard of the data, so an epoch is one pass over it whatever the process count
            params["torch_distributed"] = {"options": {"broadcast_buffers": False}, "dataset_distribution": "shard"}
            if not self.run_gpus():
                params["torch_distributed"]["backend"] = "gloo"
        return params

    def _write_returnn_config(self, params: Dict, imports: Sequence[str]) -> None:
        scheduled = (LearningRateSchedule.ONE_CYCLE, LearningRateSchedule.PIECEWISE_LINEAR)
        extra = SCHEDULED_LR_CODE if self.options.schedule in scheduled else ""
        if self.options.torch_threads:
            extra += f"\nimport torch\ntorch.set_num_threads({int(self.options.torch_threads)})\n"
        write_config(self.out_returnn_config.get_path(), params, imports=imports, extra_code=extra)

    def run_gpus(self) -> int:
        """GPUs of the ``run`` task now (after ``update_rqmt``): the device and the number of DDP processes."""
        return int(self.current_rqmt("run").get("gpu", 0) or 0)

    def run_processes(self) -> int:
        """Data-parallel training processes: one per GPU, or ``rqmt["processes"]`` on the CPU (gloo backend)."""
        gpus = self.run_gpus()
        return gpus if gpus > 1 else max(1, int(self.current_rqmt("run").get("processes", 1) or 1))

    def run(self):
        os.makedirs(self.out_model_dir.get_path(), exist_ok=True)
        self.create_files()  # the config follows the current resources (device, DDP), e.g. after update_rqmt
        processes = self.run_processes()
        threads = self.options.torch_threads or max(1, self.run_threads() // processes)
        run_returnn(self.out_returnn_config.get_path(), cwd=os.path.abspath("."), threads=threads, gpus=processes)
        missing = [p.get_path() for p in self.out_checkpoints.values() if not os.path.isfile(p.get_path())]
        if missing:
            raise RuntimeError(f"RETURNN finished but checkpoints are missing: {missing}")


def write_json(obj, path: str) -> None:
    """JSON file written atomically."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


class ReturnnTrainingJob(ReturnnTrainingBase):
    """Trains a Conformer CTC or AED model with ``python -m returnn`` (PyTorch backend) on OggZip data.

    Resumable: a killed run continues from its last checkpoint. Outputs one checkpoint per epoch. With
    ``init_checkpoint`` the parameters under ``init_prefixes`` (default: the encoder) start from another trained
    model, e.g. the AED's encoder from the CTC model (RETURNN's ``preload_from_files``, first epoch only).
    """

    __sis_hash_exclude__ = {"init_checkpoint": None, "init_prefixes": ("encoder.",), "init_mapping": None}

    def __init__(
        self,
        model_config: Union[CtcModelConfig, AedModelConfig],
        train_data: Union[tk.Path, Sequence[tk.Path]],
        dev_data: Union[tk.Path, Sequence[tk.Path]],
        spm_model: tk.Path,
        *,
        options: TrainingOptions = TrainingOptions(),
        cpu: int = 2,
        mem: int = 8,
        time: float = 24,
        gpu: int = 0,
        init_checkpoint: Optional[tk.Path] = None,
        init_prefixes: Sequence[str] = ("encoder.",),
        init_mapping: Optional[Dict[str, str]] = None,
    ):
        """
        :param model_config: CtcModelConfig or AedModelConfig (vocab_size 0: from ``spm_model``)
        :param train_data: OggZip file(s) from :class:`llmasr.data.returnn_data.PackOggZipJob`
        :param dev_data: OggZip file(s) for the dev scores (checkpoint selection, learning-rate control)
        :param spm_model: SentencePiece model of the targets
        :param options: batching, optimiser and learning-rate schedule
        :param cpu: cores (torch threads); :param mem: GiB; :param time: hours; :param gpu: GPUs (device "cuda";
            more than one: DDP through torch.distributed.run)
        :param init_checkpoint: checkpoint of another model to start from (None: random initialisation)
        :param init_prefixes: names of the parameters taken from ``init_checkpoint`` start with one of these
        :param init_mapping: further parameters taken from ``init_checkpoint`` under another name (this model's name
            -> the checkpoint's), e.g. the AED's last aux CTC layer from the CTC model's output layer
        """
        if not isinstance(model_config, (CtcModelConfig, AedModelConfig)):
            raise TypeError(f"model_config must be CtcModelConfig or AedModelConfig, got {type(model_config).__name__}")
        if init_checkpoint is not None and not init_prefixes:
            raise ValueError("init_prefixes must name at least one parameter prefix when init_checkpoint is given")
        self.model_config = model_config
        self.init_checkpoint = init_checkpoint
        self.init_prefixes = tuple(init_prefixes)
        self.init_mapping = dict(init_mapping) if init_mapping else None
        self._init_training(train_data, dev_data, spm_model, options, cpu=cpu, mem=mem, time=time, gpu=gpu)
        self.out_model_config = self.output_path("model_config.json")

    def _frames_input(self) -> FramesInput:
        if not isinstance(self.model_config, AedModelConfig) or self.init_checkpoint is None:
            raise ValueError("training on stored encoder outputs (.hdf) needs an AedModelConfig and init_checkpoint "
                             "(the frozen encoder that made them, so that the checkpoints hold the whole model)")
        return encoder_frames_input(self.model_config.encoder)

    def create_files(self):
        vocab = spm_vocab_size(self.spm_model.get_path())
        model_dict = resolve_model_config(self.model_config, vocab)
        params = self._training_params(model_dict, vocab)
        if self.init_checkpoint is not None:
            params["preload_from_files"] = {"init": preload_options(self.init_checkpoint.get_path(),
                                                                    self.init_prefixes, self.init_mapping)}
        self._write_returnn_config(params, TRAIN_IMPORTS)
        write_json(model_dict, self.out_model_config.get_path())


def encoder_frames_input(encoder: ConformerEncoderConfig) -> FramesInput:
    """Stored outputs of ``encoder``: its width, and feature frames per second over its time downsampling."""
    downsampling = 1
    for factor in encoder.downsampling:
        downsampling *= int(factor)
    return FramesInput(dim=encoder.dim, frames_per_second=1.0 / encoder.logmel.hop_size / downsampling)


def preload_options(checkpoint: str, prefixes: Sequence[str], mapping: Optional[Dict[str, str]] = None) -> Dict:
    """RETURNN ``preload_from_files`` entry that initialises (first epoch only) the parameters of ``checkpoint``
    whose names start with one of ``prefixes``, and those of ``mapping`` (new name -> name in the checkpoint); the
    other parameters of the checkpoint are ignored."""
    from llmasr.models.checkpoint import read_state_dict

    mapping = dict(mapping or {})
    names = list(read_state_dict(checkpoint, what="init checkpoint", mmap=True))
    unknown = sorted(set(mapping.values()) - set(names))
    if unknown:
        raise ValueError(f"init_mapping names {unknown} that init checkpoint {checkpoint} does not have")
    taken = [n for n in names if n.startswith(tuple(prefixes))]
    if not taken:
        raise ValueError(f"init checkpoint {checkpoint} has no parameter starting with {list(prefixes)} "
                         f"(it has e.g. {names[:5]})")
    opts = {"filename": checkpoint, "init_for_train": True, "ignore_missing": True,
            "ignore_params": [n for n in names if n not in taken and n not in mapping.values()]}
    if mapping:
        opts["var_name_mapping"] = mapping
    return opts


class _EpochData(dict):
    def __init__(self, learningRate=None, error=None, **kwargs):
        super().__init__(learning_rate=learningRate, error=error or {}, **kwargs)


def read_learning_rates(path: str) -> Dict[int, Dict]:
    """Parses RETURNN's learning-rate file: ``{epoch: {"learning_rate": float, "error": {name: score}}}``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"learning-rate file {path} does not exist")
    with open(path) as f:
        text = f.read()
    try:
        data = eval(text, {"EpochData": _EpochData, "inf": math.inf, "nan": math.nan})  # RETURNN writes Python literals
    except Exception as exc:
        raise ValueError(f"{path}: cannot parse the learning-rate file: {exc}") from exc
    return {int(k): v for k, v in data.items()}


def best_epoch(lr_data: Dict[int, Dict], key: str, epochs: Optional[Sequence[int]] = None) -> int:
    """Epoch with the lowest score ``key`` (e.g. ``dev_loss_ctc``) among ``epochs`` (default: all scored)."""
    scored = {e: d["error"][key] for e, d in lr_data.items() if key in d["error"] and (epochs is None or e in epochs)}
    if not scored:
        keys = sorted({k for d in lr_data.values() for k in d["error"]})
        raise ValueError(f"no epoch has the score {key!r} (scores present: {keys})")
    return min(scored, key=lambda e: (scored[e], -e))


class GetBestCheckpointJob(ResourceJob):
    """Picks the checkpoint with the best dev score of a training (``out_checkpoint`` is a copy/link of it)."""

    def __init__(self, training: ReturnnTrainingJob, *, score_key: str = "dev_loss_ctc"):
        """
        :param training: the training job
        :param score_key: score in the learning-rate file, e.g. ``dev_loss_ctc`` (CTC) or ``dev_loss_ce`` (AED)
        """
        self.learning_rates = training.out_learning_rates
        self.checkpoints = training.out_checkpoints
        self.score_key = score_key
        self.out_checkpoint = self.output_path("checkpoint.pt")
        self.out_epoch = self.output_var("epoch")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        data = read_learning_rates(self.learning_rates.get_path())
        epoch = best_epoch(data, self.score_key, epochs=list(self.checkpoints))
        src = self.checkpoints[epoch].get_path()
        tmp = self.out_checkpoint.get_path() + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.abspath(src), tmp)
        os.replace(tmp, self.out_checkpoint.get_path())
        self.out_epoch.set(epoch)
        logging.info("best epoch by %s: %d", self.score_key, epoch)


def average_checkpoints(paths: Sequence[str], out_path: str) -> None:
    """Averages the model parameters of RETURNN torch checkpoints (floats averaged, others from the last)."""
    import torch

    if not paths:
        raise ValueError("average_checkpoints: no checkpoints given")
    avg, last = None, None
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"checkpoint {p} does not exist")
        last = torch.load(p, map_location="cpu", weights_only=False)
        state = last["model"]
        if avg is None:
            avg = {k: v.double().clone() if v.is_floating_point() else v for k, v in state.items()}
        else:
            if set(state) != set(avg):
                raise ValueError(f"checkpoint {p} has different parameters than {paths[0]}")
            for k, v in state.items():
                avg[k] = avg[k] + v.double() if v.is_floating_point() else v
    n = len(paths)
    model = {k: (v / n).to(last["model"][k].dtype) if last["model"][k].is_floating_point() else v
             for k, v in avg.items()}
    out = {k: v for k, v in last.items() if k not in ("model", "optimizer")}
    out["model"] = model
    torch.save(out, out_path + ".tmp")
    os.replace(out_path + ".tmp", out_path)


class AverageCheckpointsJob(ResourceJob):
    """Averages the ``num_best`` checkpoints with the best dev score (or explicitly given epochs)."""

    def __init__(self, training: ReturnnTrainingJob, *, num_best: int = 4, score_key: str = "dev_loss_ctc",
                 epochs: Optional[Sequence[int]] = None):
        """
        :param training: the training job
        :param num_best: how many of the best epochs to average
        :param score_key: dev score to rank by
        :param epochs: average these epochs instead (ignores num_best/score_key)
        """
        if num_best < 1:
            raise ValueError(f"num_best must be >= 1, got {num_best}")
        self.learning_rates = training.out_learning_rates
        self.checkpoints = training.out_checkpoints
        self.num_best = num_best
        self.score_key = score_key
        self.epochs = list(epochs) if epochs else None
        self.out_checkpoint = self.output_path("averaged.pt")
        self.out_epochs = self.output_var("epochs")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        if self.epochs:
            bad = [e for e in self.epochs if e not in self.checkpoints]
            if bad:
                raise ValueError(f"epochs {bad} not among the training's checkpoints {sorted(self.checkpoints)}")
            epochs = self.epochs
        else:
            data = read_learning_rates(self.learning_rates.get_path())
            scored = [e for e in self.checkpoints if self.score_key in data.get(e, {}).get("error", {})]
            if not scored:
                raise ValueError(f"no epoch has the score {self.score_key!r}")
            epochs = sorted(scored, key=lambda e: (data[e]["error"][self.score_key], -e))[: self.num_best]
        average_checkpoints([self.checkpoints[e].get_path() for e in sorted(epochs)], self.out_checkpoint.get_path())
        self.out_epochs.set(sorted(epochs))
