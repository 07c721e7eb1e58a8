"""Pre-trained models from the Hugging Face hub, downloaded once as a job: every LLM job reads the job's output folder,
so compute nodes need no hub access and a pinned revision makes the experiment repeatable."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Optional, Sequence

from sisyphus import Task

from llmasr.resources import ResourceJob

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")
HUB_SOURCE_FILE = "hub_source.json"


class DownloadHFModelJob(ResourceJob):
    """Downloads a hub model (weights, config and tokenizer) at a pinned revision into ``out_model``.

    A mini task: it runs where the manager runs (the "short" engine, a host with network access). The hub cache
    (``HF_HUB_CACHE``) and offline mode (``HF_HUB_OFFLINE=1``: from the cache only) are honoured.
    """

    def __init__(self, repo_id: str, *, revision: str, allow_patterns: Optional[Sequence[str]] = None):
        """
        :param repo_id: hub id, e.g. "Qwen/Qwen2-0.5B"
        :param revision: the commit hash (40 hex digits) to download; a branch or tag name is accepted but moves
            with the hub (the commit it resolved to is written to ``out_model/hub_source.json``)
        :param allow_patterns: only files matching these glob patterns (None: all files of the revision)
        """
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise ValueError(f"DownloadHFModelJob: repo_id must be 'owner/name', got {repo_id!r}")
        if not revision:
            raise ValueError(f"DownloadHFModelJob({repo_id}): revision must be given (a commit hash)")
        if not COMMIT_HASH.fullmatch(revision):
            logging.warning("DownloadHFModelJob(%s): revision %r is not a commit hash; pin one for repeatable runs",
                            repo_id, revision)
        self.repo_id = repo_id
        self.revision = revision
        self.allow_patterns = list(allow_patterns) if allow_patterns is not None else None
        self.out_model = self.output_path("model", directory=True)

    def tasks(self):
        yield Task("run", mini_task=True, rqmt={"cpu": 1, "mem": 2, "time": 4})

    def run(self):
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        snapshot = snapshot_download(self.repo_id, revision=self.revision, allow_patterns=self.allow_patterns,
                                     cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline)
        copy_snapshot(snapshot, self.out_model.get_path())
        commit = os.path.basename(os.path.normpath(snapshot))
        source = {"repo_id": self.repo_id, "revision": self.revision, "commit": commit}
        with open(os.path.join(self.out_model.get_path(), HUB_SOURCE_FILE), "w") as f:
            json.dump(source, f, indent=1)
        logging.info("downloaded %s", source)


def copy_snapshot(snapshot: str, out_dir: str) -> None:
    """Copies a hub snapshot (symlinks into the cache's blobs resolved) to ``out_dir`` through a temporary folder;
    raises if the model has no config or no tokenizer."""
    names = set(os.listdir(snapshot))
    if "config.json" not in names:
        raise FileNotFoundError(f"hub snapshot {snapshot} has no config.json (files: {sorted(names)})")
    if not names & {"tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json"}:
        raise FileNotFoundError(f"hub snapshot {snapshot} has no tokenizer files (files: {sorted(names)})")
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(snapshot, tmp, symlinks=False, ignore=shutil.ignore_patterns(".cache", ".gitattributes"))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
