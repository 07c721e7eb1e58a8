"""LLM forward calls and time per utterance: label-wise vs delayed fusion (k = 1, 5, 20, end) and cached vs
uncached LLM scoring, on random peaky CTC posteriors and a random-weight Qwen2 LLM.

    .venv/bin/python bench/fusion_speed.py [--utts 5] [--frames 100] [--beam 8] [--device cuda]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

import torch  # noqa: E402

from llmasr.models.llm import TinyLLMConfig, tiny_random_qwen2  # noqa: E402
from llmasr.search.delayed_fusion import SameUnitsConverter, SearchStats, delayed_fusion_search  # noqa: E402
from llmasr.search.labelwise_fusion import ctc_labelwise_fusion_search  # noqa: E402
from llmasr.search.llm_scorer import LLMScorer  # noqa: E402


def peaky_ctc(frames: int, vocab: int, seed: int) -> torch.Tensor:
    """[T, V] log-probs: mostly blank (id 0), a label peak on ~30% of frames, some confusion."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, vocab, generator=g)
    peaks = torch.randint(1, vocab, (frames,), generator=g)
    is_label = torch.rand(frames, generator=g) < 0.3
    logits[torch.arange(frames), torch.where(is_label, peaks, torch.zeros_like(peaks))] += 4.0
    return logits.log_softmax(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=5)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # LLM over the AM units (label i -> token i + 3; tokens 1/2 = BOS/EOS)
    cfg = TinyLLMConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=1024)
    model = tiny_random_qwen2(args.vocab + 3, bos_id=1, eos_id=2, cfg=cfg, seed=0).eval().to(args.device)
    l2t = [-1] + [i + 3 for i in range(1, args.vocab)]
    utts = [peaky_ctc(args.frames, args.vocab, s) for s in range(args.utts)]
    common = dict(blank=0, beam_size=args.beam, lm_scale=0.5, nbest=1)

    def run(name, fn):
        stats = SearchStats()
        t0 = time.perf_counter()
        for u in utts:
            fn(u, stats)
        dt = (time.perf_counter() - t0) / len(utts)
        print(f"{name:34s} {stats.llm_forward_calls / len(utts):10.1f} {stats.llm_forward_tokens / len(utts):12.1f}"
              f" {1000 * dt:10.1f}")

    print(f"{args.utts} utterances x {args.frames} frames, beam {args.beam}, vocab {args.vocab}, "
          f"LLM {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, {args.threads} thread(s)")
    print(f"{'search':34s} {'LLM calls':>10s} {'LLM tokens':>12s} {'ms/utt':>10s}")
    for cached in (True, False):
        def lw(u, stats, cached=cached):
            scorer = LLMScorer(model, bos_id=1, eos_id=2, label_to_token=torch.tensor(l2t), use_cache=cached)
            ctc_labelwise_fusion_search(u, llm_scorer=scorer, stats=stats, **common)

        run(f"label-wise ({'cached' if cached else 'uncached'})", lw)
    for delay in (1, 5, 20, None):
        for cached in ((True, False) if delay == 1 else (True,)):
            def dl(u, stats, delay=delay, cached=cached):
                scorer = LLMScorer(model, bos_id=1, eos_id=2, use_cache=cached)
                delayed_fusion_search(u, llm_scorer=scorer, converter=SameUnitsConverter(l2t), delay=delay,
                                      stats=stats, **common)

            label = f"k={delay}" if delay else "only at the end"
            run(f"delayed {label} ({'cached' if cached else 'uncached'})", dl)
    def batched(u, stats):  # all utterances in one search: one LLM call per frame serves all of them
        if u is not utts[0]:
            return
        x = torch.stack(utts)
        scorer = LLMScorer(model, bos_id=1, eos_id=2)
        delayed_fusion_search(x, llm_scorer=scorer, converter=SameUnitsConverter(l2t), delay=5, stats=stats,
                              **common)

    run("delayed k=5, utts batched", batched)
    run("CTC only", lambda u, stats: delayed_fusion_search(u, llm_scorer=None, converter=None, stats=stats,
                                                           **dict(common, lm_scale=0.0)))


if __name__ == "__main__":
    main()
