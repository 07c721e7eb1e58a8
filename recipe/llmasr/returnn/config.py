"""Writing RETURNN configs (PyTorch backend) for AM training and forward jobs.

A config is a Python file: the recipe folder goes on ``sys.path`` so that the model and step code is imported from
:mod:`llmasr.returnn.steps`; all settings are plain literals.
"""
from __future__ import annotations

import enum
import os
import pprint
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional, Sequence, Tuple

from llmasr.hash_defaults import HashDefaults

RECIPE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LearningRateSchedule(enum.Enum):
    """How the learning rate moves over training."""

    CONSTANT = "constant"
    ONE_CYCLE = "one_cycle"  # OCLR: linear warm-up to the peak, linear decay, then a final decay
    NEWBOB = "newbob"  # RETURNN's dev-score-controlled decay (learning_rate_control = "newbob_multi_epoch")
    PIECEWISE_LINEAR = "piecewise_linear"  # linear between (share of training, rate) points: lr_points


@dataclass(frozen=True)
class TrainingOptions(HashDefaults):
    """Batching, optimiser and schedule of an AM training (part of the job hash, except the resources
    ``torch_threads`` and ``num_workers``; fields added later are left out of it at their defaults)."""

    num_epochs: int = 10
    partition_epoch: int = 1
    batch_size_seconds: float = 200.0  # summed raw audio per batch
    max_seqs: int = 64
    accum_grad: int = 1
    learning_rate: float = 1e-3  # peak (OCLR) or constant rate
    initial_learning_rate: float = 1e-5
    final_learning_rate: float = 1e-6
    schedule: LearningRateSchedule = LearningRateSchedule.ONE_CYCLE
    warmup_fraction: float = 0.45  # OCLR: share of steps to reach the peak (and as many to come down)
    total_steps: int = 0  # OCLR/piecewise: training steps (batches) of the whole training (0: follow the epochs)
    weight_decay: float = 0.01
    grad_clip_norm: float = 5.0
    max_audio_seconds: float = 30.0
    random_seed: int = 42
    torch_threads: int = 0  # 0: leave it to torch
    num_workers: int = 0  # torch DataLoader worker processes (0: load in the training process)
    # PIECEWISE_LINEAR: (share of the training done, learning rate) points from 0.0 to 1.0, e.g.
    # ((0.0, 1e-5), (0.1, 1e-3), (0.8, 1e-3), (1.0, 1e-6)) for warm-up, plateau and decay
    lr_points: Tuple[Tuple[float, float], ...] = ()
    bf16: bool = False  # on a GPU RETURNN's torch_amp = "bfloat16" (bfloat16 autocast); a CPU trains in float32

    _HASH_DEFAULTS: ClassVar[Dict[str, Any]] = {"lr_points": (), "bf16": False}
    _HASH_RESOURCES: ClassVar[FrozenSet[str]] = frozenset({"torch_threads", "num_workers"})

    def check(self) -> None:
        if not isinstance(self.schedule, LearningRateSchedule):
            raise ValueError(f"TrainingOptions.schedule must be a LearningRateSchedule, got {self.schedule!r}")
        for name in ("num_epochs", "partition_epoch", "max_seqs", "accum_grad"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainingOptions.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.warmup_fraction < 0.5:
            raise ValueError(f"TrainingOptions.warmup_fraction must be in (0, 0.5), got {self.warmup_fraction}")
        if self.schedule == LearningRateSchedule.PIECEWISE_LINEAR:
            check_lr_points(self.lr_points)


def one_cycle_points(peak: float, initial: float, final: float, warmup_fraction: float = 0.45
                     ) -> Tuple[Tuple[float, float], ...]:
    """The one-cycle schedule as (share of training, rate) points: initial -> peak -> initial (each
    ``warmup_fraction`` of the training), then down to ``final`` over the rest."""
    return ((0.0, initial), (warmup_fraction, peak), (2 * warmup_fraction, initial), (1.0, final))


def one_cycle_lr(progress: float, peak: float, initial: float, final: float, warmup_fraction: float = 0.45) -> float:
    """One-cycle learning rate at ``progress`` (share of the whole training done, 0..1)."""
    return piecewise_linear_lr(progress, one_cycle_points(peak, initial, final, warmup_fraction))


def check_lr_points(points: Sequence[Tuple[float, float]]) -> None:
    """Raises ValueError unless ``points`` go from share 0.0 to 1.0 with non-decreasing shares and rates >= 0."""
    shares = [float(p[0]) for p in points]
    if len(points) < 2 or shares[0] != 0.0 or shares[-1] != 1.0:
        raise ValueError(f"TrainingOptions.lr_points must start at share 0.0 and end at 1.0, got {tuple(points)}")
    if any(b < a for a, b in zip(shares, shares[1:])) or any(float(p[1]) < 0 for p in points):
        raise ValueError(f"TrainingOptions.lr_points need non-decreasing shares and rates >= 0, got {tuple(points)}")


def piecewise_linear_lr(progress: float, points: Sequence[Tuple[float, float]]) -> float:
    """Learning rate at ``progress`` (0..1), linear between the (share, rate) ``points``."""
    progress = min(1.0, max(0.0, progress))
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if progress <= x1:
            return y1 if x1 == x0 else y0 + (y1 - y0) * (progress - x0) / (x1 - x0)
    return float(points[-1][1])


def training_progress(*, epoch: int, epoch_continuous: Optional[float], global_train_step: int, num_epochs: int,
                      total_steps: int = 0) -> float:
    """Share of the training done: by optimiser steps if ``total_steps`` is given, else by RETURNN's
    ``epoch_continuous`` (epochs done, with the fraction of the current epoch's data), so that a schedule ends
    with the last epoch however many batches the data makes; ``epoch - 1`` when the dataset gives no fraction."""
    if total_steps:
        return global_train_step / total_steps
    done = epoch_continuous if epoch_continuous is not None else epoch - 1
    return done / max(1, num_epochs)


def ogg_zip_dataset(zips: Sequence[str], spm_model: str, *, partition_epoch: int = 1, train: bool = True
                    ) -> Dict[str, Any]:
    """OggZipDataset opts: raw 16 kHz audio and SentencePiece targets."""
    for z in zips:
        if not os.path.isfile(z):
            raise FileNotFoundError(f"OggZip file {z} does not exist")
    d = {
        "class": "OggZipDataset",
        "path": list(zips),
        "use_cache_manager": False,
        "audio": {"features": "raw", "sample_rate": 16000, "peak_normalization": True, "preemphasis": None},
        "targets": {"class": "SentencePieces", "model_file": spm_model},
        "partition_epoch": partition_epoch,
        "seq_ordering": "laplace:.100" if train else "sorted_reverse",
    }
    return d


@dataclass(frozen=True)
class FramesInput:
    """Training data that are stored encoder outputs (HDF files of :class:`llmasr.returnn.forward.DumpEncoderFramesJob`)
    rather than audio: their feature dimension and frames per second (to turn batch seconds into frames)."""

    dim: int
    frames_per_second: float


def is_frames_file(path: str) -> bool:
    """Stored encoder outputs are HDF files; audio comes as OggZip."""
    return path.endswith(".hdf")


def frames_dataset(files: Sequence[str], *, partition_epoch: int = 1, train: bool = True) -> Dict[str, Any]:
    """HDFDataset opts over stored encoder outputs (``data`` [T, D]) and their targets (``classes``).

    The cache stays off (``cache_byte_size=0``): with it, HDFDataset fills its target buffer (initialised to -1) in
    a background thread while the training reads it, which gave batches of -1 labels and h5py crashes."""
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"encoder-output file {f} does not exist")
    return {"class": "HDFDataset", "files": list(files), "use_cache_manager": False, "cache_byte_size": 0,
            "partition_epoch": partition_epoch, "seq_ordering": "laplace:.100" if train else "sorted_reverse"}


def serialize_config(params: Dict[str, Any], *, imports: Sequence[str] = (), extra_code: str = "") -> str:
    """RETURNN config text: ``#!rnn.py`` header, sys.path setup, the literal ``params``, then ``imports``."""
    lines = ["#!rnn.py", "import os", "import sys", f"sys.path.insert(0, {RECIPE_DIR!r})", ""]
    for key in sorted(params):
        lines.append(f"{key} = {pprint.pformat(params[key], width=118, sort_dicts=True)}")
    lines.append("")
    lines.extend(imports)
    if extra_code:
        lines.append(extra_code)
    return "\n".join(lines) + "\n"


def write_config(path: str, params: Dict[str, Any], *, imports: Sequence[str] = (), extra_code: str = "") -> None:
    """Writes a RETURNN config file atomically."""
    text = serialize_config(params, imports=imports, extra_code=extra_code)
    compile(text, path, "exec")  # fail here, naming the file, rather than inside RETURNN
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def training_params(model_config: Dict[str, Any], train_zips: List[str], dev_zips: List[str], spm_model: str,
                    vocab_size: int, model_prefix: str, lr_file: str, opts: TrainingOptions,
                    frames: Optional[FramesInput] = None) -> Dict[str, Any]:
    """The settings of a RETURNN training config; with ``frames`` the data are stored encoder outputs (HDF)."""
    opts.check()
    kinds = {is_frames_file(p) for p in list(train_zips) + list(dev_zips)}
    if kinds != {frames is not None}:
        raise ValueError(f"training data {list(train_zips) + list(dev_zips)}: expected "
                         f"{'stored encoder outputs (.hdf)' if frames is not None else 'OggZip audio'} only")
    params: Dict[str, Any] = {
        "backend": "torch",
        "task": "train",
        "device": "cpu",
        "use_tensorflow": False,
        "model_config": model_config,
        "extern_data": {"data": {"dim": 1, "dtype": "float32"},
                        "classes": {"dim": vocab_size, "sparse": True, "dtype": "int32"}},
        "train": None if frames else ogg_zip_dataset(train_zips, spm_model, partition_epoch=opts.partition_epoch),
        "dev": None if frames else ogg_zip_dataset(dev_zips, spm_model, train=False),
        "batching": "laplace:.100",
        "batch_size": {"data": int(opts.batch_size_seconds * 16000), "classes": 10 ** 9},
        "max_seqs": opts.max_seqs,
        "max_seq_length": {"data": int(opts.max_audio_seconds * 16000)},
        "accum_grad_multiple_step": opts.accum_grad,
        # fused: one kernel for all parameters (CPU and GPU), about 3x faster than torch's per-tensor loop on CPU
        "optimizer": {"class": "adamw", "epsilon": 1e-8, "weight_decay": opts.weight_decay, "fused": True},
        "gradient_clip_global_norm": opts.grad_clip_norm,
        "num_epochs": opts.num_epochs,
        "model": model_prefix,
        "learning_rate_file": lr_file,
        "cleanup_old_models": False,
        "random_seed": opts.random_seed,
        "log_batch_size": True,
        "log_verbosity": 5,  # per-step losses and times
        "torch_log_memory_usage": False,
        "stop_on_nonfinite_train_score": True,
        "torch_dataloader_opts": {"num_workers": opts.num_workers},
    }
    if opts.bf16:
        params["torch_amp"] = "bfloat16"
    if frames is not None:  # lengths in frames, not samples
        fps = frames.frames_per_second
        params.update({
            "extern_data": {"data": {"dim": frames.dim, "dtype": "float32"},
                            "classes": {"dim": vocab_size, "sparse": True, "dtype": "int32"}},
            "train": frames_dataset(train_zips, partition_epoch=opts.partition_epoch, train=True),
            "dev": frames_dataset(dev_zips, train=False),
            "batch_size": {"data": max(1, int(opts.batch_size_seconds * fps)), "classes": 10 ** 9},
            "max_seq_length": {"data": max(1, int(opts.max_audio_seconds * fps))},
            "train_on_encoder_frames": True,
        })
    if opts.schedule == LearningRateSchedule.CONSTANT:
        params["learning_rate"] = opts.learning_rate
        params["learning_rate_control"] = "constant"
    elif opts.schedule == LearningRateSchedule.NEWBOB:
        params["learning_rate"] = opts.learning_rate
        params["learning_rate_control"] = "newbob_multi_epoch"
        params["learning_rate_control_relative_error_relative_lr"] = True
        params["newbob_multi_num_epochs"] = opts.partition_epoch
    else:  # ONE_CYCLE and PIECEWISE_LINEAR: both linear between points, evaluated by dynamic_learning_rate
        points = (opts.lr_points if opts.schedule == LearningRateSchedule.PIECEWISE_LINEAR else
                  one_cycle_points(opts.learning_rate, opts.initial_learning_rate, opts.final_learning_rate,
                                   opts.warmup_fraction))
        params["learning_rate"] = 1.0
        params["learning_rate_control"] = "constant"
        params["lr_schedule"] = {"points": [[float(x), float(y)] for x, y in points],
                                 "num_epochs": opts.num_epochs, "total_steps": opts.total_steps}
    return params


TRAIN_IMPORTS = ["from llmasr.returnn.steps import get_model, train_step"]
SCHEDULED_LR_CODE = """
def dynamic_learning_rate(*, global_train_step, epoch, learning_rate, epoch_continuous=None, **_kwargs):
    from llmasr.returnn.config import piecewise_linear_lr, training_progress
    s = lr_schedule
    progress = training_progress(epoch=epoch, epoch_continuous=epoch_continuous, global_train_step=global_train_step,
                                 num_epochs=s["num_epochs"], total_steps=s["total_steps"])
    return learning_rate * piecewise_linear_lr(progress, s["points"])
"""
