"""Names of outputs and aliases that a researcher can type: lower-case letters, digits and ``_ . = -``, levels split
by ``/``, shaped ``<exp>/<system>/<set>/<what>`` for results (``toy/ctc-delayed-own-units-k=5/test/wer.json``) and
``<exp>/<stage>/.../<what>`` for the stages before them (``toy/am/ctc/train``). A bad name stops the graph build."""
from __future__ import annotations

import re

from sisyphus import Job, tk

NAME_PATTERN = re.compile(r"^[a-z0-9_./=-]+$")


def checked_name(name: str) -> str:
    """``name`` if it matches :data:`NAME_PATTERN` with non-empty levels, else a ValueError naming it."""
    if not NAME_PATTERN.match(name) or any(level in ("", ".", "..") for level in name.split("/")):
        raise ValueError(f"output or alias name {name!r}: use lower-case letters, digits and '_.=-' in non-empty "
                         f"levels split by '/'")
    return name


def alias(job: Job, name: str) -> Job:
    """Adds the alias ``alias/<name>`` to ``job`` after checking the name; returns the job."""
    job.add_alias(checked_name(name))
    return job


def output(name: str, path: tk.Path) -> None:
    """Registers ``path`` as the output ``output/<name>`` after checking the name."""
    tk.register_output(checked_name(name), path)
