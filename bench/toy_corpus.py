"""Benchmark: time to synthesise 1000 toy-corpus utterances with espeak-ng + sox (target < 60 s on 2 cores).

Usage: python bench/toy_corpus.py [--num 1000] [--workers 2]
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

from llmasr.data.toy import plan_corpus, read_verses, synthesize_corpus  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    verses = read_verses()
    plan, _ = plan_corpus(verses, num_train=args.num, num_dev=0, num_test=0, min_words=3, max_words=15, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        entries = synthesize_corpus(plan["train"], tmp, workers=args.workers)
        elapsed = time.time() - start
    audio = sum(e.duration for e in entries)
    print(f"toy corpus: {len(entries)} utterances ({audio / 3600:.2f} h audio) in {elapsed:.1f} s "
          f"with {args.workers} workers ({1000 * elapsed / len(entries):.1f} ms/utterance)")


if __name__ == "__main__":
    main()
