"""Base class of the corpus jobs that spread their audio work over ``cpu`` worker processes."""
from __future__ import annotations

from typing import Any, Dict

from sisyphus import Task

from llmasr.resources import ResourceJob


class ParallelCorpusJob(ResourceJob):
    """One ``run`` task with ``self.rqmt``; the number of worker processes (``cpu``) does not change the output and,
    as every resource, stays out of the hash (:class:`llmasr.resources.ResourceJob`)."""

    rqmt: Dict[str, Any]

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)
