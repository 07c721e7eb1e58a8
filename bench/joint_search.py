"""Joint time-synchronous CTC + speech LLM search: time per utterance with and without each optimisation.

The optimisations of :func:`llmasr.search.joint_ctc.joint_time_sync_search`: soft collapse of CTC frames,
top-k label pruning by CTC, scoring only hypotheses that got a new label, batching the LLM calls over
utterances and over beams. The data are synthetic: a random-weight tiny speech LLM (prefix interface: a
stand-in encoder with 6x downsampling, a frame-stacking adapter, a Qwen2 LLM) and peaky random CTC log-probs
(mostly confident blank, label spikes of 1-2 frames with a competitor label), like those of a trained model.

    .venv/bin/python bench/joint_search.py [--utts 8] [--frames 120] [--vocab 256] [--beam 8] [--topk 8]
                                           [--collapse 0.995] [--threads 1] [--repeats 1] [--quick]

Prints one row per configuration: all optimisations on, each one turned off in turn, all off (naive), with
wall-clock and process CPU ms per utterance (CPU time is less disturbed by other load on the machine; with
one thread it equals wall time on an idle machine), per utterance the frames searched, (hypothesis, label)
expansions, LLM calls and LLM rows scored, the speed-up over the naive search (by CPU time), and on how many
utterances the best hypothesis equals the naive one (top-k pruning and soft collapse may change results; the
other options must not). Defaults take about 1.5 minutes on one core.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from llmasr.models.llm import TinyLLMConfig, tiny_random_qwen2  # noqa: E402
from llmasr.models.speech_llm import SpeechLLMConfig  # noqa: E402
from llmasr.models.speech_llm_modules import SpeechLLM  # noqa: E402
from llmasr.search.ctc import CTCSearchStats  # noqa: E402
from llmasr.search.joint_ctc import joint_time_sync_search  # noqa: E402
from llmasr.search.speech_llm_scorer import SpeechLLMScorer  # noqa: E402

BLANK = 0  # CTC blank, also fed to the LLM as BOS; EOS is the extra LLM token `vocab`
DOWNSAMPLE = 6


class StandInEncoder(nn.Module):
    """Stand-in acoustic encoder: 6 input samples (10 ms features) per output frame -> linear -> tanh."""

    def __init__(self, dim: int):
        super().__init__()
        self.lin = nn.Linear(DOWNSAMPLE, dim)

    def forward(self, audio: torch.Tensor, lens: torch.Tensor):
        t = audio.shape[1] // DOWNSAMPLE
        frames = audio[:, : t * DOWNSAMPLE].reshape(audio.shape[0], t, DOWNSAMPLE)
        return torch.tanh(self.lin(frames)), lens // DOWNSAMPLE


def peaky_ctc(frames: int, vocab: int, g: torch.Generator) -> torch.Tensor:
    """[T, V] log-probs like a trained CTC model: ~35% of frames spike on a label (20% of spikes last two
    frames), with a weaker competitor label; the other frames are confident blank."""
    logits = torch.randn(frames, vocab, generator=g)
    t = 0
    while t < frames:
        if float(torch.rand((), generator=g)) < 0.35:
            lab, comp = torch.randint(1, vocab, (2,), generator=g).tolist()
            for tt in range(t, min(frames, t + (2 if float(torch.rand((), generator=g)) < 0.2 else 1))):
                logits[tt, lab] += 9 + 4 * float(torch.rand((), generator=g))
                logits[tt, comp] += 4 + 4 * float(torch.rand((), generator=g))
                logits[tt, BLANK] += 3 + 4 * float(torch.rand((), generator=g))
                t = tt
        else:
            logits[t, BLANK] += 11 + 5 * float(torch.rand((), generator=g))
        t += 1
    return logits.log_softmax(-1)


def make_model(vocab: int, hidden: int):
    """Random tiny speech LLM over the CTC labels plus EOS (= ``vocab``); returns (LLM, its SpeechLLMScorer)."""
    llm = tiny_random_qwen2(vocab + 1, bos_id=BLANK, eos_id=vocab, seed=0, cfg=TinyLLMConfig(
        hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048))
    torch.manual_seed(0)
    cfg = SpeechLLMConfig(adapter_k=2).resolve(encoder_dim=32, bos_id=BLANK, eos_id=vocab, prompt_pre=(1, 2),
                                               prompt_post=(3,))
    return llm, SpeechLLMScorer(SpeechLLM(cfg, StandInEncoder(32), llm).eval())


def make_data(utts: int, frames: int, vocab: int, seed: int = 1):
    """Peaky CTC log-probs [B, T, V] (lengths 70-130% of ``frames``), lengths [B] and stand-in audio [B, 6T]."""
    g = torch.Generator().manual_seed(seed)
    lengths = [max(4, int(frames * (0.7 + 0.6 * float(torch.rand((), generator=g))))) for _ in range(utts)]
    T = max(lengths)
    ctc = torch.full((utts, T, vocab), float("-inf"))
    ctc[:, :, BLANK] = 0.0
    for b, n in enumerate(lengths):
        ctc[b, :n] = peaky_ctc(n, vocab, g)
    return ctc, torch.tensor(lengths), torch.randn(utts, T * DOWNSAMPLE, generator=g)


def main() -> None:
    """Builds the model and data, runs every configuration once, prints the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utts", type=int, default=8)
    ap.add_argument("--frames", type=int, default=120, help="mean CTC frames per utterance (after downsampling)")
    ap.add_argument("--vocab", type=int, default=256, help="CTC labels incl. blank (the LLM has one more: EOS)")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--topk", type=int, default=8, help="label_topk when top-k pruning is on")
    ap.add_argument("--collapse", type=float, default=0.995, help="soft collapse blank threshold when on")
    ap.add_argument("--model-scale", type=float, default=0.2)
    ap.add_argument("--hidden", type=int, default=128, help="LLM hidden size (2 layers)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration; the fastest is reported")
    ap.add_argument("--quick", action="store_true", help="tiny run (2 utterances x 30 frames, vocab 32)")
    args = ap.parse_args()
    if args.quick:
        args.utts, args.frames, args.vocab = 2, 30, 32
    torch.set_num_threads(args.threads)

    eos = args.vocab
    llm, scorer = make_model(args.vocab, args.hidden)
    ctc, lens, audio = make_data(args.utts, args.frames, args.vocab)
    scorer.set_audio(audio, lens * DOWNSAMPLE)
    frames = lens.tolist()

    on = dict(soft_collapse_threshold=args.collapse, label_topk=args.topk, score_new_labels_only=True,
              batch_size=None, batch_hyps=True)
    off = dict(soft_collapse_threshold=None, label_topk=None, score_new_labels_only=False, batch_size=1,
               batch_hyps=False)
    configs = [
        ("all optimisations", on),
        ("- soft collapse", on | dict(soft_collapse_threshold=None)),
        ("- top-k label pruning", on | dict(label_topk=None)),
        ("- score only new labels", on | dict(score_new_labels_only=False)),
        ("- batch over utterances", on | dict(batch_size=1)),
        ("- batch over beams", on | dict(batch_hyps=False)),
        ("- batch over utts + beams", on | dict(batch_size=1, batch_hyps=False)),
        ("naive (all off)", off),
    ]
    common = dict(model_scale=args.model_scale, blank=BLANK, bos=BLANK, eos=eos, beam_size=args.beam, nbest=1)
    n_warm = min(2, args.utts)  # warm-up: allocations and first-call overheads are not timed
    joint_time_sync_search(scorer, ctc[:n_warm], lens[:n_warm], **common, **on)

    rows = []
    for name, opts in configs:
        wall = cpu = float("inf")
        for _ in range(max(1, args.repeats)):
            stats = CTCSearchStats()
            t0, c0 = time.perf_counter(), time.process_time()
            res = joint_time_sync_search(scorer, ctc, lens, stats=stats, **common, **opts)
            wall = min(wall, (time.perf_counter() - t0) / args.utts)
            cpu = min(cpu, (time.process_time() - c0) / args.utts)
        rows.append((name, wall, cpu, stats, [r[0]["labels"] for r in res]))
    naive_cpu, naive_best = rows[-1][2], rows[-1][4]

    n_llm = sum(p.numel() for p in llm.parameters()) / 1e6
    print(f"{args.utts} utterances x {sum(frames) / len(frames):.0f} CTC frames (mean), vocab {args.vocab}, "
          f"beam {args.beam}, top-k {args.topk}, soft collapse > {args.collapse}, LLM {n_llm:.2f}M params, "
          f"prefix ~{sum(frames) / len(frames) / 2 + 3:.0f} positions, {args.threads} thread(s)")
    print(f"{'configuration':27s} {'ms/utt':>8s} {'cpu ms/utt':>10s} {'frames':>7s} {'expansions':>11s} "
          f"{'LLM calls':>10s} {'LLM rows':>9s} {'speed-up':>9s} {'same best':>10s}")
    for name, wall, cpu, st, best in rows:
        same = sum(a == b for a, b in zip(best, naive_best))
        u = args.utts
        print(f"{name:27s} {1000 * wall:8.1f} {1000 * cpu:10.1f} {st.frames / u:7.1f} {st.expansions / u:11.0f} "
              f"{st.scorer_calls / u:10.1f} {st.scored_rows / u:9.1f} {naive_cpu / cpu:8.1f}x {same:>5d}/{u}")


if __name__ == "__main__":
    main()
