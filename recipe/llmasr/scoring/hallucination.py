"""Hallucination statistics of hypotheses: insertions, overlong outputs, repeated n-gram loops, empty outputs."""
from __future__ import annotations

from typing import Dict, List


def max_ngram_repeats(words: List[str], n: int) -> int:
    """Longest run of the same n-gram repeated back to back (1 = no loop)."""
    best = 1 if len(words) >= n else 0
    for start in range(n):
        run, prev = 0, None
        for i in range(start, len(words) - n + 1, n):
            g = tuple(words[i:i + n])
            run = run + 1 if g == prev else 1
            prev = g
            best = max(best, run)
    return best


def hallucination_stats(per_utterance: List[dict], *, long_ratio: float = 1.5, loop_min_repeats: int = 3,
                        max_n: int = 4) -> Dict[str, float]:
    """From :func:`llmasr.scoring.wer.compute_wer`'s per-utterance entries (normalised "ref"/"hyp", "ins"):
    insertion rate (% of reference words), share (%) of hypotheses longer than ``long_ratio`` * reference,
    share with an n-gram (n <= max_n) repeated >= ``loop_min_repeats`` times in a row, share of empty outputs
    for non-empty references."""
    n = max(len(per_utterance), 1)
    ref_words = sum(len(p["ref"].split()) for p in per_utterance)
    long = loops = empty = 0
    for p in per_utterance:
        r, h = p["ref"].split(), p["hyp"].split()
        if len(h) > long_ratio * max(len(r), 1):
            long += 1
        if any(max_ngram_repeats(h, k) >= loop_min_repeats for k in range(1, max_n + 1)):
            loops += 1
        if r and not h:
            empty += 1
    return {"insertion_rate": 100.0 * sum(p["ins"] for p in per_utterance) / max(ref_words, 1),
            "long_share": 100.0 * long / n, "loop_share": 100.0 * loops / n, "empty_share": 100.0 * empty / n}
