"""What one paper-scale run costs in GPU hours, per stage: the GPU jobs of the built graph with their time limits
(``rqmt``: the most one submission may take; trainings resume across submissions), and for the trainings an
estimate from the data size, the passes over it and the model size (6 x parameters FLOPs per position and step,
at an assumed effective bf16 throughput).

    python bench/paper_cost.py librispeech [--tflops 60]
    python bench/paper_cost.py loquacious
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
from typing import Dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "recipe"), ROOT]

TRAIN_HOURS = {"librispeech": 960.0, "small": 250.0, "medium": 2500.0, "large": 25000.0}  # transcribed audio
ENCODER_RATE = 1 / 0.06  # encoder frames per second of audio (10 ms features, 6x downsampling)
TOKENS_PER_SECOND = 3.0  # unigram-10k labels per second of speech (about 2.7 words/s)


def meta_params(build) -> int:
    """Parameters of a module built on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def training_flops_per_audio_hour() -> Dict[str, float]:
    """FLOPs of one training step over one hour of audio (6 x parameters per position), per model."""
    from config.paper import QWEN2_ARCHITECTURES, SPEECH_LLM_ADAPTER_K, paper_speech_llm_encoder_config
    from llmasr.models.conformer import paper_aed_config, paper_ctc_config
    from llmasr.models.conformer_modules import ConformerEncoder, build_model

    def qwen2(hub: str) -> int:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        return meta_params(lambda: Qwen2ForCausalLM(Qwen2Config(**QWEN2_ARCHITECTURES[hub])))

    frames = 3600 * ENCODER_RATE
    tokens = 3600 * TOKENS_PER_SECOND
    ctc = meta_params(lambda: build_model(paper_ctc_config(10240)))
    aed = meta_params(lambda: build_model(paper_aed_config(10240)))
    enc18 = meta_params(lambda: ConformerEncoder(paper_speech_llm_encoder_config()))
    llm_positions = frames / SPEECH_LLM_ADAPTER_K + tokens
    out = {"CTC AM (16 x 1024)": 6 * ctc * frames, "AED (16 x 1024 + 6 x 1024)": 6 * ctc * frames + 6 * (aed - ctc) * tokens,
           "speech-LLM encoder CTC (18 x 1024)": 6 * enc18 * frames}
    for hub in QWEN2_ARCHITECTURES:
        out[f"speech LLM ({hub})"] = 6 * enc18 * frames + 6 * qwen2(hub) * llm_positions
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("librispeech", "loquacious"))
    parser.add_argument("--tflops", type=float, default=60.0, help="effective bf16 TFLOP/s of one GPU in training")
    args = parser.parse_args()
    from sisyphus.graph import graph

    importlib.import_module(f"config.{args.experiment}.experiment").py()
    jobs = collections.defaultdict(lambda: [0, 0.0])
    for job in graph.jobs():
        rqmt = getattr(job, "rqmt", None) or {}
        if rqmt.get("gpu"):
            jobs[type(job).__name__][0] += 1
            jobs[type(job).__name__][1] += float(rqmt.get("time", 0)) * int(rqmt["gpu"])
    print(f"GPU jobs of config/{args.experiment}/experiment.py (time limit per submission):")
    for kind, (count, hours) in sorted(jobs.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:28s} {count:5d} jobs  {hours:8.0f} GPU h at most per submission")
    print(f"\nTraining estimate at {args.tflops:.0f} effective TFLOP/s (6 x params per position):")
    for model, flops in training_flops_per_audio_hour().items():
        rate = args.tflops * 1e12 * 3600 / flops
        print(f"  {model:40s} {rate:7.0f} audio hours per GPU hour")
    trainings = [j for j in graph.jobs() if type(j).__name__ in ("ReturnnTrainingJob", "SpeechLLMTrainingJob")]
    total = collections.Counter()
    for job in trainings:
        passes = job.options.num_epochs / job.options.partition_epoch
        total[type(job).__name__] += passes
    print(f"  passes over the training data: {dict(total)}")


if __name__ == "__main__":
    main()
