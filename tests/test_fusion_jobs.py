"""The fusion jobs end to end on tiny data: CTC N-best -> LLM rescoring -> tuning -> first-pass fusion."""
import json
import random

import pytest
import torch

from sisyphus import tk

from llmasr.search.ctc_logprobs import read_ctc_logprobs
from llmasr.search.delayed_fusion import CTCFusionSearchJob, FusionMode
from llmasr.search.options import CtcBeam, FusionScales

WORDS = ["the cat sat", "a dog ran", "the red mat", "a big house"]

@pytest.fixture
def setup(tmp_path):
    import sentencepiece as spm

    torch.set_num_threads(1)
    text = tmp_path / "text.txt"
    rng = random.Random(0)
    text.write_text("\n".join(rng.choice(WORDS) + " " + rng.choice(WORDS) for _ in range(200)) + "\n")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "am"), vocab_size=30,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "am.model"))
    vocab = sp.get_piece_size() + 1  # blank last
    refs, logprobs = {}, {}
    for i in range(3):
        ref = WORDS[i] + " " + WORDS[(i + 1) % 4]
        ids = sp.encode(ref)
        frames = []
        for x in ids:  # label frame, then a blank frame
            for lab in (x, vocab - 1):
                row = torch.full((vocab,), -6.0)
                row[lab] = 0.0
                row[rng.randrange(vocab - 1)] = -1.0  # a confusable label
                frames.append(row)
        logprobs[f"utt{i}"] = torch.stack(frames).log_softmax(-1)
        refs[f"utt{i}"] = ref
    torch.save(logprobs, tmp_path / "ctc.pt")
    from llmasr.data.corpus import CorpusEntry, write_corpus

    write_corpus([CorpusEntry(id=k, audio="/x.flac", duration=1.5, speaker="s", text=v) for k, v in refs.items()],
                 str(tmp_path / "dev.jsonl.gz"))
    return {"ctc": tk.Path(str(tmp_path / "ctc.pt")), "spm": tk.Path(str(tmp_path / "am.model")),
            "corpus": tk.Path(str(tmp_path / "dev.jsonl.gz")), "refs": refs, "vocab": vocab}


def test_read_ctc_logprobs_hdf(tmp_path):
    h5py = pytest.importorskip("h5py")
    import numpy as np

    with h5py.File(tmp_path / "x.hdf", "w") as f:
        f["inputs"] = np.arange(20, dtype="float32").reshape(10, 2)
        f["seqLengths"] = np.array([[3, 0], [7, 0]])
        f["seqTags"] = np.array([b"a", b"b"])
    out = list(read_ctc_logprobs(str(tmp_path / "x.hdf")))
    assert [t for t, _ in out] == ["a", "b"] and out[1][1].shape == (7, 2) and float(out[1][1][0, 0]) == 6.0
    with pytest.raises(FileNotFoundError, match="nope"):
        list(read_ctc_logprobs(str(tmp_path / "nope.hdf")))


def test_pipeline(run_job, setup):
    from llmasr.llm import CreateTinyLLMJob, PretrainLLMJob
    from llmasr.llm.train import TrainConfig
    from llmasr.models.llm import TinyLLMConfig
    from llmasr.scoring.wer import compute_wer
    from llmasr.search.nbest import read_nbest
    from llmasr.search.rescoring import RescoreNBestJob
    from llmasr.tuning.scales import TuneScalesJob

    tiny = TinyLLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1)
    llm = CreateTinyLLMJob(setup["spm"], config=tiny)  # an LLM over the AM units
    llm = PretrainLLMJob(llm.out_model, setup["corpus"], cpu=1,
                         train_config=TrainConfig(epochs=2, batch_size=4, warmup_steps=1, learning_rate=3e-3))
    plain = run_job(CTCFusionSearchJob(setup["ctc"], setup["spm"], mode=FusionMode.NONE, beam=CtcBeam(nbest=4),
                                       corpus=setup["corpus"]))
    nbest = read_nbest(plain.out_nbest.get_path())
    assert set(nbest) == set(setup["refs"]) and all(1 <= len(v) <= 4 for v in nbest.values())
    assert nbest["utt0"][0]["text"] == setup["refs"]["utt0"]
    with open(plain.out_search_stats.get_path()) as f:
        assert json.load(f)["audio_seconds"] == pytest.approx(4.5)
    rescored = run_job(RescoreNBestJob(plain.out_nbest, llm.out_model, lm_scale=0.0))
    tune = run_job(TuneScalesJob(rescored.out_nbest, setup["corpus"], lm_scales=[0.0, 0.5, 1.0]))
    with open(tune.out_scales.get_path()) as f:
        tuned = json.load(f)
    # the tuning scores every reference word; without the LLM its WER is that of the CTC search's first hypotheses
    # (scored independently here), which are the references the log-probs were made from; tuning keeps it
    first_best = compute_wer(setup["refs"], {k: v[0]["text"] for k, v in nbest.items()})[0]
    assert tuned["words"] == first_best["ref_words"] == sum(len(r.split()) for r in setup["refs"].values())
    assert tuned["wer_unfused"] == pytest.approx(first_best["wer"]) and first_best["wer"] == 0.0
    assert tune.out_wer.get() == tuned["wer"] == 0.0 and tune.out_lm_scale.get() in (0.0, 0.5, 1.0)
    final = run_job(RescoreNBestJob(plain.out_nbest, llm.out_model, lm_scale=tune.out_lm_scale))
    best = read_nbest(final.out_nbest.get_path())
    assert all("lm" in h["scores"] for hyps in best.values() for h in hyps)
    for mode, delay in ((FusionMode.LABELWISE, None), (FusionMode.DELAYED, 3), (FusionMode.DELAYED, None)):
        job = run_job(CTCFusionSearchJob(setup["ctc"], setup["spm"], llm.out_model, mode=mode, delay=delay,
                                         scales=FusionScales(lm_scale=0.5), beam=CtcBeam(nbest=2)))
        out = read_nbest(job.out_nbest.get_path())
        assert set(out) == set(setup["refs"])
        with open(job.out_search_stats.get_path()) as f:
            stats = json.load(f)
        assert stats["utterances"] == 3 and stats["llm_forward_tokens"] >= stats["llm_forward_calls"] > 0
        if delay is None and mode == FusionMode.DELAYED:  # the utterances' BOS, then their final hypotheses at once
            assert stats["llm_forward_calls"] == 2
    # delayed fusion over the AM units with every CTC extension kept until each call (k=1) is label-wise fusion
    searched = {}
    for mode, extra in ((FusionMode.LABELWISE, {}), (FusionMode.DELAYED, dict(delay=1, same_units=True))):
        job = run_job(CTCFusionSearchJob(setup["ctc"], setup["spm"], llm.out_model, mode=mode, **extra,
                                         scales=FusionScales(lm_scale=0.5),
                                         beam=CtcBeam(beam_size=2, nbest=2, delayed_beam_size=64 if extra else None)))
        searched[mode] = {k: [(h["labels"], round(h["score"], 4)) for h in v]
                          for k, v in read_nbest(job.out_nbest.get_path()).items()}
    assert searched[FusionMode.DELAYED] == searched[FusionMode.LABELWISE]


def test_bad_config(setup):
    with pytest.raises(ValueError, match="needs an llm"):
        CTCFusionSearchJob(setup["ctc"], setup["spm"], mode=FusionMode.DELAYED)
    with pytest.raises(ValueError, match="FusionMode"):
        CTCFusionSearchJob(setup["ctc"], setup["spm"], "x", mode="delayed")
    with pytest.raises(ValueError, match="same_units"):
        CTCFusionSearchJob(setup["ctc"], setup["spm"], "x", mode=FusionMode.LABELWISE, same_units=True)


def test_grouped_options_hash_as_the_arguments_they_stand_for(setup):
    """Grouping the search options into dataclasses keeps the job ids: the job hashes the groups' fields as the
    separate keyword arguments the job took before."""
    job = CTCFusionSearchJob(setup["ctc"], setup["spm"], "llm", delay=3, scales=FusionScales(lm_scale=0.5),
                             beam=CtcBeam(nbest=2))
    flat = dict(ctc_logprobs=setup["ctc"], am_spm_model=setup["spm"], llm="llm", mode=FusionMode.DELAYED, delay=3,
                lm_scale=0.5, prior_scale=0.0, length_reward=0.0, log_prior=None, beam_size=8, label_topk=None,
                nbest=2, utterances_per_batch=8, blank=None, logprobs_are_logits=False, corpus=None,
                frame_shift=0.06, lowercase=None, device="cpu")
    assert job.job_id().rsplit(".", 1)[1] == super(CTCFusionSearchJob, CTCFusionSearchJob).hash(flat)
    other = CTCFusionSearchJob(setup["ctc"], setup["spm"], "llm", delay=3, scales=FusionScales(lm_scale=0.6),
                               beam=CtcBeam(nbest=2))
    assert other.job_id() != job.job_id()


def test_bad_log_prob_files_name_the_file_and_utterance(run_job, setup, tmp_path):
    """Utterances with different output sizes, or none at all, stop the search with the file in the message (and no
    N-best written)."""
    torch.save({"u1": torch.zeros(4, 6).log_softmax(-1), "u2": torch.zeros(4, 5).log_softmax(-1)}, tmp_path / "bad.pt")
    job = CTCFusionSearchJob(tk.Path(str(tmp_path / "bad.pt")), setup["spm"], mode=FusionMode.NONE)
    with pytest.raises(ValueError, match="bad.pt: u2 has 5 CTC outputs, earlier utterances 6"):
        run_job(job)
    assert not job._sis_finished()
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(ValueError, match="empty.pt: no utterances"):
        run_job(CTCFusionSearchJob(tk.Path(str(tmp_path / "empty.pt")), setup["spm"], mode=FusionMode.NONE))
