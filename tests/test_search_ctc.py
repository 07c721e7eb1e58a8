import itertools
import math

import pytest
import torch

from llmasr.search.beam_search import beam_search
from llmasr.search.ctc import CTCSearchStats, ctc_beam_search, ctc_greedy_search, soft_collapse
from llmasr.search.ctc_prefix_scorer import CTCPrefixScorer
from llmasr.search.joint_ctc import joint_label_sync_search, joint_time_sync_search
from llmasr.search.nbest import best_hypotheses, read_nbest, write_nbest
from llmasr.search.scorers import TableScorer

torch.set_num_threads(1)
BLANK = 0


def _collapse(path):
    out, prev = [], None
    for p in path:
        if p != prev and p != BLANK:
            out.append(p)
        prev = p
    return tuple(out)


def _brute(lp, T):
    """Sum over all alignments: full-sequence probs and prefix probs (sequences starting with a prefix)."""
    V = lp.shape[-1]
    full = {}
    for path in itertools.product(range(V), repeat=T):
        s = float(sum(lp[t, path[t]] for t in range(T)))
        y = _collapse(path)
        full[y] = math.log(math.exp(full.get(y, -math.inf)) + math.exp(s)) if y in full else s
    return full


def _prefix_prob(lp, T, prefix):
    """p(prefix is a prefix of the output, emitted by frame T) = sum over paths whose collapse starts with it."""
    V = lp.shape[-1]
    tot = 0.0
    for path in itertools.product(range(V), repeat=T):
        if _collapse(path)[: len(prefix)] == tuple(prefix):
            tot += math.exp(float(sum(lp[t, path[t]] for t in range(T))))
    return math.log(tot)


@pytest.fixture
def lp():
    torch.manual_seed(0)
    return torch.randn(2, 4, 3).log_softmax(-1)  # [B, T, V]


def test_prefix_scorer_matches_brute_force(lp):
    lengths = torch.tensor([4, 3])
    eos = 2  # label 2 doubles as EOS only for the full-sequence check below
    for b in range(2):
        T = int(lengths[b])
        full = _brute(lp[b], T)
        sc = CTCPrefixScorer(lp[b:b + 1], lengths[b:b + 1], blank=BLANK, eos=99)
        st = sc.initial_state(torch.tensor([0]))
        # prefix (1,), then (1, 2), then (1, 2, 1)
        acc = 0.0
        for i, lab in enumerate([1, 2, 1]):
            s, nst = sc.score_partial(st, torch.tensor([0]), torch.tensor([[lab, 1, 2]]))
            acc += float(s[0, 0])
            # prefix prob: some path collapses to a sequence starting with the prefix; r^n ends with it
            assert acc == pytest.approx(_prefix_prob(lp[b], T, [1, 2, 1][: i + 1]), abs=1e-4)
            st = sc.select(nst, torch.tensor([0]))
        # complete hypothesis (1, 2, 1): prefix + final = full sequence prob
        total = acc + float(sc.final_score(st)[0])
        assert total == pytest.approx(full[(1, 2, 1)], abs=1e-4)
    del eos


def test_prefix_scorer_eos_candidate(lp):
    sc = CTCPrefixScorer(lp[:1], torch.tensor([4]), blank=BLANK, eos=2)
    st = sc.initial_state(torch.tensor([0]))
    s, nst = sc.score_partial(st, torch.tensor([0]), torch.tensor([[1]]))
    st = sc.select(nst, torch.tensor([0]))
    s2, _ = sc.score_partial(st, torch.tensor([1]), torch.tensor([[2]]))  # EOS
    assert float(s[0, 0] + s2[0, 0]) == pytest.approx(_brute(lp[0], 4)[(1,)], abs=1e-4)


def test_greedy():
    lp = torch.full((1, 6, 3), -10.0)
    for t, lab in enumerate([1, 1, 0, 1, 2, 2]):
        lp[0, t, lab] = 0.0
    assert ctc_greedy_search(lp, torch.tensor([6]), BLANK) == [[1, 1, 2]]
    assert ctc_greedy_search(lp, torch.tensor([2]), BLANK) == [[1]]


def test_ctc_beam_search_exact_probabilities(lp):
    """With a beam over all prefixes the N-best scores are the exact sequence probabilities."""
    out = ctc_beam_search(lp, torch.tensor([4, 3]), blank=BLANK, beam_size=100, nbest=100)
    for b, T in enumerate([4, 3]):
        full = _brute(lp[b], T)
        assert len(out[b]) == len(full)
        for h in out[b]:
            assert h["scores"]["ctc"] == pytest.approx(full[tuple(h["labels"])], abs=1e-4)
        assert tuple(out[b][0]["labels"]) == max(full, key=full.get)


def test_ctc_beam_search_scorer_prior_and_hook(lp):
    V = 3
    bigram = torch.randn(V, V).log_softmax(-1)
    calls = []

    def hook(t, beams):
        calls.append(t)
        for beam in beams:
            for h in beam:
                h.user_state = t

    log_prior = torch.tensor([-0.1, -1.0, -2.0])
    out = ctc_beam_search(lp, torch.tensor([4, 4]), blank=BLANK, beam_size=50, nbest=50, bos=0,
                          scorers={"lm": (TableScorer(bigram), 0.5)}, log_prior=log_prior, prior_scale=0.3,
                          hook=hook, hook_interval=2)
    assert calls == [1, 3]
    for h in out[0]:
        labs = [0] + h["labels"]
        lm = sum(float(bigram[a, c]) for a, c in zip(labs[:-1], labs[1:]))
        prior = sum(float(log_prior[c]) for c in h["labels"])
        assert h["scores"]["lm"] == pytest.approx(lm, abs=1e-4)
        assert h["scores"]["prior"] == pytest.approx(prior, abs=1e-4)
        assert h["score"] == pytest.approx(h["scores"]["ctc"] + 0.5 * lm - 0.3 * prior, abs=1e-4)
    scores = [h["score"] for h in out[0]]
    assert scores == sorted(scores, reverse=True)


def test_soft_collapse_keeps_best_path():
    lp = torch.full((1, 7, 3), -9.0)
    for t, lab in enumerate([1, 1, 0, 0, 1, 2, 2]):
        lp[0, t, lab] = 0.0
    lp = lp.log_softmax(-1)
    c, L = soft_collapse(lp, torch.tensor([7]), blank=BLANK, blank_threshold=0.9)
    assert int(L[0]) == 4
    assert ctc_greedy_search(c, L, BLANK) == [[1, 1, 2]]


def _lm(V, seed):
    g = torch.Generator().manual_seed(seed)
    return TableScorer(torch.randn(V, V, generator=g).log_softmax(-1))


def _brute_label_sync(table, bos, eos, max_len, V):
    best = {}
    for L in range(max_len):
        for seq in itertools.product([v for v in range(V) if v not in (bos, eos)], repeat=L):
            labs = [bos] + list(seq) + [eos]
            best[seq] = sum(float(table[a, c]) for a, c in zip(labs[:-1], labs[1:]))
    return best


def test_beam_search_finds_best_and_records_scores():
    V, bos, eos = 4, 0, 3
    sc = _lm(V, 1)
    sc.table[:, bos] = -1e9  # BOS is never emitted
    out = beam_search({"am": (sc, 1.0)}, 2, 20, bos, eos, 3)
    ref = _brute_label_sync(sc.table, bos, eos, 3, V)
    assert tuple(out[0][0]["labels"]) == max(ref, key=ref.get)
    for h in out[0]:
        if len(h["labels"]) == 3 or h["score"] < -1e6:  # stopped at max_len without EOS / emitted BOS
            continue
        assert h["score"] == pytest.approx(ref[tuple(h["labels"])], abs=1e-4)
        assert h["scores"]["am"] == pytest.approx(h["score"], abs=1e-4)
        assert h["scores"]["length"] == len(h["labels"])


def test_joint_ctc_scale_zero_equals_plain(lp):
    V, bos, eos = 3, 0, 2
    sc = _lm(V, 2)
    plain = beam_search({"am": (sc, 1.0)}, 2, 3, bos, eos, 4)
    joint = joint_label_sync_search({"am": (sc, 1.0)}, lp, torch.tensor([4, 3]), ctc_scale=0.0, blank=BLANK,
                                    bos=bos, eos=eos, beam_size=3, max_len=4)
    assert [[h["labels"] for h in u] for u in plain] == [[h["labels"] for h in u] for u in joint]


def test_joint_label_sync_ctc_score_is_sequence_prob(lp):
    """Joint AED+CTC: the recorded ctc score of an ended hypothesis is log p_ctc(labels) (EOS = full prob)."""
    V = 4  # 0 blank/bos, 1..2 labels, 3 eos (never emitted by CTC)
    x = torch.cat([lp, torch.full((2, 4, 1), -1e4)], -1).log_softmax(-1)
    sc = _lm(V, 3)
    out = joint_label_sync_search({"am": (sc, 1.0)}, x, torch.tensor([4, 3]), ctc_scale=0.5, blank=0,
                                  bos=0, eos=3, beam_size=4, max_len=5, pre_beam_size=4)
    for b, T in enumerate([4, 3]):
        full = _brute(x[b, :, :3].log_softmax(-1), T)
        for h in out[b]:
            if len(h["labels"]) < 5:
                assert h["scores"]["ctc"] == pytest.approx(full[tuple(h["labels"])], abs=1e-3)
            assert h["score"] == pytest.approx(h["scores"]["am"] + 0.5 * h["scores"]["ctc"], abs=1e-3)


def test_joint_time_sync_adds_model_score(lp):
    sc = _lm(4, 4)
    x = torch.cat([lp, torch.full((2, 4, 1), -1e4)], -1).log_softmax(-1)
    out = joint_time_sync_search(sc, x, torch.tensor([4, 3]), model_scale=0.7, blank=0, bos=0, eos=3,
                                 beam_size=8, label_topk=2)
    for h in out[0]:
        labs = [0] + h["labels"] + [3]
        am = sum(float(sc.table[a, c]) for a, c in zip(labs[:-1], labs[1:]))
        assert h["scores"]["am"] == pytest.approx(am, abs=1e-4)
        assert h["score"] == pytest.approx(h["scores"]["ctc"] + 0.7 * am, abs=1e-4)


def _peaky(B, T, V, seed, label_frac=0.4):
    """Peaky CTC log-probs like a trained model: confident blank, label spikes of 1-2 frames with a competitor."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    for b in range(B):
        t = 0
        while t < T:
            if float(torch.rand((), generator=g)) < label_frac:
                lab, comp = torch.randint(1, V, (2,), generator=g).tolist()
                for tt in range(t, min(T, t + 1 + int(float(torch.rand((), generator=g)) < 0.3))):
                    logits[b, tt, lab] += 9.0
                    logits[b, tt, comp] += 5.0
                    logits[b, tt, BLANK] += 4.0
                    t = tt
            else:
                logits[b, t, BLANK] += 12.0
            t += 1
    return logits.log_softmax(-1)


def _speech_llm_scorer(V, B, seed=0):
    """SpeechLLMScorer of a random tiny prefix-interface speech LLM (stand-in encoder) over labels 0..V (EOS = V)."""
    from torch import nn

    from llmasr.models.llm import tiny_random_qwen2
    from llmasr.models.speech_llm import SpeechLLMConfig
    from llmasr.models.speech_llm_modules import SpeechLLM
    from llmasr.search.speech_llm_scorer import SpeechLLMScorer

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 8)

        def forward(self, audio, lens):
            t = audio.shape[1] // 4
            return torch.tanh(self.lin(audio[:, : t * 4].reshape(audio.shape[0], t, 4))), lens // 4

    torch.manual_seed(seed)
    llm = tiny_random_qwen2(V + 1, bos_id=BLANK, eos_id=V)
    cfg = SpeechLLMConfig(adapter_k=2).resolve(encoder_dim=8, bos_id=BLANK, eos_id=V, prompt_pre=(1,), prompt_post=(2,))
    sc = SpeechLLMScorer(SpeechLLM(cfg, Encoder(), llm).eval())
    sc.set_audio(torch.randn(B, 48), torch.tensor([48, 40, 32][:B]))
    return sc


def _same(a, b, abs_tol=1e-4):
    """Same N-best label sequences per utterance and the same scores."""
    assert [[h["labels"] for h in u] for u in a] == [[h["labels"] for h in u] for u in b]
    for ua, ub in zip(a, b):
        for ha, hb in zip(ua, ub):
            assert ha["score"] == pytest.approx(hb["score"], abs=abs_tol)
            for k in ha["scores"]:
                assert ha["scores"][k] == pytest.approx(hb["scores"][k], abs=abs_tol)


NAIVE = dict(score_new_labels_only=False, batch_size=1, batch_hyps=False)


@pytest.mark.parametrize("opts", [dict(score_new_labels_only=False), dict(batch_size=1), dict(batch_size=2),
                                  dict(batch_hyps=False), NAIVE])
def test_time_sync_exact_options_same_results_table_scorer(opts):
    """Scoring only new labels and batching do not change results (exact scorer, non-peaky posteriors)."""
    V = 5
    x = torch.randn(3, 9, V, generator=torch.Generator().manual_seed(5)).mul(2).log_softmax(-1)
    lens = torch.tensor([9, 7, 4])
    table = torch.randn(V + 1, V + 1, generator=torch.Generator().manual_seed(6)).log_softmax(-1)
    kw = dict(model_scale=0.6, blank=BLANK, bos=0, eos=V, beam_size=4, nbest=4)
    ref = joint_time_sync_search(TableScorer(table), x, lens, **kw)
    out = joint_time_sync_search(TableScorer(table), x, lens, **kw, **opts)
    assert len(out) == 3 and all(1 <= len(u) <= 4 for u in out)
    _same(ref, out, abs_tol=1e-9)


@pytest.mark.parametrize("blank", [0, 2])
def test_batched_frame_step_equals_one_utterance_at_a_time(blank):
    """Utterances of different lengths searched in one batched step per frame (top-k pruning, prior, length
    reward, recombination of equal prefixes) give exactly the results of searching them one at a time."""
    V = 6
    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 10, V, generator=g).mul(1.5).log_softmax(-1)
    lens = torch.tensor([10, 3, 7, 1])
    table = torch.randn(V + 1, V + 1, generator=g).log_softmax(-1)
    kw = dict(blank=blank, beam_size=5, nbest=5, scorers={"lm": (TableScorer(table), 0.4)}, bos=blank, eos=V,
              log_prior=torch.randn(V, generator=g).log_softmax(-1), prior_scale=0.3, length_reward=0.8,
              label_topk=3)
    batched = ctc_beam_search(x, lens, **kw)
    single = ctc_beam_search(x, lens, batch_size=1, **kw)
    assert [[h["labels"] for h in u] for u in batched] == [[h["labels"] for h in u] for u in single]
    assert [[h["score"] for h in u] for u in batched] == [[h["score"] for h in u] for u in single]
    assert all(blank not in h["labels"] for u in batched for h in u)
    assert max(len(h["labels"]) for h in batched[0]) >= 2 and len(batched[3]) >= 2


def test_time_sync_naive_equals_optimised_speech_llm_and_counts_work():
    """Speech LLM joint search: naive (every hypothesis scored every frame, one call per hypothesis and
    utterance) = optimised; the counters show far fewer scored rows and calls when optimised."""
    torch.set_num_threads(1)
    V, B = 20, 3
    sc = _speech_llm_scorer(V, B)
    x = _peaky(B, 12, V, seed=1, label_frac=0.5)
    lens = torch.tensor([12, 10, 7])
    kw = dict(model_scale=0.5, blank=BLANK, bos=BLANK, eos=V, beam_size=4, nbest=3)
    stats = {}
    results = {}
    for name, opts in [("opt", {}), ("all_rows", dict(score_new_labels_only=False)), ("per_utt", dict(batch_size=1)),
                       ("per_hyp", dict(batch_hyps=False)), ("naive", NAIVE)]:
        stats[name] = CTCSearchStats()
        results[name] = joint_time_sync_search(sc, x, lens, stats=stats[name], **kw, **opts)
        _same(results["opt"], results[name])
    s = stats
    assert s["opt"].frames == s["naive"].frames == int(lens.sum())
    assert s["opt"].scored_rows < s["all_rows"].scored_rows == s["naive"].scored_rows
    assert s["opt"].scored_rows == s["per_utt"].scored_rows == s["per_hyp"].scored_rows
    assert s["opt"].scorer_calls < s["per_utt"].scorer_calls < s["per_hyp"].scorer_calls == s["per_hyp"].scored_rows
    assert s["naive"].scorer_calls == s["naive"].scored_rows > 2 * s["opt"].scored_rows


def test_naive_rows_are_every_hypothesis_every_frame():
    """Without score_new_labels_only every hypothesis of every active beam is scored per frame (+ BOS rows)."""
    V = 4
    x = torch.randn(2, 6, V, generator=torch.Generator().manual_seed(2)).log_softmax(-1)
    lens = torch.tensor([6, 3])
    sizes = []

    def hook(t, beams):
        sizes.append(sum(len(beam) for b, beam in enumerate(beams) if t < int(lens[b])))

    st = CTCSearchStats()
    ctc_beam_search(x, lens, blank=BLANK, beam_size=3, scorers={"lm": (_lm(V, 7), 0.5)}, bos=0,
                    score_new_labels_only=False, batch_hyps=False, hook=hook, stats=st)
    assert st.scored_rows == st.scorer_calls == 2 + sum(sizes)
    assert st.frames == 9


def test_label_topk_and_soft_collapse_keep_best_on_peaky_example():
    """On peaky posteriors top-k label pruning and soft collapse find the same best hypothesis as the full
    search while searching fewer frames / expansions and scoring fewer rows."""
    torch.set_num_threads(1)
    V, B = 20, 3
    sc = _speech_llm_scorer(V, B)
    x = _peaky(B, 30, V, seed=3)
    lens = torch.tensor([30, 26, 20])
    kw = dict(model_scale=0.3, blank=BLANK, bos=BLANK, eos=V, beam_size=4, nbest=1)
    full_stats = CTCSearchStats()
    full = joint_time_sync_search(sc, x, lens, stats=full_stats, **kw)
    assert all(len(u[0]["labels"]) >= 5 for u in full)
    both = dict(label_topk=3, soft_collapse_threshold=0.99)
    for opts in [dict(label_topk=3), dict(soft_collapse_threshold=0.99), both]:
        st = CTCSearchStats()
        res = joint_time_sync_search(sc, x, lens, stats=st, **kw, **opts)
        assert [u[0]["labels"] for u in res] == [u[0]["labels"] for u in full], opts
        assert st.expansions < full_stats.expansions / 2
        assert st.scored_rows <= full_stats.scored_rows
        if "soft_collapse_threshold" in opts:
            assert st.frames < 0.8 * full_stats.frames


def test_soft_collapse_keeps_peak_of_a_label_run():
    """A run of frames with the same label keeps its most confident frame (keep="max") or its first one."""
    lp = torch.full((1, 4, 3), -9.0)
    lp[0, 0, 0] = 0.0
    lp[0, 1, 1], lp[0, 1, 0] = 0.0, -0.5  # onset: label 1 barely above blank
    lp[0, 2, 1] = 0.0
    lp[0, 3, 0] = 0.0
    lp = lp.log_softmax(-1)
    c, L = soft_collapse(lp, torch.tensor([4]), blank=BLANK, blank_threshold=0.99)
    assert int(L[0]) == 3 and torch.equal(c[0, 1], lp[0, 2])
    c, L = soft_collapse(lp, torch.tensor([4]), blank=BLANK, blank_threshold=0.99, keep="first")
    assert int(L[0]) == 3 and torch.equal(c[0, 1], lp[0, 1])


def test_nbest_roundtrip(tmp_path):
    nb = {"a": [{"text": "x y", "labels": [1, 2], "scores": {"ctc": -1.0}, "score": -1.0}], "b": []}
    p = str(tmp_path / "n.json.gz")
    write_nbest(nb, p)
    assert read_nbest(p) == nb
    assert best_hypotheses(nb) == {"a": "x y", "b": ""}
    with pytest.raises(ValueError):
        write_nbest({"a": [{"labels": []}]}, p)
