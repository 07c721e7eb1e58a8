"""The project's joint CTC + decoder searches against ESPnet's on the same tiny model and data.

Label-synchronous: :func:`llmasr.search.joint_ctc.joint_label_sync_search` vs ESPnet's ``BatchBeamSearch``
(decoder + ``CTCPrefixScorer``, same weights, beam and pre-beam ratio 1.5, no length normalisation).
Time-synchronous: :func:`llmasr.search.joint_ctc.joint_time_sync_search` vs ESPnet's ``BeamSearchTimeSync``
(CTC weight 1, decoder weight = model scale, pre-beam 1.5 * beam by CTC). Both use one random-weight
LSTM-attention decoder (one step function, so the model work is the same) over peaky random CTC posteriors.
Runs alternate (ours, ESPnet, ours, ...); times are medians of process CPU time; ESPnet decodes one utterance at a time (its API),
ours all utterances in one batch. Needs ``pip install --no-deps espnet`` (``pip install .[bench]``).

    PYTHONPATH=recipe:. python bench/peer_search.py [--utts 20] [--frames 40] [--vocab 64] [--repeats 3]

Prints per beam size: time per utterance of both, the speed ratio, the share of utterances with the same
best hypothesis and (label-sync) the same n-best list, (time-sync) the share where our best hypothesis scores
at least as well as ESPnet's under our objective (CTC + scale * decoder incl. EOS).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from llmasr.search.joint_ctc import joint_label_sync_search, joint_time_sync_search  # noqa: E402
from llmasr.search.scorer import LabelScorer  # noqa: E402

BLANK = 0


class TinyDecoder(nn.Module):
    """One-layer LSTM decoder with dot-product attention over the encoder frames (an RNN AED decoder)."""

    def __init__(self, vocab: int, enc_dim: int, hidden: int = 64, temperature: float = 0.3):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.cell = nn.LSTMCell(2 * hidden, hidden)
        self.key = nn.Linear(enc_dim, hidden)
        self.val = nn.Linear(enc_dim, hidden)
        self.out = nn.Linear(2 * hidden, vocab)
        self.hidden, self.temperature = hidden, temperature

    def memory(self, enc: torch.Tensor):
        """Keys and values of the encoder frames [B, T, H] (computed once per utterance batch)."""
        return self.key(enc), self.val(enc)

    @torch.no_grad()
    def step(self, labels, h, c, ctx, keys, vals, mask):
        """One step for [N] rows: returns log p(next label) [N, V] and the new (h, c, ctx)."""
        h, c = self.cell(torch.cat([self.emb(labels), ctx], -1), (h, c))
        e = (keys @ h[:, :, None])[..., 0].masked_fill(~mask, float("-inf"))  # [N, T]
        ctx = (e.softmax(-1)[:, :, None] * vals).sum(1)
        logits = self.out(torch.cat([h, ctx], -1)) * self.temperature
        return logits.log_softmax(-1), h, c, ctx


class OurDecoderScorer(LabelScorer):
    """The decoder as the project's LabelScorer: batched state tensors [N, H] + utterance index per row."""

    def __init__(self, dec: TinyDecoder, enc: torch.Tensor, lens: torch.Tensor):
        self.dec = dec
        self.keys, self.vals = dec.memory(enc)
        self.mask = torch.arange(enc.shape[1])[None, :] < lens[:, None]

    def initial_state(self, batch_indices):
        z = torch.zeros(len(batch_indices), self.dec.hidden)
        return (z, z, z, batch_indices)

    def score(self, state, labels):
        h, c, ctx, b = state
        lp, h, c, ctx = self.dec.step(labels, h, c, ctx, self.keys[b], self.vals[b], self.mask[b])
        return lp, (h, c, ctx, b)

    def select(self, state, indices):
        return tuple(x[indices] for x in state)

    def concat(self, states):
        return tuple(torch.cat(xs) for xs in zip(*states))


def espnet_scorers(dec: TinyDecoder):
    """The same decoder behind ESPnet's BatchScorerInterface, and a CTC module for its CTCPrefixScorer."""
    from espnet.nets.scorer_interface import BatchScorerInterface

    class EspnetDecoder(BatchScorerInterface):
        def __init__(self):
            self._mem = None

        def _memory(self, x):
            if self._mem is None or self._mem[0] is not x:
                self._mem = (x, *dec.memory(x[None]))  # once per utterance, as OurDecoderScorer
            return self._mem[1], self._mem[2]

        def init_state(self, x):
            return None

        def _run(self, ys, states, x, n):
            keys, vals = self._memory(x)
            z = torch.zeros(n, dec.hidden)
            h = torch.stack([s[0] for s in states]) if states[0] is not None else z
            c = torch.stack([s[1] for s in states]) if states[0] is not None else z
            ctx = torch.stack([s[2] for s in states]) if states[0] is not None else z
            mask = torch.ones(n, keys.shape[1], dtype=torch.bool)
            lp, h, c, ctx = dec.step(ys[:, -1], h, c, ctx, keys.expand(n, -1, -1), vals.expand(n, -1, -1), mask)
            return lp, [(h[i], c[i], ctx[i]) for i in range(n)]

        def score(self, y, state, x):
            lp, st = self._run(y[None], [state], x, 1)
            return lp[0], st[0]

        def batch_score(self, ys, states, xs):
            return self._run(ys, states, xs[0], ys.shape[0])

    class Ctc(nn.Module):
        def log_softmax(self, x):
            return x.log_softmax(-1)

    return EspnetDecoder(), Ctc()


def peaky_ctc(frames: int, vocab: int, eos: int, g: torch.Generator) -> torch.Tensor:
    """[T, V] CTC logits like a trained model's: confident blank, label spikes with a weaker competitor; the
    EOS column (shared vocabulary, as in ESPnet) is never likely."""
    logits = torch.randn(frames, vocab, generator=g)
    for t in range(frames):
        if float(torch.rand((), generator=g)) < 0.3:
            lab, comp = torch.randint(1, eos, (2,), generator=g).tolist()
            logits[t, lab] += 8 + 3 * float(torch.rand((), generator=g))
            logits[t, comp] += 5 + 3 * float(torch.rand((), generator=g))
            logits[t, BLANK] += 4 + 3 * float(torch.rand((), generator=g))
        else:
            logits[t, BLANK] += 10
    logits[:, eos] -= 10
    return logits.log_softmax(-1)


def _median_alternating(fns, repeats):
    """Runs the functions in turn ``repeats`` times; returns per function the median process CPU seconds (less
    disturbed than wall time by other load on the machine; with one thread it equals wall time when idle) and
    the last result."""
    times = [[] for _ in fns]
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.process_time()
            results[i] = fn()
            times[i].append(time.process_time() - t0)
    return [statistics.median(t) for t in times], results


def our_objective(lp_ctc: torch.Tensor, dec: OurDecoderScorer, b: int, labels: List[int], bos: int, eos: int,
                  scale: float) -> float:
    """log p_ctc(labels) + scale * log p_dec(labels + EOS) of utterance ``b`` (CTC forward algorithm)."""
    import math

    ext = [BLANK]
    for lab in labels:
        ext += [lab, BLANK]
    x = lp_ctc.double()
    alpha = torch.full((len(ext),), float("-inf"), dtype=torch.float64)
    alpha[0] = x[0, BLANK]
    if len(ext) > 1:
        alpha[1] = x[0, ext[1]]
    for t in range(1, x.shape[0]):
        prev = alpha.clone()
        for s in range(len(ext)):
            cands = [prev[s]] + ([prev[s - 1]] if s >= 1 else [])
            if s >= 2 and ext[s] != BLANK and ext[s] != ext[s - 2]:
                cands.append(prev[s - 2])
            alpha[s] = torch.logsumexp(torch.stack(cands), 0) + x[t, ext[s]]
    ctc = float(torch.logsumexp(alpha[-2:], 0)) if len(ext) > 1 else float(alpha[0])
    st = dec.initial_state(torch.tensor([b]))
    total = 0.0
    for prev_lab, lab in zip([bos] + labels, labels + [eos]):
        lp, st = dec.score(st, torch.tensor([prev_lab]))
        total += float(lp[0, lab])
    return ctc + scale * total if math.isfinite(ctc) else float("-inf")


def label_sync_row(beam: int, data: dict, args) -> None:
    """Label-synchronous: ours vs ESPnet's BatchBeamSearch at one beam size (alternating runs, medians)."""
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer

    ctc, lengths, lens, eos, V = data["ctc"], data["lengths"], data["lens"], data["eos"], data["vocab"]
    w = args.ctc_weight

    def ours_ls():
        return joint_label_sync_search({"decoder": (data["ours_dec"], 1 - w)}, ctc, lengths, ctc_scale=w,
                                       blank=BLANK, bos=eos, eos=eos, beam_size=beam, max_len=ctc.shape[1])

    bbs = BatchBeamSearch(scorers={"decoder": data["esp_dec"], "ctc": CTCPrefixScorer(data["esp_ctc"], eos)},
                          weights={"decoder": 1 - w, "ctc": w}, beam_size=beam, vocab_size=V, sos=eos, eos=eos,
                          pre_beam_score_key="full")

    def espnet_ls():
        out = []
        for b, n in enumerate(lens):
            hyps = bbs(ctc[b, :n], maxlenratio=0.0)
            out.append([h.yseq[1:-1].tolist() for h in hyps])
        return out

    (t_ours, t_esp), (r_ours, r_esp) = _median_alternating([ours_ls, espnet_ls], args.repeats)
    same_best = sum(o[0]["labels"] == e[0] for o, e in zip(r_ours, r_esp))
    same_nbest = sum([h["labels"] for h in o[:beam]] == e[:beam] for o, e in zip(r_ours, r_esp))
    print(f"label-sync  beam {beam}: ours {1000 * t_ours / args.utts:7.1f} CPU ms/utt, ESPnet BatchBeamSearch "
          f"{1000 * t_esp / args.utts:7.1f} ms/utt, ratio {t_esp / t_ours:5.2f}x, same best "
          f"{same_best}/{args.utts}, same {beam}-best list {same_nbest}/{args.utts}")


def time_sync_rows(beam: int, data: dict, args) -> None:
    """Time-synchronous: ours (without and with soft collapse) vs ESPnet's BeamSearchTimeSync at one beam size."""
    from espnet.nets.beam_search_timesync import BeamSearchTimeSync

    ctc, lengths, lens, eos, V = data["ctc"], data["lengths"], data["lens"], data["eos"], data["vocab"]
    ours_dec, m = data["ours_dec"], args.model_scale
    bts = BeamSearchTimeSync(sos=eos, beam_size=beam, scorers={"ctc": data["esp_ctc"], "decoder": data["esp_dec"]},
                             weights={"ctc": 1.0, "decoder": m, "lm": 0.0, "length_bonus": 0.0},
                             token_list=[str(i) for i in range(V)], blank=BLANK)

    def espnet_ts():
        return [bts(ctc[b, :n])[0].yseq[1:-1].tolist() for b, n in enumerate(lens)]

    variants = [("", None)] + ([(f" + soft collapse {args.collapse}", args.collapse)] if args.collapse else [])
    for label, collapse in variants:
        def ours_ts(collapse=collapse):
            return joint_time_sync_search(ours_dec, ctc, lengths, model_scale=m, blank=BLANK, bos=eos, eos=eos,
                                          beam_size=beam, label_topk=int(1.5 * beam), nbest=1,
                                          soft_collapse_threshold=collapse)

        (t_ours, t_esp), (r_ours, r_esp) = _median_alternating([ours_ts, espnet_ts], args.repeats)
        same = sum(o[0]["labels"] == e for o, e in zip(r_ours, r_esp))
        obj_o = [our_objective(ctc[b, :n], ours_dec, b, r_ours[b][0]["labels"], eos, eos, m)
                 for b, n in enumerate(lens)]
        obj_e = [our_objective(ctc[b, :n], ours_dec, b, r_esp[b], eos, eos, m) for b, n in enumerate(lens)]
        at_least = sum(o >= e - 1e-6 for o, e in zip(obj_o, obj_e))
        print(f"time-sync{label} beam {beam}: ours {1000 * t_ours / args.utts:7.1f} CPU ms/utt, ESPnet "
              f"BeamSearchTimeSync {1000 * t_esp / args.utts:7.1f} ms/utt, ratio {t_esp / t_ours:5.2f}x, same best "
              f"{same}/{args.utts}, our objective >= ESPnet's {at_least}/{args.utts} "
              f"(mean {statistics.mean(obj_o):.2f} vs {statistics.mean(obj_e):.2f})")


def main() -> None:
    """Builds model and data, runs both searches alternately per beam size, prints the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utts", type=int, default=20)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--vocab", type=int, default=64, help="labels incl. blank (0) and EOS (last)")
    ap.add_argument("--ctc-weight", type=float, default=0.3, help="label-sync: CTC weight, decoder 1 - it")
    ap.add_argument("--model-scale", type=float, default=0.5, help="time-sync: decoder scale (CTC 1)")
    ap.add_argument("--beams", default="4,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-time-sync", action="store_true")
    ap.add_argument("--skip-label-sync", action="store_true")
    ap.add_argument("--collapse", type=float, default=0.99,
                    help="time-sync: also run ours with soft collapse of confident-blank frames (0: off)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    V, eos = args.vocab, args.vocab - 1  # ESPnet: one id for SOS and EOS
    g = torch.Generator().manual_seed(0)
    lens = [max(8, int(args.frames * (0.7 + 0.6 * float(torch.rand((), generator=g))))) for _ in range(args.utts)]
    T = max(lens)
    ctc = torch.zeros(args.utts, T, V)
    ctc[:, :, BLANK] = 0.0
    ctc[:, :, 1:] = -1e4
    for b, n in enumerate(lens):
        ctc[b, :n] = peaky_ctc(n, V, eos, g)
    lengths = torch.tensor(lens)
    torch.manual_seed(0)
    dec = TinyDecoder(V, V).eval()
    esp_dec, esp_ctc = espnet_scorers(dec)
    data = dict(ctc=ctc, lengths=lengths, lens=lens, eos=eos, vocab=V, ours_dec=OurDecoderScorer(dec, ctc, lengths),
                esp_dec=esp_dec, esp_ctc=esp_ctc)
    print(f"{args.utts} utterances x {sum(lens) / len(lens):.0f} CTC frames (mean), vocab {V}, LSTM decoder "
          f"{sum(p.numel() for p in dec.parameters()) / 1e6:.2f}M params, {args.threads} thread(s), "
          f"{args.repeats} alternating runs, medians")
    for beam in [int(x) for x in args.beams.split(",")]:
        if not args.skip_label_sync:
            label_sync_row(beam, data, args)
        if not args.skip_time_sync:
            time_sync_rows(beam, data, args)


if __name__ == "__main__":
    main()
