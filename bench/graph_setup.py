"""Prints how long building and hashing experiment graphs of 1k and 10k jobs takes (target: 10k < 10 s).

Usage: python bench/graph_setup.py
"""
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "recipe"), ROOT]

import sisyphus.global_settings as gs  # noqa: E402
from sisyphus import tk  # noqa: E402
from sisyphus.graph import graph  # noqa: E402
from sisyphus.job import created_jobs  # noqa: E402
from tests.engine_jobs import ConcatJob, WriteTextJob  # noqa: E402


def build(n_jobs: int) -> None:
    """A layered graph like an experiment: corpora -> per-setting jobs -> combinations, with config dicts."""
    sources = [WriteTextJob(f"corpus {i}", repeat=i % 3 + 1) for i in range(max(1, n_jobs // 10))]
    made = len(sources)
    layer = [s.out_file for s in sources]
    while made < n_jobs:
        nxt = []
        for i, p in enumerate(layer):
            if made >= n_jobs:
                break
            other = layer[(i * 7 + 3) % len(layer)]
            c = ConcatJob([p, other], run_counter=None)
            nxt.append(c.out_file)
            made += 1
        layer = nxt or layer
    for i, p in enumerate(layer[:100]):
        tk.register_output(f"bench/{i}", p)


def main() -> None:
    gs.WORK_DIR = tempfile.mkdtemp()
    for n in (1000, 10000):
        created_jobs.clear()
        graph.clear()
        t0 = time.perf_counter()
        build(n)
        t1 = time.perf_counter()
        jobs = graph.jobs()
        t2 = time.perf_counter()
        print(f"{n:6d} jobs requested, {len(created_jobs):6d} created: build+hash {t1 - t0:6.2f} s, "
              f"graph traversal ({len(jobs)} needed) {t2 - t1:6.2f} s, total {t2 - t0:6.2f} s")


if __name__ == "__main__":
    main()
