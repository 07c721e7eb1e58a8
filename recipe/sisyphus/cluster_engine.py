"""Shared parts of the batch-system engines (Slurm, SGE): resource conversion, command runner, state cache."""
from __future__ import annotations

import logging
import math
import shlex
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sisyphus.global_settings as gs
from sisyphus.engine import EngineBase


def run_command(cmd: Sequence[str], *, input: Optional[str] = None, timeout: float = 60, retries: int = 3,
                check: bool = True) -> Tuple[int, str, str]:
    """Runs a scheduler command; retries transient failures (scheduler busy) before giving up."""
    last = (1, "", "")
    for attempt in range(retries):
        try:
            p = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            last = (124, "", f"{cmd[0]} timed out after {timeout} s")
        else:
            last = (p.returncode, p.stdout, p.stderr)
            if p.returncode == 0 or not check:
                return last
        logging.warning("%s failed (%s), attempt %d/%d", " ".join(cmd[:2]), last[2].strip(), attempt + 1, retries)
        time.sleep(1 + attempt)
    if check:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {last[0]}: {last[2].strip()}")
    return last


def mem_mb(rqmt: Dict[str, Any]) -> int:
    """rqmt["mem"] is in GB (upstream convention)."""
    return max(1, int(math.ceil(float(rqmt.get("mem", 1)) * 1024)))


def time_minutes(rqmt: Dict[str, Any]) -> int:
    """rqmt["time"] is in hours (upstream convention)."""
    return max(1, int(math.ceil(float(rqmt.get("time", 1)) * 60)))


def torchrun_command(command: List[str], gpus: int, *, nnodes: int = 1, master_port: Optional[int] = None) -> List[str]:
    """Wraps ``python -m module args`` (e.g. RETURNN) into ``torchrun`` for training on ``gpus`` GPUs of a node.

    RETURNN then needs ``torch_distributed = {}`` in its config; one process per GPU.
    """
    if gpus <= 1:
        return list(command)
    if len(command) >= 3 and command[1] == "-m":
        target = ["-m", command[2]] + command[3:]
    else:
        target = command[1:] if command and command[0].endswith(("python", "python3")) else command
    cmd = [command[0], "-m", "torch.distributed.run", "--standalone" if nnodes == 1 else f"--nnodes={nnodes}",
           f"--nproc_per_node={gpus}"]
    if master_port is not None:
        cmd.append(f"--master_port={master_port}")
    return cmd + list(target)


class ClusterEngine(EngineBase):
    """Base of batch-system engines: caches the queue listing per manager loop."""

    def __init__(self, default_rqmt: Optional[Dict[str, Any]] = None, gateway: Optional[str] = None):
        self.default_rqmt = dict(default_rqmt or {})
        self.gateway = gateway  # run scheduler commands via ssh on this host
        self._queue_cache: Optional[Dict[Tuple[str, int], str]] = None
        self._final_cache: Optional[Dict[Tuple[str, int], str]] = None

    def command(self, cmd: List[str]) -> List[str]:
        if self.gateway:
            return ["ssh", "-x", self.gateway, " ".join(shlex.quote(c) for c in cmd)]
        return cmd

    def get_default_rqmt(self, task: Any) -> Dict[str, Any]:
        return dict(self.default_rqmt)

    def reset_cache(self) -> None:
        self._queue_cache = None
        self._final_cache = None

    # subclasses: queue listing {(job name, task id): engine state}, and final states of ended jobs
    def list_queue(self) -> Dict[Tuple[str, int], str]:
        raise NotImplementedError

    def list_final(self) -> Dict[Tuple[str, int], str]:
        return {}

    def task_state(self, task: Any, task_id: int) -> str:
        if self._queue_cache is None:
            self._queue_cache = self.list_queue()
        key = (self.job_name(task), task_id)
        state = self._queue_cache.get(key)
        if state is not None:
            return state
        if not task.submit_log():
            return gs.STATE_UNKNOWN
        if self._final_cache is None:
            self._final_cache = self.list_final()
        return self._final_cache.get(key, gs.STATE_UNKNOWN)
