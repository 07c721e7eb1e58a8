"""Scale tuning finds the known optimal region of a constructed N-best list."""
import json

import pytest

from llmasr.tuning.scales import TuneScalesJob, tune_scales, word_errors

def _h(text, am, lm, prior=0.0, length=None):
    return {"text": text, "labels": None, "scores": {"am": am, "lm": lm, "prior": prior,
                                                     "length": length if length is not None else len(text.split())}}


# correct hypothesis first wins iff 0.53 < lm_scale < 0.57 and 0.25 < prior_scale < 0.35
NBEST = {
    "u1": [_h("a b c", -10, -5), _h("a b d", -8.94, -7)],
    "u2": [_h("d e f", -10, -8), _h("d e", -11.14, -6)],
    "u3": [_h("g h", -10 + 6 * 0.55, -6, prior=-3), _h("g i", -9.5 + 6 * 0.55, -6, prior=-1)],
    "u4": [_h("j k l", -10, -6, prior=-1), _h("j k m", -10.7, -6, prior=-3)],
}
REFS = {"u1": "A b c.", "u2": "d e f", "u3": "g h", "u4": "j k l"}


def test_word_errors():
    assert word_errors("a b c".split(), "a x c d".split()) == 2
    assert word_errors([], "a".split()) == 1


def test_tune_finds_known_optimum():
    res = tune_scales(NBEST, REFS, lm_scales=[x / 10 for x in range(11)], prior_scales=[0.0, 0.2, 0.4, 0.6],
                      refine_rounds=3, normalize=lambda t: t.lower().replace(".", ""))
    assert res["errors"] == 0 and res["wer"] == 0.0
    assert 0.53 < res["lm_scale"] < 0.57
    assert 0.25 < res["prior_scale"] < 0.35
    assert res["length_reward"] == 0.0
    assert res["wer_unfused"] > 0
    # without refinement the coarse grid cannot reach zero errors
    coarse = tune_scales(NBEST, REFS, lm_scales=[x / 10 for x in range(11)], prior_scales=[0.0, 0.2, 0.4, 0.6],
                         refine_rounds=0, normalize=lambda t: t.lower().replace(".", ""))
    assert coarse["errors"] > 0


def test_length_reward_tuning():
    nbest = {"u": [_h("x", -1.0, 0.0), _h("x y z", -2.0, 0.0)]}
    res = tune_scales(nbest, {"u": "x y z"}, lm_scales=[0.0], length_rewards=[0.0, 1.0], normalize=str)
    assert res["errors"] == 0 and 0.5 < res["length_reward"] <= 1.0


def test_missing_utterance_raises():
    with pytest.raises(ValueError, match="no N-best"):
        tune_scales({}, {"u1": "a"}, normalize=str)


def test_job(run_job, tmp_path):
    from sisyphus import tk

    from llmasr.data.corpus import CorpusEntry, write_corpus
    from llmasr.search.nbest import write_nbest

    write_nbest(NBEST, str(tmp_path / "nbest.json.gz"))
    write_corpus([CorpusEntry(id=k, audio="/a.flac", duration=1.0, speaker="s", text=v) for k, v in REFS.items()],
                 str(tmp_path / "dev.jsonl.gz"))
    job = TuneScalesJob(tk.Path(str(tmp_path / "nbest.json.gz")), tk.Path(str(tmp_path / "dev.jsonl.gz")),
                        prior_scales=[0.0, 0.2, 0.4, 0.6])
    run_job(job)
    assert 0.53 < job.out_lm_scale.get() < 0.57
    with open(job.out_scales.get_path()) as f:
        assert json.load(f)["errors"] == 0
