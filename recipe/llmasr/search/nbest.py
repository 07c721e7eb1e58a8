"""N-best lists, the format every search writes and scoring, tuning and rescoring read.

A gzipped JSON object ``{seq_id: [hyp, ...]}`` with hypotheses best first; a hypothesis is
``{"text": str, "labels": [int], "scores": {"am": float, "ctc": ..., "lm": ..., "prior": ..., "length": int},
"score": float}``.
"""
from __future__ import annotations

import gzip
import json
import os
from typing import Dict, List

NBest = Dict[str, List[dict]]


def write_nbest(nbest: NBest, path: str) -> None:
    """Writes atomically (temp file + rename); checks each hypothesis has a text (``score`` may be missing
    where only per-source scores are known, e.g. before scale tuning)."""
    for seq_id, hyps in nbest.items():
        for h in hyps:
            if not isinstance(h, dict) or not isinstance(h.get("text"), str):
                raise ValueError(f"{path}: hypothesis of {seq_id!r} has no 'text': {h}")
    tmp = path + ".tmp"
    with gzip.open(tmp, "wt", encoding="utf-8") if path.endswith(".gz") else open(tmp, "w", encoding="utf-8") as f:
        json.dump(nbest, f, ensure_ascii=False)
    os.replace(tmp, path)


def read_nbest(path: str) -> NBest:
    """Reads an N-best file (gzipped or plain JSON); errors name the file."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not an N-best file: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of seq_id -> hypotheses")
    return data


def best_hypotheses(nbest: NBest) -> Dict[str, str]:
    """The first (best) hypothesis text per sequence; empty text for a sequence without hypotheses."""
    return {seq_id: (hyps[0]["text"] if hyps else "") for seq_id, hyps in nbest.items()}


def am_score(hyp: dict, am_key: str, seq_id: str) -> float:
    """The acoustic model's score of a hypothesis, ``scores[am_key]`` ("ctc" in the N-best of a CTC search, "am" in
    those of the AED and speech-LLM searches); an entry without that score is an error, never another score."""
    scores = hyp.get("scores", {})
    if am_key not in scores:
        raise ValueError(f"N-best entry of {seq_id!r} has no {am_key!r} score (its scores: {sorted(scores)}); "
                         f"am_key names the acoustic model's score")
    return float(scores[am_key])


def hypothesis_length(hyp: dict) -> int:
    """The length the length reward counts: ``scores["length"]``, else the number of labels, else words."""
    scores = hyp.get("scores", {})
    if "length" in scores:
        return int(scores["length"])
    if hyp.get("labels") is not None:
        return len(hyp["labels"])
    return len(hyp.get("text", "").split())
