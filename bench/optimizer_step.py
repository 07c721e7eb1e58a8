"""AdamW step time on CPU for the toy's models: torch's default per-tensor loop, ``foreach`` and ``fused`` (what the
training jobs use).

    .venv/bin/python bench/optimizer_step.py [--steps 50] [--threads 1]

Prints milliseconds per optimiser step for each implementation and model (the toy's CTC model, its AED and the
tiny LLM of the speech LLMs, all parameters trained).
"""
import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "recipe")]

import torch  # noqa: E402

from llmasr.models.conformer_modules import build_model  # noqa: E402
from llmasr.models.llm import tiny_random_qwen2  # noqa: E402


def step_ms(params, steps: int, **kwargs) -> float:
    opt = torch.optim.AdamW(params, lr=1e-3, eps=1e-8, weight_decay=0.01, **kwargs)
    for _ in range(5):
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from config import toy

    vocab = dict(vocab_size=toy.AM_VOCAB_SIZE)
    models = {"toy CTC": build_model(dataclasses.replace(toy.CTC_MODEL, **vocab)),
              "toy AED": build_model(dataclasses.replace(toy.AED_MODEL, **vocab)),
              "toy LLM": tiny_random_qwen2(toy.LLM_VOCAB_SIZE, bos_id=1, eos_id=2, cfg=toy.LLM_SIZE)}
    print(f"{'model':10} {'params':>9} {'tensors':>8} {'default':>9} {'foreach':>9} {'fused':>9}  (ms per step)")
    for name, model in models.items():
        params = [p for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p)
        times = [step_ms(params, args.steps, **kw) for kw in ({}, {"foreach": True}, {"fused": True})]
        print(f"{name:10} {sum(p.numel() for p in params):>9} {len(params):>8} " + " ".join(f"{t:9.2f}" for t in times))


if __name__ == "__main__":
    main()
