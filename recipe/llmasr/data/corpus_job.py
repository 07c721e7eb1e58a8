"""Base class of the corpus jobs that spread their audio work over ``cpu`` worker processes."""
from __future__ import annotations

from typing import Any, Dict

from sisyphus import Job, Task


class ParallelCorpusJob(Job):
    """One ``run`` task with ``self.rqmt``; the number of worker processes (``cpu``) does not change the output,
    so it is left out of the hash (the same corpus built with more processes is the same job)."""

    rqmt: Dict[str, Any]

    @classmethod
    def hash(cls, parsed_args: Dict[str, Any]) -> str:
        return super().hash({k: v for k, v in parsed_args.items() if k != "cpu"})

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)
