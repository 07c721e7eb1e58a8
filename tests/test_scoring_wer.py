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
