"""Resources are not identity: constructor arguments that only say how a job runs (cores, memory, time, GPUs, device,
threads, loader workers, search batch sizes) are left out of its hash, so changing them never reruns anything.

Every job of the toolkit derives from :class:`ResourceJob` (one mechanism, as i6_core's ``hash()`` overrides). The
resources of an existing job are changed the upstream way, without a new id: ``job.update_rqmt("run", {"gpu": 1,
"time": 48})`` in a config, or the same constructor call with other resource arguments. At run time a job reads
them back with :meth:`ResourceJob.current_rqmt` / :meth:`ResourceJob.run_device` / :meth:`ResourceJob.run_threads`,
so a task moved to a GPU by ``update_rqmt`` also computes there.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, FrozenSet

from sisyphus import Job

# Constructor arguments that are resources wherever they appear (names of every job in the toolkit).
RESOURCE_ARGS: FrozenSet[str] = frozenset({
    "cpu", "mem", "time", "gpu", "device", "threads", "num_workers",
    "batch_seconds", "max_seqs", "utterances_per_batch", "batch_size",
})


class ResourceJob(Job):
    """Base of the toolkit's jobs: the arguments named in ``resource_args`` never enter the hash.

    ``resource_args`` defaults to :data:`RESOURCE_ARGS`; a job whose argument of such a name changes its result
    (none does today) would narrow it for its class.
    """

    resource_args: ClassVar[FrozenSet[str]] = RESOURCE_ARGS

    @classmethod
    def hash(cls, parsed_args: Dict[str, Any]) -> str:
        """The upstream hash of the arguments without the resources."""
        return super().hash({k: v for k, v in parsed_args.items() if k not in cls.resource_args})

    def current_rqmt(self, task_name: str = "run") -> Dict[str, Any]:
        """The resources the task runs with now: its ``rqmt`` after ``update_rqmt`` / ``set_rqmt``."""
        for task in self._sis_tasks():
            if task.name() == task_name:
                return task.rqmt()
        raise KeyError(f"{self._sis_id()}: no task {task_name!r}")

    def run_device(self, task_name: str = "run") -> str:
        """``"cuda"`` where the task was given a GPU, else ``"cpu"``."""
        return "cuda" if int(self.current_rqmt(task_name).get("gpu", 0) or 0) > 0 else "cpu"

    def run_threads(self, task_name: str = "run") -> int:
        """Torch threads of the task: its cpu requirement."""
        return max(1, int(self.current_rqmt(task_name).get("cpu", 1)))

