"""The cached LLM scorer equals the full forward (incremental, variable-length batches, select, compaction)."""
import pytest
import torch

from llmasr.models.llm import score_sequences, tiny_random_qwen2
from llmasr.search.llm_scorer import LLMScorer

V, BOS, EOS = 23, 1, 2


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS, seed=3).eval()


def test_incremental_score_equals_full_forward(model):
    seqs = [[5, 7, 9, 11, 3], [4, 4], [8, 12, 13, 20, 21, 22, 6]]
    ref = score_sequences(model, seqs, BOS, EOS)
    scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS)
    for i, seq in enumerate(seqs):
        state = scorer.initial_state(torch.zeros(1, dtype=torch.long))
        logp, state = scorer.score(state, torch.tensor([BOS]))
        total = 0.0
        for tok in seq:
            total += float(logp[0, tok])
            logp, state = scorer.score(state, torch.tensor([tok]))
        total += float(scorer.final_score(state)[0])
        assert total == pytest.approx(ref[i], abs=1e-4)
    # a different sequence scores differently (the check can fail)
    assert ref[0] != pytest.approx(score_sequences(model, [[5, 7, 9, 11, 4]], BOS, EOS)[0], abs=1e-3)


@pytest.mark.parametrize("use_cache", [True, False])
def test_variable_length_advance_select_and_compaction(model, use_cache):
    seqs = [[5, 7, 9, 11, 3, 6, 8], [4, 4, 10], [8, 12, 13, 20, 21, 22, 6, 9, 9, 10]]
    ref = score_sequences(model, seqs, BOS, EOS)
    scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS, use_cache=use_cache, compact_ratio=1.2)
    state = scorer.start(torch.zeros(3, dtype=torch.long))
    totals = torch.zeros(3)
    pos = [0, 0, 0]
    chunks = [[2, 0, 1], [0, 3, 0], [1, 0, 4], [4, 0, 0], [0, 0, 5]]  # tokens consumed per row and call
    for ch in chunks:
        new = []
        for r, k in enumerate(ch):
            new.append(seqs[r][pos[r] : pos[r] + k])
            pos[r] += len(new[-1])
        sums, state = scorer.advance(state, new)
        totals += sums
        # reorder twice (identity overall) to exercise select on the cache
        perm = torch.tensor([2, 0, 1])
        state = scorer.select(scorer.select(state, perm), torch.argsort(perm))
    assert pos == [len(s) for s in seqs]
    totals += scorer.final_score(state)
    assert torch.allclose(totals, torch.tensor(ref), atol=1e-4)
    if use_cache:
        assert state.mask.shape[1] <= 1.2 * int(state.length.max()) + 4  # compaction kept the cache small


def test_select_duplicates_rows(model):
    scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS)
    state = scorer.start(torch.zeros(2, dtype=torch.long))
    _, state = scorer.advance(state, [[5, 6], [7]])
    state = scorer.select(state, torch.tensor([1, 1, 0]))
    sums, state = scorer.advance(state, [[3], [4], [3]])
    full = score_sequences(model, [[7, 3], [7, 4], [5, 6, 3]], BOS, None)
    part = score_sequences(model, [[7], [7], [5, 6]], BOS, None)
    assert torch.allclose(sums, torch.tensor(full) - torch.tensor(part), atol=1e-4)


def test_label_map(model):
    # labels 0..4, label 0 (blank) has no token
    m = torch.tensor([-1, 5, 6, 7, EOS])
    scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS, label_to_token=m)
    state = scorer.initial_state(torch.zeros(1, dtype=torch.long))
    lp, state = scorer.score(state, torch.tensor([0]))
    lp2, state = scorer.score(state, torch.tensor([2]))
    assert lp.shape == (1, 5) and lp[0, 0] == float("-inf")
    assert float(lp[0, 2]) == pytest.approx(score_sequences(model, [[6]], BOS, None)[0], abs=1e-4)
    assert state.tokens[0] == [BOS, 6]


def test_long_padded_cache_compaction(model):
    # the rows take turns: every call pads one row, the cache (> 127 positions) gets compacted
    rng = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, V, (150,), generator=rng).tolist() for _ in range(2)]
    scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS, compact_ratio=1.5)
    state = scorer.start(torch.zeros(2, dtype=torch.long))
    totals = torch.zeros(2)
    widths = []
    for i in range(300):
        row, pos = i % 2, i // 2
        sums, state = scorer.advance(state, [[seqs[0][pos]] if row == 0 else [], [seqs[1][pos]] if row == 1 else []])
        totals += sums
        widths.append(state.mask.shape[1])
    assert max(widths) <= 1.5 * 151 + 5 and widths[-1] < 300  # compacted at least once
    assert any(b < a for a, b in zip(widths, widths[1:]))
    ref = score_sequences(model, seqs, BOS, None)
    assert torch.allclose(totals, torch.tensor(ref), atol=2e-3)
