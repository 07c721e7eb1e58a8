"""Times CTC beam search, label-synchronous beam search and joint CTC search on random tiny models,
with and without each optimisation (top-k label pruning, soft collapse, CTC pre-beam)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipe"))

import torch  # noqa: E402

from llmasr.search.beam_search import beam_search  # noqa: E402
from llmasr.search.ctc import ctc_beam_search  # noqa: E402
from llmasr.search.joint_ctc import joint_label_sync_search, joint_time_sync_search  # noqa: E402
from llmasr.search.scorers import TableScorer  # noqa: E402


def timed(name, fn):
    t0 = time.perf_counter()
    fn()
    print(f"{name:45s} {time.perf_counter() - t0:7.3f} s")


def main(B=4, T=60, V=30, beam=8):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    logits = torch.randn(B, T, V) * 3
    logits[:, ::2, 0] += 8  # peaky blank every other frame
    lp = logits.log_softmax(-1)
    lengths = torch.full((B,), T)
    lm = TableScorer(torch.randn(V, V).log_softmax(-1))
    eos = V - 1
    timed("ctc_beam_search (all labels)", lambda: ctc_beam_search(lp, lengths, blank=0, beam_size=beam))
    timed("ctc_beam_search (label_topk=4)", lambda: ctc_beam_search(lp, lengths, blank=0, beam_size=beam, label_topk=4))
    timed("ctc_beam_search + LM (label_topk=4)", lambda: ctc_beam_search(
        lp, lengths, blank=0, beam_size=beam, label_topk=4, scorers={"lm": (lm, 0.3)}, bos=0, eos=eos))
    timed("beam_search (label-sync, max_len=20)", lambda: beam_search({"am": (lm, 1.0)}, B, beam, 0, eos, 20))
    timed("joint label-sync CTC (pre_beam=12)", lambda: joint_label_sync_search(
        {"am": (lm, 1.0)}, lp, lengths, ctc_scale=0.3, blank=0, bos=0, eos=eos, beam_size=beam, max_len=20,
        pre_beam_size=12))
    timed("joint label-sync CTC (pre_beam=V)", lambda: joint_label_sync_search(
        {"am": (lm, 1.0)}, lp, lengths, ctc_scale=0.3, blank=0, bos=0, eos=eos, beam_size=beam, max_len=20,
        pre_beam_size=V))
    timed("joint time-sync (label_topk=4)", lambda: joint_time_sync_search(
        lm, lp, lengths, blank=0, bos=0, eos=eos, beam_size=beam, label_topk=4))
    timed("joint time-sync (label_topk=4, soft collapse)", lambda: joint_time_sync_search(
        lm, lp, lengths, blank=0, bos=0, eos=eos, beam_size=beam, label_topk=4, soft_collapse_threshold=0.95))


if __name__ == "__main__":
    main()
