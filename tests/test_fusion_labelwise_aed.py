"""LLM and prior as weighted LabelScorers in a label-synchronous beam search (AED label-wise fusion)."""
import pytest
import torch

from llmasr.models.llm import score_sequences, tiny_random_qwen2
from llmasr.search.labelwise_fusion import labelwise_scorers
from llmasr.search.llm_scorer import LLMScorer
from llmasr.search.scorer import LabelScorer
from llmasr.search.scorers import LabelPriorScorer

V, BOS, EOS = 9, 1, 2


class FixedDecoder(LabelScorer):
    """A stand-in AED decoder: log-probs depend on the previous label only."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.table = (2 * torch.randn(V, V, generator=g)).log_softmax(-1)

    def initial_state(self, batch_indices):
        return None

    def score(self, state, labels):
        return self.table[labels], labels

    def select(self, state, indices):
        return state[indices]

    def final_score(self, state):
        return self.table[state, EOS]


def _local_beam_search(scorers, beam, max_len):
    """Minimal label-synchronous beam search over weighted scorers (one utterance), for this test only."""
    states = {n: s.initial_state(torch.zeros(1, dtype=torch.long)) for n, (s, _) in scorers.items()}
    labels = torch.tensor([BOS])
    seqs, scores, done = [[]], torch.zeros(1), []
    for _ in range(max_len):
        total = scores[:, None].clone()
        for n, (s, w) in scorers.items():
            lp, states[n] = s.score(states[n], labels)
            total = total + w * lp
        total[:, BOS] = float("-inf")
        flat = total.flatten()
        top = flat.topk(min(beam, int(torch.isfinite(flat).sum()))).indices
        rows, labs = top // V, top % V
        keep = []
        for r, lab, sc in zip(rows.tolist(), labs.tolist(), flat[top].tolist()):
            if lab == EOS:
                done.append((seqs[r], sc))
            else:
                keep.append((r, lab, sc))
        if not keep:
            break
        idx = torch.tensor([r for r, _, _ in keep])
        states = {n: s.select(states[n], idx) for n, (s, _) in scorers.items()}
        seqs = [seqs[r] + [lab] for r, lab, _ in keep]
        scores = torch.tensor([sc for _, _, sc in keep])
        labels = torch.tensor([lab for _, lab, _ in keep])
    return sorted(done, key=lambda x: -x[1])


def test_labelwise_aed_scores():
    torch.set_num_threads(1)
    llm = tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS, seed=7).eval()
    log_prior = torch.linspace(0.5, 1.5, V).log_softmax(-1)
    dec = FixedDecoder()
    scorers = labelwise_scorers(dec, LLMScorer(llm, bos_id=BOS, eos_id=EOS), lm_scale=0.6, log_prior=log_prior,
                                prior_scale=0.2)
    assert scorers["prior"][1] == -0.2 and isinstance(scorers["prior"][0], LabelPriorScorer)
    hyps = _local_beam_search(scorers, beam=4, max_len=6)
    assert hyps
    lm = score_sequences(llm, [h for h, _ in hyps], BOS, EOS)
    for (seq, sc), lm_sc in zip(hyps, lm):
        prev = [BOS] + seq
        dec_sc = sum(float(dec.table[a, b]) for a, b in zip(prev, seq + [EOS]))
        prior_sc = float(log_prior[seq + [EOS]].sum())
        assert sc == pytest.approx(dec_sc + 0.6 * lm_sc - 0.2 * prior_sc, abs=1e-4)
