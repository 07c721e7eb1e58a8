import json

import pytest

from llmasr.data.corpus import CorpusEntry, write_corpus
from llmasr.scoring.hallucination import hallucination_stats, max_ngram_repeats
from llmasr.scoring.report import Finding, ReportTableJob, check_findings, markdown_table
from llmasr.scoring.wer import ScoreWERJob, compute_wer
from llmasr.search.nbest import write_nbest
from sisyphus import tk


def test_wer_hand_computed():
    refs = {"a": "the cat sat on the mat", "b": "hello world", "c": "yes"}
    hyps = {"a": "the cat sat in the the mat", "b": "", "c": "yes"}
    tot, per = compute_wer(refs, hyps, normalize=False)
    # a: 1 sub (on->in) + 1 ins (the); b: 2 del; c: correct -> 4 errors / 9 words
    assert (tot["sub"], tot["del"], tot["ins"], tot["ref_words"]) == (1, 2, 1, 9)
    assert tot["wer"] == pytest.approx(100 * 4 / 9)
    ops = [a[0] for a in per[0]["alignment"]]
    assert ops.count("sub") == 1 and ops.count("ins") == 1 and ops.count("cor") == 5
    assert per[1]["alignment"] == [["del", "hello", None], ["del", "world", None]]


def test_wer_normalises_and_rejects_unknown_ids():
    tot, _ = compute_wer({"a": "Hello, World!"}, {"a": "hello world"})
    assert tot["wer"] == 0.0
    with pytest.raises(ValueError, match="zzz"):
        compute_wer({"a": "x"}, {"zzz": "x"})


def test_hallucination():
    assert max_ngram_repeats("a b a b a b c".split(), 2) == 3
    per = [{"ref": "a b", "hyp": "a b a b a b", "ins": 4}, {"ref": "c d", "hyp": "", "ins": 0}]
    st = hallucination_stats(per)
    assert st == {"insertion_rate": 100.0, "long_share": 50.0, "loop_share": 50.0, "empty_share": 50.0}


def test_score_and_report_jobs(tmp_path, run_job):
    corpus = str(tmp_path / "c.jsonl.gz")
    write_corpus([CorpusEntry("u1", "/x.wav", 1.0, "s", "the red house"),
                  CorpusEntry("u2", "/y.wav", 1.0, "s", "blue")], corpus)
    nb = str(tmp_path / "n.json.gz")
    write_nbest({"u1": [{"text": "the read house", "score": -1.0}, {"text": "x", "score": -2.0}],
                 "u2": [{"text": "blue", "score": -0.5}]}, nb)
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"audio_seconds": 2.0, "decode_seconds": 0.5}))
    job = run_job(ScoreWERJob(tk.Path(nb), tk.Path(corpus), search_stats=tk.Path(str(stats))))
    rep = json.load(open(job.out_report.get_path()))
    assert rep["wer"] == pytest.approx(25.0) and rep["sub"] == 1 and rep["rtfx"] == pytest.approx(4.0)
    assert job.out_wer.get() == pytest.approx(25.0)
    # hallucination figures: no insertions, nothing overlong, looping or empty here
    assert rep["insertion_rate"] == 0.0 and job.out_empty_share.get() == 0.0 and job.out_loop_share.get() == 0.0
    rj = run_job(ReportTableJob({"sys": {"dev": job.out_wer, "test": 15.0}}))
    table = open(rj.out_table.get_path()).read()
    assert "| sys | 25.00 | 15.00 | 20.00 |" in table


def test_markdown_table_missing():
    assert "| b | - | 2.00 | 2.00 |" in markdown_table({"a": {"x": 1.0, "y": 3.0}, "b": {"y": 2.0}})


def test_markdown_table_info_columns_are_not_averaged():
    table = markdown_table({"a": {"dev": 10.0, "test": 20.0}}, info={"a": {"lm_scale": 0.35, "note": "k=5"}})
    assert table.splitlines()[0] == "| system | dev | test | avg | lm_scale | note |"
    assert "| a | 10.00 | 20.00 | 15.00 | 0.35 | k=5 |" in table


def test_score_wer_job_hallucination_figures(run_job, tmp_path):
    from llmasr.data.corpus import CorpusEntry, write_corpus
    from llmasr.search.nbest import write_nbest

    corpus = str(tmp_path / "c.jsonl.gz")
    write_corpus([CorpusEntry("u1", "/x.wav", 1.0, "s", "the red house"),
                  CorpusEntry("u2", "/y.wav", 1.0, "s", "blue sky")], corpus)
    nb = str(tmp_path / "n.json.gz")
    write_nbest({"u1": [{"text": "the red house the red house the red house", "score": -1.0}],
                 "u2": [{"text": "", "score": -0.5}]}, nb)
    job = run_job(ScoreWERJob(tk.Path(nb), tk.Path(corpus)))
    assert job.out_insertion_rate.get() == pytest.approx(100.0 * 6 / 5)
    assert job.out_long_share.get() == pytest.approx(50.0) and job.out_loop_share.get() == pytest.approx(50.0)
    assert job.out_empty_share.get() == pytest.approx(50.0)


def test_findings_are_checked_per_set():
    results = {"ctc": {"dev": 30.0, "test": 40.0}, "fusion": {"dev": 25.0, "test": 41.0},
               "k1": {"dev": 26.0, "test": 40.5}, "other": {"dev": 20.0}}
    info = {"joint": {"insertions": 1.0}, "alone": {"insertions": 5.0}}
    lines = check_findings([
        Finding("fusion helps", (("fusion", "<", "ctc"),)),
        Finding("k=1 close to label-wise", (("k1", "~", "fusion"),), rel_tol=0.05),
        Finding("direction", (("fusion", "vs", "k1"),)),
        Finding("fewer insertions", (("joint:insertions", "<", "alone:insertions"),)),
        Finding("missing system", (("nope", "<", "ctc"),)),
    ], results, info)
    assert lines[0].startswith("- fusion helps: holds on dev, **not on test**") and "41.0 not < 40.0" in lines[0]
    assert lines[1].startswith("- k=1 close to label-wise: holds on dev and test")
    assert lines[2].startswith("- direction: direction") and "lower: fusion" in lines[2] and "lower: k1" in lines[2]
    assert lines[3].startswith("- fewer insertions: holds on dev and test")
    assert lines[4].startswith("- missing system: not measured (no nope)")
    with pytest.raises(ValueError, match="comparisons"):
        Finding("bad", (("a", ">", "b"),))


def test_factor_findings_on_chosen_sets_with_llm_calls():
    """A finding with factors checks ``a op factor * b`` on its sets only and prints the ratio and relative change;
    "system:LLM calls/utt" reads the per-set LLM calls."""
    from llmasr.scoring.report import LLM_CALLS

    results = {"lw": {"dev": 10.0, "test": 20.0}, "k5": {"dev": 10.05, "test": 30.0}}
    calls = {LLM_CALLS: {"lw": {"dev": 40.0, "test": 41.0}, "k5": {"dev": 12.0, "test": 30.0}}}
    claim = (("k5:" + LLM_CALLS, "<=", "lw:" + LLM_CALLS, 1 / 3), ("k5", "<=", "lw", 1.01))
    held, broken, unmeasured = check_findings([
        Finding("k=5: 3x fewer calls, <= 1 % WER loss", claim, sets=("dev",)),
        Finding("k=5 on test", claim, sets=("test",)),
        Finding("k=5 on eval", claim, sets=("eval",)),
    ], results, per_set=calls)
    assert held.startswith("- k=5: 3x fewer calls, <= 1 % WER loss: holds on dev (dev: ")
    assert "12.00 / 40.00 = 0.300 (-70.0 %) <= 0.333" in held and "10.05 / 10.00 = 1.005 (+0.5 %) <= 1.01" in held
    assert "test" not in held
    assert broken.startswith("- k=5 on test: **does not hold** on test")
    assert "30.00 / 41.00 = 0.732 (-26.8 %) not <= 0.333" in broken and "not <= 1.01" in broken
    assert unmeasured.startswith("- k=5 on eval: not measured (no eval)")
    with pytest.raises(ValueError, match="factor"):
        Finding("bad", (("a", "~", "b", 2.0),))


def test_finding_hash_without_sets_is_unchanged():
    """A finding without ``sets`` hashes as before that field existed (report job ids stay)."""
    from sisyphus.hash import sis_hash_helper

    assert sis_hash_helper(Finding("x", (("a", "<", "b"),))) == (
        b"(Finding, (dict, (tuple, (str, 'claim'), (str, 'x')), (tuple, (str, 'comparisons'), (tuple, (tuple, "
        b"(str, 'a'), (str, '<'), (str, 'b')))), (tuple, (str, 'rel_tol'), (float, 0.1))))")
    assert b"'sets'" in sis_hash_helper(Finding("x", (("a", "<", "b"),), sets=("dev",)))


def test_report_llm_calls_column(tmp_path, run_job):
    """The report reads the LLM calls per utterance from search statistics (a column, averaged over the sets, and
    the per-set values of the findings); statistics without the counts raise naming the file."""
    from llmasr.scoring.report import LLM_CALLS, read_llm_calls

    def stats(name, **values):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"audio_seconds": 1.0, "decode_seconds": 1.0, **values}))
        return tk.Path(str(path))

    llm_stats = {"lw": {"dev": stats("lw-dev", llm_forward_calls=80, utterances=2),
                        "test": stats("lw-test", llm_forward_calls=60, utterances=2)},
                 "k5": {"dev": stats("k5-dev", llm_forward_calls=20, utterances=2),
                        "test": stats("k5-test", llm_forward_calls=16, utterances=2)}}
    finding = Finding("fewer calls", (("k5:" + LLM_CALLS, "<=", "lw:" + LLM_CALLS, 1 / 3),), sets=("dev",))
    rj = run_job(ReportTableJob({"ctc": {"dev": 30.0, "test": 31.0}, "lw": {"dev": 20.0, "test": 21.0},
                                 "k5": {"dev": 20.1, "test": 21.5}}, llm_stats=llm_stats, findings=[finding]))
    table = open(rj.out_table.get_path()).read()
    assert f"| system | dev | test | avg | {LLM_CALLS} |" in table
    assert "| lw | 20.00 | 21.00 | 20.50 | 35.0 |" in table and "| k5 | 20.10 | 21.50 | 20.80 | 9.0 |" in table
    assert "| ctc | 30.00 | 31.00 | 30.50 | - |" in table
    assert "- fewer calls: holds on dev (dev: 10.00 / 40.00 = 0.250" in table
    with pytest.raises(ValueError, match="bad.json.*no llm_forward_calls"):
        read_llm_calls({"x": {"dev": stats("bad", utterances=3)}})
