"""Peak RSS of the CTC log-prob dump and of the CTC search job streaming over it, on a synthetic set of paper
size: 10,001 CTC outputs (unigram 10k + blank), 60 ms frames, utterances of about 15 s, ``--hours`` of audio.

Each phase runs in its own process (its peak RSS is its own): ``dump`` writes the utterances through the dump's
writer (what ``DumpCtcLogProbsJob``'s RETURNN callback does per utterance); ``search`` runs
``CTCFusionSearchJob.run`` (mode NONE: the CTC prefix beam search without LLM) over the file. The numbers should not
grow with ``--hours``: memory is bounded by one batch of utterances.

    .venv/bin/python bench/ctc_logprobs_memory.py [--hours 5] [--dir /tmp/ctc_bench]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipe"))

VOCAB = 10001
FRAME_SHIFT = 0.06
UTT_SECONDS = 15.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def dump(path: str, hours: float) -> dict:
    import torch

    from llmasr.search.ctc_logprobs import CtcLogProbsWriter

    frames = int(UTT_SECONDS / FRAME_SHIFT)
    g = torch.Generator().manual_seed(0)
    pool = []  # a few peaky [T, V] utterances reused: generating 300k x 10k random numbers is not what is measured
    for _ in range(4):
        logits = torch.randn(frames, VOCAB, generator=g)
        logits[:, VOCAB - 1] += 4.0  # mostly blank, as a trained CTC model
        pool.append(logits.log_softmax(-1))
    n_utts = int(hours * 3600 / UTT_SECONDS)
    with CtcLogProbsWriter(path) as w:
        for i in range(n_utts):
            w.add(f"utt/{i}", pool[i % len(pool)][: frames - (i % 7)])
    return {"utterances": n_utts, "file_gb": os.path.getsize(path) / 1e9}


def search(path: str, work: str) -> dict:
    import sentencepiece as spm

    import sisyphus.global_settings as gs
    from llmasr.search.delayed_fusion import CTCFusionSearchJob, FusionMode
    from sisyphus import tk

    text = os.path.join(work, "text.txt")
    with open(text, "w") as f:
        f.write("\n".join(["the cat sat on the mat", "a dog ran in the park", "she sells sea shells"] * 20) + "\n")
    spm.SentencePieceTrainer.train(input=text, model_prefix=os.path.join(work, "am"), vocab_size=30,
                                   hard_vocab_limit=False, minloglevel=2)
    gs.WORK_DIR = os.path.join(work, "work")
    job = CTCFusionSearchJob(tk.Path(path), tk.Path(os.path.join(work, "am.model")), None, mode=FusionMode.NONE,
                             beam_size=4, label_topk=8, nbest=4, utterances_per_batch=8)
    os.makedirs(os.path.dirname(job.out_nbest.get_path()), exist_ok=True)
    job.run()
    with open(job.out_search_stats.get_path()) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=5.0)
    ap.add_argument("--dir", default="/tmp/ctc_logprobs_bench")
    ap.add_argument("--phase", choices=["dump", "search"])
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "ctc_logprobs.hdf")
    if args.phase:
        t0 = time.time()
        info = dump(path, args.hours) if args.phase == "dump" else search(path, args.dir)
        print(json.dumps({"phase": args.phase, "seconds": round(time.time() - t0, 1),
                          "peak_rss_gb": round(peak_rss_gb(), 3), **info}))
        return
    for phase in ("dump", "search"):
        out = subprocess.run([sys.executable, __file__, "--phase", phase, "--hours", str(args.hours), "--dir",
                              args.dir], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        res = json.loads(out)
        extra = (f"{res['utterances']} utterances, file {res['file_gb']:.1f} GB" if phase == "dump"
                 else f"{res['utterances']} utterances searched")
        print(f"{phase:6s} {args.hours:g} h, V={VOCAB}: peak RSS {res['peak_rss_gb']:.2f} GB, {res['seconds']:.0f} s "
              f"({extra})")
    os.remove(path)


if __name__ == "__main__":
    main()
