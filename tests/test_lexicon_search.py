"""Lexicon-constrained search: the word list job, the lexicon scorer, and CTC / label-synchronous searches that may
output only lexicon words."""
from __future__ import annotations

import gzip
import math
import random

import pytest
import torch
from sisyphus import tk

from llmasr.search.beam_search import beam_search
from llmasr.search.ctc import ctc_beam_search
from llmasr.search.lexicon_scorer import LexiconScorer, sentencepiece_lexicon_scorer
from llmasr.search.scorers import TableScorer
from llmasr.text.lexicon import WordListJob, read_word_list
from llmasr.text.sentencepiece import TrainSentencePieceJob

NEG = float("-inf")
# ids: 0 <unk>, 1 <s>, 2 </s>, then pieces; 9 is CTC's blank
PIECES = [None, None, None, "\u2581A", "B", "C", "\u2581C", "\u2581", "A"]
BOS, EOS, BLANK = 1, 2, 9


def spell(labels):
    return "".join(PIECES[x] for x in labels).replace("\u2581", " ").split()


def allowed(scorer, labels):
    """The labels (and EOS) the lexicon allows after ``labels``."""
    state = scorer.initial_state(torch.zeros(1))
    lp, state = scorer.score(state, torch.tensor([BOS]))
    for x in labels:
        lp, state = scorer.score(state, torch.tensor([x]))
    return {i for i in range(lp.shape[1]) if lp[0, i] == 0.0}


def test_lexicon_scorer_allows_only_prefixes_of_words_and_ends_after_complete_ones():
    scorer = LexiconScorer(["AB", "ABC", "C", "AA"], PIECES + [None], eos=EOS, bos=BOS)
    assert allowed(scorer, []) == {3, 6, 7, EOS}  # "▁A", "▁C", "▁" start a word; nothing said may end
    assert allowed(scorer, [3]) == {4, 8}  # "A" -> "AB" or "AA"; "A" alone is no word, so no EOS and no new word
    assert allowed(scorer, [3, 4]) == {5, 3, 6, 7, EOS}  # "AB": complete, or "ABC"
    assert allowed(scorer, [7]) == {8, 5}  # a lone "▁" must be followed by a word's first letters
    assert allowed(scorer, [6]) == {3, 6, 7, EOS}
    # a label the lexicon refused leads to a dead row: nothing after it, and no end
    assert allowed(scorer, [3, 5]) == set()
    state = scorer.initial_state(torch.zeros(2))
    _, state = scorer.score(state, torch.tensor([BOS, BOS]))
    _, state = scorer.score(state, torch.tensor([3, 6]))
    assert scorer.final_score(state).tolist() == [NEG, 0.0]
    # with a finite end penalty an unfinished word may end at that cost; a dead row still may not
    fallback = LexiconScorer(["AB", "ABC", "C", "AA"], PIECES + [None], eos=EOS, bos=BOS, end_penalty=-5.0)
    _, after = fallback.score(state, torch.tensor([5, 3]))  # "A" + "C": no word starts "AC"; "C" + "▁A": "A"
    assert fallback.final_score(torch.cat([state, after])).tolist() == [-5.0, 0.0, NEG, -5.0]
    lp, _ = fallback.score(state, torch.tensor([4, 5]))  # "AB" complete; "C" + "C" dead
    assert lp[:, EOS].tolist() == [0.0, NEG]
    assert scorer.select(state, torch.tensor([1, 1, 0])).tolist() == state[[1, 1, 0]].tolist()
    with pytest.raises(ValueError, match="not single words"):
        LexiconScorer(["A B"], PIECES)
    with pytest.raises(ValueError, match="empty lexicon"):
        LexiconScorer([], PIECES)


def ctc_frames(*paths):
    """CTC log-probs [1, T, 10]: frame t puts most of its mass on ``paths[0][t]``, the rest on ``paths[1][t]``."""
    T = len(paths[0])
    lp = torch.full((1, T, BLANK + 1), -12.0)
    for t in range(T):
        lp[0, t, paths[0][t]] = math.log(0.6)
        lp[0, t, paths[1][t]] = math.log(0.39)
    return lp.log_softmax(-1)


def test_ctc_prefix_search_with_a_lexicon_outputs_only_lexicon_words():
    # the best path spells "AC A" (no word); the second best "AB A"... with "AB" and "AA" in the lexicon
    lp = ctc_frames([3, BLANK, 5, 7, 8, BLANK], [3, BLANK, 4, 3, BLANK, 8])
    free = ctc_beam_search(lp, torch.tensor([6]), blank=BLANK, beam_size=4)[0][0]
    assert spell(free["labels"]) == ["AC", "A"]
    lexicon = LexiconScorer(["AB", "AA", "A"], PIECES + [None], eos=EOS, bos=BOS)
    out = ctc_beam_search(lp, torch.tensor([6]), blank=BLANK, beam_size=4, scorers={"lexicon": (lexicon, 1.0)},
                          bos=BOS, eos=EOS)[0]
    assert spell(out[0]["labels"]) == ["AB", "A"]
    assert out[0]["scores"]["lexicon"] == 0.0
    assert all(set(spell(h["labels"])) <= {"AB", "AA", "A"} for h in out if h["score"] > NEG)


def test_label_sync_beam_search_with_a_lexicon_outputs_only_lexicon_words():
    # a bigram model that prefers "▁A" -> "C" -> EOS ("AC", no word) over "▁A" -> "B" -> EOS
    table = torch.full((BLANK, BLANK), -20.0)
    table[BOS, 3] = 0.0
    table[3, 5], table[3, 4] = math.log(0.7), math.log(0.3)
    table[5, EOS] = table[4, EOS] = 0.0
    model = TableScorer(table.log_softmax(-1))
    free = beam_search({"am": (model, 1.0)}, 1, 3, BOS, EOS, max_len=5)[0][0]
    assert spell(free["labels"]) == ["AC"]
    lexicon = LexiconScorer(["AB", "C"], PIECES, eos=EOS, bos=BOS)
    out = beam_search({"am": (model, 1.0), "lexicon": (lexicon, 1.0)}, 1, 3, BOS, EOS, max_len=5)[0]
    assert spell(out[0]["labels"]) == ["AB"]
    assert math.isclose(out[0]["scores"]["am"], free["scores"]["am"] - math.log(0.7) + math.log(0.3), abs_tol=1e-4)


def test_searches_on_random_scores_with_a_sentencepiece_lexicon_spell_only_its_words(tmp_path, run_job):
    rng = random.Random(0)
    words = ["AND", "THE", "LORD", "SAID", "UNTO", "MOSES", "LAND", "THEE", "SAIDST", "LO"]
    text = tmp_path / "text.txt"
    text.write_text("".join(" ".join(rng.choice(words) for _ in range(8)) + "\n" for _ in range(300)))
    spm = run_job(TrainSentencePieceJob(tk.Path(str(text)), vocab_size=30, hard_vocab_limit=False))
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=spm.out_model.get_path())
    V = sp.get_piece_size()
    lexicon_words = words[:6]  # "LAND", "THEE", "SAIDST", "LO" can be spelled by the pieces but are not allowed
    torch.manual_seed(0)
    lp = torch.randn(4, 40, V + 1).mul(3).log_softmax(-1)
    lengths = torch.tensor([40, 31, 22, 9])
    ctc_lex = sentencepiece_lexicon_scorer(lexicon_words, spm.out_model.get_path(), V + 1, eos=sp.eos_id(),
                                           bos=sp.bos_id())
    ctc_out = ctc_beam_search(lp, lengths, blank=V, beam_size=6, label_topk=12, nbest=6,
                              scorers={"lexicon": (ctc_lex, 1.0)}, bos=sp.bos_id(), eos=sp.eos_id())
    aed_lex = sentencepiece_lexicon_scorer(lexicon_words, spm.out_model.get_path(), V, eos=sp.eos_id(),
                                           bos=sp.bos_id())
    model = TableScorer(torch.randn(V, V).mul(2).log_softmax(-1))
    aed_out = beam_search({"am": (model, 1.0), "lexicon": (aed_lex, 1.0)}, 4, 6, sp.bos_id(), sp.eos_id(),
                          max_len=12)
    spelled = 0
    for hyps in ctc_out + aed_out:
        for h in hyps:
            if h["score"] > NEG:
                assert set(sp.decode(h["labels"]).split()) <= set(lexicon_words), sp.decode(h["labels"])
                spelled += len(h["labels"])
    assert spelled > 20  # the searches did output words, not only empty hypotheses


def test_word_list_job_counts_words_and_refuses_bad_lists(tmp_path, run_job):
    text = tmp_path / "lm.txt.gz"
    with gzip.open(text, "wt", encoding="utf-8") as f:
        f.write("THE LORD SAID\nTHE LAND\n\nTHE LORD\n")
    job = run_job(WordListJob([tk.Path(str(text))]))
    assert read_word_list(job.out_word_list.get_path()) == ["THE", "LORD", "LAND", "SAID"]
    assert job.out_num_words.get() == 4
    frequent = run_job(WordListJob([tk.Path(str(text))], min_count=2))
    assert read_word_list(frequent.out_word_list.get_path()) == ["THE", "LORD"]
    with pytest.raises(ValueError, match="min_count"):
        WordListJob([tk.Path(str(text))], min_count=0)
    bad = tmp_path / "bad.txt"
    bad.write_text("THE\n\nLORD\n")
    with pytest.raises(ValueError, match="bad.txt:2: not one word"):
        read_word_list(str(bad))
    bad.write_bytes(b"THE\n\xff\n")
    with pytest.raises(ValueError, match="bad.txt: not valid UTF-8"):
        read_word_list(str(bad))
