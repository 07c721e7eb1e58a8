"""LLM fusion speed: LLM calls and time of label-wise vs delayed fusion (k = 1, 5, 10, 20, end), cached vs uncached,
and the cost of one LLM step for long hypotheses, cached vs recomputed.

    PYTHONPATH=recipe:. python bench/fusion_speed.py [--utts 5] [--frames 100] [--min-frames 40] [--beam 8]
        [--repeats 3]
    PYTHONPATH=recipe:. python bench/fusion_speed.py --llm qwen2-0.5b --only-step [--history 60] [--rows 8]

``--llm tiny`` is a 4-layer 256-wide random Qwen2; ``qwen2-0.5b`` has Qwen2-0.5B's shape (24 layers, 896 wide,
14 heads / 2 KV heads, 4864 MLP, tied embeddings, vocabulary ``--llm-vocab``, default 151,936) with random
weights. Runs of the configurations alternate and times are medians of process CPU time (less disturbed by
other load than wall time). The step table advances ``--rows`` hypotheses of ``--history`` tokens by one token:
cached (KV cache, as the searches do) vs recomputing the whole history (``LLMScorer(use_cache=False)``). The
search table counts the LLM forward calls and tokens of each search exactly (``SearchStats``), per utterance, with
one utterance per search and with all utterances in one batch (as ``CTCFusionSearchJob`` searches them).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

import torch  # noqa: E402

from llmasr.models.llm import TinyLLMConfig, tiny_random_qwen2  # noqa: E402
from llmasr.search.ctc_fusion import SearchStats  # noqa: E402
from llmasr.search.delayed_scorer import SameUnitsConverter, delayed_fusion_search  # noqa: E402
from llmasr.search.labelwise_fusion import ctc_labelwise_fusion_search  # noqa: E402
from llmasr.search.llm_scorer import LLMScorer  # noqa: E402

LLMS = {
    "tiny": TinyLLMConfig(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=1024),
    "qwen2-0.5b": TinyLLMConfig(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                                tie_word_embeddings=True, rope_theta=1000000.0),
}


def peaky_ctc(frames: int, vocab: int, seed: int, label_rate: float = 0.3) -> torch.Tensor:
    """[T, V] log-probs: mostly blank (id 0), a label peak on ``label_rate`` of the frames, some confusion."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(frames, vocab, generator=g)
    peaks = torch.randint(1, vocab, (frames,), generator=g)
    is_label = torch.rand(frames, generator=g) < label_rate
    logits[torch.arange(frames), torch.where(is_label, peaks, torch.zeros_like(peaks))] += 4.0
    return logits.log_softmax(-1)


def alternating(fns: dict, repeats: int) -> dict:
    """name -> median CPU seconds over ``repeats`` rounds in which every function runs once, in turn."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def step_table(model, args, device) -> None:
    """One LLM step for ``rows`` hypotheses with ``history`` tokens: cached vs recomputed."""
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    hist = torch.randint(3, vocab, (args.rows, args.history), generator=g).tolist()
    nxt = torch.randint(3, vocab, (args.rows,), generator=g).tolist()
    states, scorers = {}, {}
    for cached in (True, False):
        sc = LLMScorer(model, bos_id=1, eos_id=2, use_cache=cached)
        st = sc.start(torch.arange(args.rows))
        _, st = sc.advance(st, hist)
        states[cached], scorers[cached] = st, sc
    results = {}

    def step(cached):
        sc = scorers[cached]
        st = sc.select(states[cached], torch.arange(args.rows))  # as the search: a copy per step
        results[cached] = sc.advance(st, [[t] for t in nxt])[1].next_logprobs

    med = alternating({"cached": lambda: step(True), "recomputed": lambda: step(False)}, args.repeats)
    diff = float((results[True] - results[False]).abs().max())
    print(f"one step, {args.rows} hypotheses x {args.history} tokens: cached {1000 * med['cached']:.1f} ms, "
          f"recomputed {1000 * med['recomputed']:.1f} ms, speed-up {med['recomputed'] / med['cached']:.1f}x "
          f"(max difference of the next-token log-probs {diff:.1e}), device {device}")


def search_table(model, args, device) -> None:
    """Label-wise vs delayed fusion searches: LLM calls, tokens and CPU ms per utterance (alternating, medians)."""
    l2t = [-1] + [i + 3 for i in range(1, args.vocab)]
    g = torch.Generator().manual_seed(1234)
    min_frames = args.min_frames or args.frames
    lengths = [args.frames if min_frames >= args.frames else int(torch.randint(min_frames, args.frames + 1, (),
                                                                               generator=g))
               for _ in range(args.utts)]
    utts = [peaky_ctc(n, args.vocab, s) for s, n in enumerate(lengths)]
    padded = torch.zeros(len(utts), max(lengths), args.vocab)
    for i, x in enumerate(utts):
        padded[i, : len(x)] = x
    common = dict(blank=0, beam_size=args.beam, lm_scale=0.5, nbest=1)
    stats = {}
    best = {}

    def runner(name, fn):
        def run():
            st = SearchStats()
            best[name] = fn(st)
            stats[name] = st
        return run

    def lw_search(x, lens, st, cached=True):
        return ctc_labelwise_fusion_search(
            x, lens, llm_scorer=LLMScorer(model, bos_id=1, eos_id=2, label_to_token=torch.tensor(l2t),
                                          use_cache=cached), stats=st, **common)

    def dl_search(x, lens, st, delay, cached=True):
        return delayed_fusion_search(x, lens, llm_scorer=LLMScorer(model, bos_id=1, eos_id=2, use_cache=cached),
                                     converter=SameUnitsConverter(l2t), delay=delay, stats=st, **common)

    def one_by_one(search, **kw):  # one utterance per search
        return lambda st: [search(x, None, st, **kw)[0][0]["labels"] for x in utts]

    def batched(search, **kw):  # all utterances in one search: one LLM call serves all of them
        return lambda st: [h[0]["labels"] for h in search(padded, torch.tensor(lengths), st, **kw)]

    delays = (("k=1", 1), ("k=5", 5), ("k=10", 10), ("end", None))
    configs = {"label-wise (cached)": one_by_one(lw_search),
               "label-wise (uncached)": one_by_one(lw_search, cached=False),
               "delayed k=1 (uncached)": one_by_one(dl_search, delay=1, cached=False)}
    configs.update({f"delayed {k} (cached)": one_by_one(dl_search, delay=d) for k, d in delays})
    configs["delayed k=20 (cached)"] = one_by_one(dl_search, delay=20)
    configs["label-wise, utts batched"] = batched(lw_search)
    configs.update({f"delayed {k}, utts batched": batched(dl_search, delay=d) for k, d in delays})
    configs["CTC only"] = lambda st: [delayed_fusion_search(x, llm_scorer=None, converter=None, stats=st,
                                                            **dict(common, lm_scale=0.0))[0][0]["labels"] for x in utts]
    med = alternating({k: runner(k, fn) for k, fn in configs.items()}, args.repeats)
    u = len(utts)
    print(f"{u} utterances x {min(lengths)}-{max(lengths)} frames, beam {args.beam}, AM vocab {args.vocab}, "
          f"{args.repeats} alternating runs, device {device}")
    print(f"{'search':34s} {'LLM calls':>10s} {'LLM tokens':>12s} {'CPU ms/utt':>11s} {'same best as label-wise':>24s}")
    ref = best["label-wise (cached)"]
    for k in configs:
        same = sum(a == b for a, b in zip(best[k], ref))
        print(f"{k:34s} {stats[k].llm_forward_calls / u:10.1f} {stats[k].llm_forward_tokens / u:12.1f} "
              f"{1000 * med[k] / u:11.1f} {same:>20d}/{u}")
    print(f"speed-up of the cache: label-wise {med['label-wise (uncached)'] / med['label-wise (cached)']:.1f}x, "
          f"delayed k=1 {med['delayed k=1 (uncached)'] / med['delayed k=1 (cached)']:.1f}x")
    for mode, lw_name, fmt in (("one utterance per search", "label-wise (cached)", "delayed {} (cached)"),
                               ("utterances batched", "label-wise, utts batched", "delayed {}, utts batched")):
        lw_calls = stats[lw_name].llm_forward_calls
        ratios = ", ".join(f"{k} {lw_calls / max(1, stats[fmt.format(k)].llm_forward_calls):.1f}x" for k, _ in delays)
        print(f"LLM calls of label-wise / delayed fusion ({mode}): {ratios}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", choices=sorted(LLMS), default="tiny")
    ap.add_argument("--llm-vocab", type=int, default=None, help="LLM vocabulary (qwen2-0.5b: 151936)")
    ap.add_argument("--utts", type=int, default=5)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--min-frames", type=int, default=None,
                    help="utterance lengths drawn from [min-frames, frames] (default: all --frames long)")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=64, help="AM labels incl. blank")
    ap.add_argument("--history", type=int, default=60, help="step table: tokens per hypothesis")
    ap.add_argument("--rows", type=int, default=8, help="step table: hypotheses")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only-step", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    llm_vocab = args.llm_vocab or (151936 if args.llm == "qwen2-0.5b" else args.vocab + 3)
    if llm_vocab < args.vocab + 3:
        raise ValueError(f"--llm-vocab {llm_vocab} < AM vocab {args.vocab} + 3")
    model = tiny_random_qwen2(llm_vocab, bos_id=1, eos_id=2, cfg=LLMS[args.llm], seed=0).eval().to(args.device)
    print(f"LLM {args.llm}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, vocab {llm_vocab}, "
          f"{args.threads} thread(s)")
    with torch.no_grad():
        step_table(model, args, args.device)
        if not args.only_step:
            search_table(model, args, args.device)


if __name__ == "__main__":
    main()
