"""Label-synchronous beam search: beam size, safe early stop, EOS through the partial (CTC) scorer."""
import itertools

import pytest
import torch

from llmasr.search.beam_search import beam_search
from llmasr.search.scorer import LabelScorer, PartialLabelScorer
from llmasr.search.scorers import LabelPriorScorer, LengthRewardScorer, TableScorer

torch.set_num_threads(1)
NEG = float("-inf")


class CountingScorer(TableScorer):
    """A TableScorer that records how many rows each step scores."""

    def __init__(self, table):
        super().__init__(table)
        self.rows = []

    def score(self, state, labels):
        self.rows.append(int(labels.shape[0]))
        return super().score(state, labels)


def test_beam_holds_at_most_beam_size_hypotheses():
    """An EOS candidate in the last slot of the beam must not let one more running hypothesis in (B1)."""
    bos, eos = 0, 3
    table = torch.tensor([0.0, 0.5, 0.2, 0.3]).log()  # label 1 at 0.5, EOS 0.3, label 2 at 0.2
    sc = CountingScorer(table)
    out = beam_search({"am": (sc, 1.0)}, 1, 2, bos, eos, 4)
    assert sc.rows[:3] == [1, 1, 1]  # [1, 2, 2] with the extra hypothesis
    # each step: best = label 1 (runs on), second = EOS (ends)
    assert [h["labels"] for h in out[0]] == [[], [1]]


class PositionScorer(LabelScorer):
    """log p(label | position): one table row per position (state = labels consumed, BOS included)."""

    def __init__(self, table: torch.Tensor):
        self.table = table  # [positions, V]

    def initial_state(self, batch_indices):
        return torch.zeros(len(batch_indices), dtype=torch.long)

    def score(self, state, labels):
        return self.table[state.clamp(max=self.table.shape[0] - 1)], state + 1

    def select(self, state, indices):
        return state[indices]


def _exhaustive(table, weights, eos, max_len):
    """Best weighted score over label sequences of length 0..max_len (label 1 only; EOS scored at the end)."""
    best = NEG
    for L in range(max_len + 1):
        s = sum(w(t, 1) for t in range(L) for w in weights) + sum(w(L, eos) for w in weights)
        best = max(best, s)
    return best


@pytest.mark.parametrize("kind", ["length_reward", "negative_prior"])
def test_no_unsafe_early_stop_when_scores_can_rise(kind):
    """Random per-position tables over one label + EOS: a beam of 2 holds the running hypothesis and the
    ending one, so the search is exact unless it stops early; with a positive length reward or a prior at
    negative scale the running score can rise, and stopping once it falls below the ended ones is wrong (B2)."""
    V, bos, eos, max_len = 4, 0, 3, 6
    wrong = 0
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        logits = 2 * torch.randn(max_len + 1, V, generator=g)
        logits[:, [bos, 2]] = NEG  # only label 1 and EOS
        table = logits.log_softmax(-1)
        scorers = {"am": (PositionScorer(table), 1.0)}
        if kind == "length_reward":
            scorers["reward"] = (LengthRewardScorer(V, eos=eos), 1.0)
            extra = [lambda t, c: 0.0 if c == eos else 1.0]
        else:
            log_prior = torch.tensor([0.0, -2.0, -1.0, -1.5])
            scorers["prior"] = (LabelPriorScorer(log_prior), -0.5)
            extra = [lambda t, c: 0.5 * -float(log_prior[c])]
        out = beam_search(scorers, 1, 2, bos, eos, max_len)
        ref = _exhaustive(table, [lambda t, c: float(table[min(t, max_len), c])] + extra, eos, max_len)
        assert out[0][0]["score"] <= ref + 1e-4
        wrong += out[0][0]["score"] < ref - 1e-4
    assert wrong == 0


def test_bigram_reward_beam_covers_all_equals_exhaustive():
    """Random bigram tables with a positive length reward and a beam that never prunes: exhaustive results."""
    V, bos, eos, max_len = 4, 0, 3, 3
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(V, V, generator=g)
        logits[:, bos] = NEG
        table = logits.log_softmax(-1)
        scorers = {"am": (TableScorer(table), 1.0), "reward": (LengthRewardScorer(V, eos=eos), 0.8)}
        out = beam_search(scorers, 1, 64, bos, eos, max_len, nbest=64)
        ref = {}
        for L in range(max_len + 1):
            for seq in itertools.product([1, 2], repeat=L):
                labs = [bos, *seq, eos]
                ref[seq] = sum(float(table[a, c]) for a, c in zip(labs[:-1], labs[1:])) + 0.8 * L
        assert tuple(out[0][0]["labels"]) == max(ref, key=ref.get)
        assert {tuple(h["labels"]): h["score"] for h in out[0]} == pytest.approx(ref, abs=1e-4)


class EosOnlyPartial(PartialLabelScorer):
    """A partial scorer that strongly prefers EOS after one label (a CTC scorer whose audio holds one label)."""

    def __init__(self, eos):
        self.eos = eos

    def initial_state(self, batch_indices):
        return torch.zeros(len(batch_indices), dtype=torch.long)

    def score_partial(self, state, labels, candidates):
        n_labels = state[:, None].expand_as(candidates)
        sc = torch.where(candidates == self.eos, torch.where(n_labels >= 1, 0.0, -20.0), -8.0)
        new = (state[:, None] + 1).expand_as(candidates).reshape(-1)
        return sc, new

    def score(self, state, labels):
        raise NotImplementedError

    def select(self, state, indices):
        return state[indices]


@pytest.mark.parametrize("eos_always_scored", [True, False])
def test_eos_always_scored_by_partial_scorer(eos_always_scored):
    """The decoder ranks EOS low (outside the pre-beam); with eos_always_scored the partial scorer still
    sees it and ends the hypothesis after one label, as ESPnet's BatchBeamSearch does."""
    V, bos, eos = 8, 0, 7
    dec = torch.full((V,), -1.0)
    dec[bos] = NEG
    dec[eos] = -6.0
    out = beam_search({"dec": (TableScorer(dec.log_softmax(-1)), 1.0)}, 1, 2, bos, eos, 5,
                      partial_scorers={"ctc": (EosOnlyPartial(eos), 1.0)}, pre_beam_size=3,
                      eos_always_scored=eos_always_scored)
    lengths = [len(h["labels"]) for h in out[0]]
    if eos_always_scored:
        assert lengths[0] == 1
    else:
        assert min(lengths) == 5  # EOS never entered the pre-beam: every hypothesis hit max_len
