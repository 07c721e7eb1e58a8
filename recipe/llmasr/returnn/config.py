"""Writing RETURNN configs (PyTorch backend) for AM training and forward jobs.

A config is a Python file: the recipe folder goes on ``sys.path`` so that the model and step code is imported from
:mod:`llmasr.returnn.steps`; all settings are plain literals.
"""
from __future__ import annotations

import enum
import os
import pprint
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

RECIPE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LearningRateSchedule(enum.Enum):
    """How the learning rate moves over training."""

    CONSTANT = "constant"
    ONE_CYCLE = "one_cycle"  # OCLR: linear warm-up to the peak, linear decay, then a final decay (per step)
    NEWBOB = "newbob"  # RETURNN's dev-score-controlled decay (learning_rate_control = "newbob_multi_epoch")


@dataclass(frozen=True)
class TrainingOptions:
    """Batching, optimiser and schedule of an AM training (all part of the job hash)."""

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
    total_steps: int = 0  # OCLR: training steps (batches) of the whole training (0: follow the epochs' progress)
    weight_decay: float = 0.01
    grad_clip_norm: float = 5.0
    max_audio_seconds: float = 30.0
    random_seed: int = 42
    torch_threads: int = 0  # 0: leave it to torch
    num_workers: int = 0  # torch DataLoader worker processes (0: load in the training process)

    def check(self) -> None:
        if not isinstance(self.schedule, LearningRateSchedule):
            raise ValueError(f"TrainingOptions.schedule must be a LearningRateSchedule, got {self.schedule!r}")
        for name in ("num_epochs", "partition_epoch", "max_seqs", "accum_grad"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainingOptions.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.warmup_fraction < 0.5:
            raise ValueError(f"TrainingOptions.warmup_fraction must be in (0, 0.5), got {self.warmup_fraction}")


def one_cycle_lr(progress: float, peak: float, initial: float, final: float, warmup_fraction: float = 0.45) -> float:
    """One-cycle learning rate at ``progress`` (share of the whole training done, 0..1): initial -> peak -> initial
    (each ``warmup_fraction`` of the training), then down to ``final`` over the rest."""
    progress = min(1.0, max(0.0, progress))
    if progress < warmup_fraction:
        return initial + (peak - initial) * progress / warmup_fraction
    if progress < 2 * warmup_fraction:
        return peak - (peak - initial) * (progress - warmup_fraction) / warmup_fraction
    rest = max(1e-12, 1.0 - 2 * warmup_fraction)
    return max(final, initial - (initial - final) * (progress - 2 * warmup_fraction) / rest)


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
                    vocab_size: int, model_prefix: str, lr_file: str, opts: TrainingOptions) -> Dict[str, Any]:
    """The settings of a RETURNN training config."""
    opts.check()
    params: Dict[str, Any] = {
        "backend": "torch",
        "task": "train",
        "device": "cpu",
        "use_tensorflow": False,
        "model_config": model_config,
        "extern_data": {"data": {"dim": 1, "dtype": "float32"},
                        "classes": {"dim": vocab_size, "sparse": True, "dtype": "int32"}},
        "train": ogg_zip_dataset(train_zips, spm_model, partition_epoch=opts.partition_epoch, train=True),
        "dev": ogg_zip_dataset(dev_zips, spm_model, train=False),
        "batching": "laplace:.100",
        "batch_size": {"data": int(opts.batch_size_seconds * 16000), "classes": 10 ** 9},
        "max_seqs": opts.max_seqs,
        "max_seq_length": {"data": int(opts.max_audio_seconds * 16000)},
        "accum_grad_multiple_step": opts.accum_grad,
        "optimizer": {"class": "adamw", "epsilon": 1e-8, "weight_decay": opts.weight_decay},
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
    if opts.schedule == LearningRateSchedule.CONSTANT:
        params["learning_rate"] = opts.learning_rate
        params["learning_rate_control"] = "constant"
    elif opts.schedule == LearningRateSchedule.NEWBOB:
        params["learning_rate"] = opts.learning_rate
        params["learning_rate_control"] = "newbob_multi_epoch"
        params["learning_rate_control_relative_error_relative_lr"] = True
        params["newbob_multi_num_epochs"] = opts.partition_epoch
    else:
        params["learning_rate"] = 1.0
        params["learning_rate_control"] = "constant"
        params["oclr_settings"] = {"total_steps": opts.total_steps,
                                   "num_epochs": opts.num_epochs, "peak": opts.learning_rate,
                                   "initial": opts.initial_learning_rate, "final": opts.final_learning_rate,
                                   "warmup_fraction": opts.warmup_fraction}
    return params


TRAIN_IMPORTS = ["from llmasr.returnn.steps import get_model, train_step"]
OCLR_CODE = """
def dynamic_learning_rate(*, global_train_step, epoch, learning_rate, epoch_continuous=None, **_kwargs):
    from llmasr.returnn.config import one_cycle_lr, training_progress
    s = oclr_settings
    progress = training_progress(epoch=epoch, epoch_continuous=epoch_continuous, global_train_step=global_train_step,
                                 num_epochs=s["num_epochs"], total_steps=s["total_steps"])
    return learning_rate * one_cycle_lr(progress, s["peak"], s["initial"], s["final"], s["warmup_fraction"])
"""
