"""Label-wise vs delayed fusion vs rescoring on a tiny random LLM and random CTC posteriors."""
import pytest
import torch

from llmasr.models.llm import score_sequences, tiny_random_qwen2
from llmasr.search.ctc_fusion import SearchStats
from llmasr.search.delayed_scorer import SameUnitsConverter, WordConverter, delayed_fusion_search
from llmasr.search.labelwise_fusion import ctc_labelwise_fusion_search
from llmasr.search.llm_scorer import LLMScorer
from llmasr.search.rescoring import rescore_nbest

BOS, EOS = 1, 2
LABEL_TO_TOKEN = [-1, 3, 4, 5]  # AM labels (0 = blank) -> LLM tokens
LM_SCALE, PRIOR_SCALE, LENGTH_REWARD = 0.7, 0.3, 0.2
NEG_INF = float("-inf")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_random_qwen2(8, bos_id=BOS, eos_id=EOS, seed=5).eval()


def _ctc(frames, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return (2.0 * torch.randn(frames, vocab, generator=g)).log_softmax(-1)


def _prior(vocab):
    return torch.linspace(1.0, 2.0, vocab).log_softmax(-1)


def _by_labels(nbest):
    return {tuple(h["labels"]): h for h in nbest}


def test_delayed_k1_same_units_equals_labelwise(model):
    ctc = _ctc(4, 4, seed=1)
    kw = dict(blank=0, beam_size=1000, label_topk=3, lm_scale=LM_SCALE, log_prior=_prior(4),
              prior_scale=PRIOR_SCALE, length_reward=LENGTH_REWARD, nbest=1000)
    lw = ctc_labelwise_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS,
                                                               label_to_token=torch.tensor(LABEL_TO_TOKEN)), **kw)[0]
    dl = delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS),
                               converter=SameUnitsConverter(LABEL_TO_TOKEN), delay=1, **kw)[0]
    a, b = _by_labels(lw), _by_labels(dl)
    assert len(a) > 30 and set(a) == set(b)  # no pruning: every prefix reachable in 4 frames
    for key in a:
        for field in ("ctc", "lm", "prior"):
            assert a[key]["scores"][field] == pytest.approx(b[key]["scores"][field], abs=1e-4)
        assert a[key]["score"] == pytest.approx(b[key]["score"], abs=1e-4)
    # the LM score of every hypothesis is the full-forward score of its tokens + EOS
    keys = list(a)
    ref = score_sequences(model, [[LABEL_TO_TOKEN[x] for x in k] for k in keys], BOS, EOS)
    for key, r in zip(keys, ref):
        assert a[key]["scores"]["lm"] == pytest.approx(r, abs=1e-4)
    assert [h["labels"] for h in lw[:3]] == [h["labels"] for h in dl[:3]]


@pytest.mark.parametrize("delay", [1, 3])
def test_pruned_searches_keep_consistent_scores(model, delay):
    ctc = _ctc(12, 4, seed=2)
    kw = dict(blank=0, beam_size=3, lm_scale=LM_SCALE, log_prior=_prior(4), prior_scale=PRIOR_SCALE, nbest=3)
    stats = SearchStats()
    out = delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS),
                                converter=SameUnitsConverter(LABEL_TO_TOKEN), delay=delay, stats=stats, **kw)[0]
    ref = score_sequences(model, [[LABEL_TO_TOKEN[x] for x in h["labels"]] for h in out], BOS, EOS)
    prior = _prior(4)
    for h, r in zip(out, ref):
        assert h["scores"]["lm"] == pytest.approx(r, abs=1e-4)
        assert h["scores"]["prior"] == pytest.approx(float(prior[h["labels"]].sum()), abs=1e-5)
    assert stats.llm_forward_calls <= 12 // delay + 1


def test_delayed_only_at_end_equals_rescoring(model):
    ctc = _ctc(10, 4, seed=3)
    kw = dict(blank=0, beam_size=5, log_prior=_prior(4), length_reward=LENGTH_REWARD, nbest=5)
    conv = SameUnitsConverter(LABEL_TO_TOKEN)
    fused = delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS), converter=conv,
                                  delay=None, lm_scale=LM_SCALE, prior_scale=PRIOR_SCALE, **kw)[0]
    plain = delayed_fusion_search(ctc, llm_scorer=None, converter=conv, lm_scale=0.0, prior_scale=0.0, **kw)[0]
    assert {tuple(h["labels"]) for h in fused} == {tuple(h["labels"]) for h in plain}
    rescored = rescore_nbest({"utt": plain}, model, lambda h: conv(tuple(h["labels"]), True)[0], bos=BOS, eos=EOS,
                             lm_scale=LM_SCALE, prior_scale=PRIOR_SCALE, length_reward=LENGTH_REWARD)["utt"]
    assert [h["labels"] for h in rescored] == [h["labels"] for h in fused]
    for r, f in zip(rescored, fused):
        assert r["score"] == pytest.approx(f["score"], abs=1e-4)
        assert r["scores"]["lm"] == pytest.approx(f["scores"]["lm"], abs=1e-4)


@pytest.mark.parametrize("delay", [1, 2, 5, None])
def test_word_converter_with_different_tokenizer(model, delay):
    # AM pieces; the "LLM tokenizer" spells words with one token per character a..c -> 3..5 (+ boundary 6)
    from llmasr.text.units import AmUnits

    vocab = ["<blank>", "\u2581a", "b", "\u2581c", "a"]
    char_ids = {"a": 3, "b": 4, "c": 5}

    class Encoder:
        def encode_words(self, words, first_index=0):
            return [t for k, w in enumerate(words)
                    for t in ([] if first_index + k == 0 else [6]) + [char_ids[ch] for ch in w]]

    conv = WordConverter(AmUnits(vocab), Encoder())
    assert conv((1, 2, 3, 4), False) == ([3, 4], 2)  # "ab" completed, "ca" pending
    assert conv((1, 2, 3, 0, 4), False) == ([3, 4], 2)
    assert conv((1, 2, 3, 4), True) == ([3, 4, 6, 5, 3], 4)
    assert conv.text((1, 2, 3, 4)) == "ab ca"
    ctc = _ctc(9, 5, seed=4)
    out = delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS), converter=conv,
                                blank=0, beam_size=4, lm_scale=LM_SCALE, log_prior=_prior(5), prior_scale=PRIOR_SCALE,
                                delay=delay, nbest=4, labels_to_text=conv.text)[0]
    ref = score_sequences(model, [conv(tuple(h["labels"]), True)[0] for h in out], BOS, EOS)
    for h, r in zip(out, ref):
        assert h["scores"]["lm"] == pytest.approx(r, abs=1e-4)
        assert h["scores"]["prior"] == pytest.approx(float(_prior(5)[h["labels"]].sum()), abs=1e-5)
    assert out[0]["score"] >= out[-1]["score"]


@pytest.mark.parametrize("labelwise,delay", [(True, None), (False, 1), (False, 4), (False, None)])
def test_batch_of_utterances_equals_one_by_one(model, labelwise, delay):
    lengths = [7, 3, 10]
    utts = [_ctc(n, 4, seed=10 + i) for i, n in enumerate(lengths)]
    padded = torch.full((3, 10, 4), -5.0)
    for i, u in enumerate(utts):
        padded[i, : len(u)] = u
    kw = dict(blank=0, beam_size=3, lm_scale=LM_SCALE, log_prior=_prior(4), prior_scale=PRIOR_SCALE, nbest=3,
              length_reward=LENGTH_REWARD)

    def search(x, lens, stats):
        scorer = LLMScorer(model, bos_id=BOS, eos_id=EOS, label_to_token=torch.tensor(LABEL_TO_TOKEN))
        if labelwise:
            return ctc_labelwise_fusion_search(x, lens, llm_scorer=scorer, stats=stats, **kw)
        return delayed_fusion_search(x, lens, llm_scorer=scorer, converter=SameUnitsConverter(LABEL_TO_TOKEN),
                                     delay=delay, stats=stats, **kw)

    batch_stats, single_stats = SearchStats(), SearchStats()
    batched = search(padded, torch.tensor(lengths), batch_stats)
    singles = [search(u, None, single_stats)[0] for u in utts]
    for bo, so in zip(batched, singles):
        assert [h["labels"] for h in bo] == [h["labels"] for h in so]
        for x, y in zip(bo, so):
            assert x["score"] == pytest.approx(y["score"], abs=1e-4)
    assert batch_stats.llm_forward_calls < single_stats.llm_forward_calls  # one call serves all utterances


@pytest.mark.parametrize("delay", [1, 2, None])
def test_delayed_fusion_equals_brute_force(model, delay):
    """Without pruning, every label sequence's fused score is exact for any delay: CTC = sum over all alignments,
    LM = full-forward score of its word tokens + EOS, prior of all its labels, reward per label."""
    import itertools
    import math

    from llmasr.text.units import AmUnits

    vocab = ["<blank>", "\u2581a", "b", "\u2581c"]
    char_ids = {"a": 3, "b": 4, "c": 5}

    class Encoder:
        def encode_words(self, words, first_index=0):
            return [t for k, w in enumerate(words)
                    for t in ([] if first_index + k == 0 else [6]) + [char_ids[ch] for ch in w]]

    conv = WordConverter(AmUnits(vocab), Encoder())
    T, V = 4, 4
    ctc = _ctc(T, V, seed=7)
    prior = _prior(V)
    ctc_ref = {}
    for path in itertools.product(range(V), repeat=T):
        seq, prev = [], None
        for p in path:
            if p != prev and p != 0:
                seq.append(p)
            prev = p
        s = math.exp(float(sum(ctc[t, p] for t, p in enumerate(path))))
        ctc_ref[tuple(seq)] = ctc_ref.get(tuple(seq), 0.0) + s
    keys = list(ctc_ref)
    lm_ref = dict(zip(keys, score_sequences(model, [conv(k, True)[0] for k in keys], BOS, EOS)))
    stats = SearchStats()
    out = delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS), converter=conv, blank=0,
                                beam_size=1000, label_topk=V - 1, lm_scale=LM_SCALE, log_prior=prior,
                                prior_scale=PRIOR_SCALE, length_reward=LENGTH_REWARD, delay=delay, nbest=1000,
                                stats=stats)[0]
    got = _by_labels(out)
    assert set(got) == set(keys)
    for k in keys:
        total = (math.log(ctc_ref[k]) + LM_SCALE * lm_ref[k] - PRIOR_SCALE * float(prior[list(k)].sum())
                 + LENGTH_REWARD * len(k))
        assert got[k]["scores"]["ctc"] == pytest.approx(math.log(ctc_ref[k]), abs=1e-4)
        assert got[k]["scores"]["lm"] == pytest.approx(lm_ref[k], abs=1e-4)
        assert got[k]["score"] == pytest.approx(total, abs=1e-4)
    assert [h["score"] for h in out] == sorted((h["score"] for h in out), reverse=True)
    # BOS, then at most one call per flush (none while no word is complete)
    assert 2 <= stats.llm_forward_calls <= 1 + (T // delay if delay else 1)


class _CountingLLM(torch.nn.Module):
    """Wraps a causal LM and counts, independently of the scorer, its forward calls and the real (unpadded)
    tokens fed to them."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = self.tokens = 0

    def forward(self, **kwargs):
        self.calls += 1
        self.tokens += int(kwargs["attention_mask"][:, -kwargs["input_ids"].shape[1]:].sum())
        return self.model(**kwargs)


def _counted_search(model, ctc, lengths, delay, beam=3):
    """(n-best of every final hypothesis, SearchStats, counting wrapper) of one label-wise (delay "labelwise") or
    delayed fusion search."""
    llm = _CountingLLM(model)
    stats = SearchStats()
    kw = dict(blank=0, beam_size=beam, lm_scale=LM_SCALE, log_prior=_prior(4), prior_scale=PRIOR_SCALE,
              length_reward=LENGTH_REWARD, nbest=beam, stats=stats)
    if delay == "labelwise":
        out = ctc_labelwise_fusion_search(ctc, lengths, llm_scorer=LLMScorer(
            llm, bos_id=BOS, eos_id=EOS, label_to_token=torch.tensor(LABEL_TO_TOKEN)), **kw)
    else:
        out = delayed_fusion_search(ctc, lengths, llm_scorer=LLMScorer(llm, bos_id=BOS, eos_id=EOS),
                                    converter=SameUnitsConverter(LABEL_TO_TOKEN), delay=delay, **kw)
    assert (stats.llm_forward_calls, stats.llm_forward_tokens) == (llm.calls, llm.tokens)  # exact, not estimated
    return out, stats, llm


def _with_blank_end(utts):
    """[B, T, 4] padded log-probs of ``utts`` whose last frames are certain blanks, and their lengths."""
    lengths = [len(u) + 1 for u in utts]
    x = torch.zeros(len(utts), max(lengths), 4)
    for i, u in enumerate(utts):
        x[i, : len(u)] = u
        x[i, len(u)] = torch.tensor([0.0, NEG_INF, NEG_INF, NEG_INF])
    return x, torch.tensor(lengths)


def test_llm_calls_counted_exactly_per_delay(model):
    """Two utterances (23 and 12 frames) searched together: the counts equal the model's own; delay None calls the
    LLM once for the BOS rows and once for all final hypotheses; k=5 once per 5 frames (the shorter utterance's
    final beam joins the next of these calls) plus once at the end."""
    ctc, lengths = _with_blank_end([_ctc(22, 4, seed=20), _ctc(11, 4, seed=21)])
    out, stats, _ = _counted_search(model, ctc, lengths, None)
    assert stats.llm_forward_calls == 2
    assert stats.llm_forward_tokens == 2 + sum(len(h["labels"]) + 1 for u in out for h in u)  # BOS; tokens + EOS
    _, stats, _ = _counted_search(model, ctc, lengths, 5)
    assert stats.llm_forward_calls == 1 + 4 + 1  # BOS, after frames 5, 10, 15, 20, after the last frame (23)
    _, labelwise, _ = _counted_search(model, ctc, lengths, "labelwise")
    assert labelwise.llm_forward_calls > stats.llm_forward_calls


def test_delayed_k1_scores_what_labelwise_scores(model):
    """Without pruning delayed fusion at k=1 keeps the hypotheses of label-wise fusion and scores the same new
    labels in the same frames; it adds the EOS of the final hypotheses (label-wise reads them from the last
    call), here in one more call, as the last frames are certain blanks where label-wise scores nothing."""
    ctc, lengths = _with_blank_end([_ctc(4, 4, seed=22), _ctc(2, 4, seed=23)])
    k1, s1, _ = _counted_search(model, ctc, lengths, 1, beam=1000)
    lw, slw, _ = _counted_search(model, ctc, lengths, "labelwise", beam=1000)
    assert [sorted(h["labels"] for h in u) for u in k1] == [sorted(h["labels"] for h in u) for u in lw]
    n_final = sum(len(u) for u in k1)
    assert n_final > 40
    assert s1.llm_forward_calls == slw.llm_forward_calls + 1 == 1 + 4 + 1  # BOS, frames 1-4, the EOS call
    assert s1.llm_forward_tokens == slw.llm_forward_tokens + n_final


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_wide_delayed_beam_at_k1_equals_labelwise(model, seed):
    """With every CTC extension kept until the LLM call and the prune to the beam after it, delayed fusion at k=1 over
    the same units is label-wise fusion: the same beam-3 N-best lists and scores under real pruning."""
    ctc = _ctc(14, 4, seed=seed)
    kw = dict(blank=0, beam_size=3, lm_scale=LM_SCALE, log_prior=_prior(4), prior_scale=PRIOR_SCALE,
              length_reward=LENGTH_REWARD, nbest=3)
    lw = ctc_labelwise_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS,
                                                               label_to_token=torch.tensor(LABEL_TO_TOKEN)), **kw)[0]
    wide, narrow = (delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS),
                                          converter=SameUnitsConverter(LABEL_TO_TOKEN), delay=1,
                                          delayed_beam_size=size, **kw)[0] for size in (1000, None))
    assert [h["labels"] for h in wide] == [h["labels"] for h in lw]
    for a, b in zip(wide, lw):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    assert len(narrow) == 3 and all(len(h["labels"]) > 0 for h in narrow)


def test_wide_delayed_beam_finds_what_the_llm_prefers(model):
    """Between calls the narrow beam keeps CTC's best only; the wide one keeps more for the LLM to choose from: on
    these random posteriors its best fused score is never worse and often better (beam search is not monotonic in
    the beam in general)."""
    better = 0
    for seed in range(20, 30):
        ctc = _ctc(12, 4, seed=seed)
        kw = dict(blank=0, beam_size=2, lm_scale=3.0, nbest=2, delay=4)
        narrow, wide = (delayed_fusion_search(ctc, llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS),
                                              converter=SameUnitsConverter(LABEL_TO_TOKEN),
                                              delayed_beam_size=size, **kw)[0][0]["score"] for size in (None, 64))
        assert wide >= narrow - 1e-6
        better += wide > narrow + 1e-6
    assert better >= 3


def test_delayed_beam_smaller_than_beam_is_refused(model):
    from llmasr.search.options import CtcBeam

    with pytest.raises(ValueError, match="delayed_beam_size"):
        delayed_fusion_search(_ctc(4, 4, seed=1), llm_scorer=LLMScorer(model, bos_id=BOS, eos_id=EOS),
                              converter=SameUnitsConverter(LABEL_TO_TOKEN), blank=0, beam_size=4, delayed_beam_size=2)
    with pytest.raises(ValueError, match="delayed_beam_size"):
        CtcBeam(beam_size=8, delayed_beam_size=4)
    assert "delayed_beam_size" not in CtcBeam().hashed_fields()
    assert CtcBeam(delayed_beam_size=32).hashed_fields()["delayed_beam_size"] == 32


def test_first_label_after_a_call_is_scored_from_that_calls_distribution(model):
    """Between calls a hypothesis over the same units carries the LLM score of its first unconsumed label, read from
    the distribution the last call computed (no call of its own); the next call then counts it exactly once."""
    from llmasr.search.ctc import Hypothesis
    from llmasr.search.delayed_scorer import DelayedLLMScorer

    llm = LLMScorer(model, bos_id=BOS, eos_id=EOS)
    scorer = DelayedLLMScorer(llm, SameUnitsConverter(LABEL_TO_TOKEN), lm_scale=LM_SCALE, delay=5, log_prior=None)
    root = Hypothesis((), pb=0.0, scores={"prior": 0.0})
    scorer.start(torch.arange(1), [root])
    calls = llm.num_forward_calls
    one = Hypothesis((2,), pnb=0.0, scores=dict(root.scores), user_state=root.user_state)
    two = Hypothesis((2, 1), pnb=0.0, scores=dict(root.scores), user_state=root.user_state)
    scorer.update(0, [[one, two]], [False])  # frame 0 of delay 5: no call
    assert llm.num_forward_calls == calls
    with torch.no_grad():
        first = model(input_ids=torch.tensor([[BOS]])).logits[0, -1].log_softmax(-1)[LABEL_TO_TOKEN[2]].item()
    assert one.extra == pytest.approx(LM_SCALE * first, abs=1e-5)
    assert two.extra == pytest.approx(LM_SCALE * first, abs=1e-5)  # only the first label is known before the call
    scorer.update(4, [[two]], [False])  # the call: both labels scored, the first once
    ref = score_sequences(model, [[LABEL_TO_TOKEN[2], LABEL_TO_TOKEN[1]]], BOS, EOS)[0]
    with torch.no_grad():
        eos = model(input_ids=torch.tensor([[BOS, LABEL_TO_TOKEN[2], LABEL_TO_TOKEN[1]]])).logits[0, -1]
    assert two.scores["lm"] == pytest.approx(ref - eos.log_softmax(-1)[EOS].item(), abs=1e-4)
    assert two.extra == pytest.approx(LM_SCALE * two.scores["lm"], abs=1e-5)
