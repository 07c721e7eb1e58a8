"""AM training and recognition through ``python -m returnn`` on a tiny espeak-ng corpus: kill and resume,
checkpoint selection/averaging, CTC/AED searches with N-best output, CTC prior and log-prob dumps."""
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sisyphus import tk

from llmasr.models.conformer import AedModelConfig, CtcModelConfig, TransformerDecoderConfig, tiny_encoder_config
from llmasr.returnn.config import LearningRateSchedule, TrainingOptions, one_cycle_lr
from llmasr.returnn.forward import DumpCtcLogProbsJob, EstimateCtcPriorJob, RecogMode, ReturnnForwardJob
from llmasr.returnn.training import (AverageCheckpointsJob, GetBestCheckpointJob, ReturnnTrainingJob,
                                     read_learning_rates, returnn_env)
from llmasr.search.lexicon_scorer import FALLBACK_END_PENALTY

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "she sells sea shells", "the sun is bright today",
             "we like green apples", "birds fly over the hill", "open the red door now", "my friend reads a book",
             "time to go home", "the rain falls softly", "he plays the old piano", "cold water in the glass"]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="needs espeak-ng and sox")


def _speak(out_dir, sentences, voice):
    import soundfile as sf

    from llmasr.data.corpus import CorpusEntry, write_corpus
    from llmasr.data.returnn_data import pack_ogg_zip

    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for i, text in enumerate(sentences):
        path = os.path.join(out_dir, f"utt{i}.flac")
        subprocess.run(f"espeak-ng -v {voice} -s 170 --stdout '{text}' | sox -D -G -t wav - -r 16000 -c 1 -b 16 {path}",
                       shell=True, check=True)
        entries.append(CorpusEntry(id=f"{voice}/{i}", audio=path, duration=sf.info(path).duration, speaker=voice,
                                   text=text))
    write_corpus(entries, os.path.join(out_dir, "corpus.jsonl.gz"))
    pack_ogg_zip(os.path.join(out_dir, "corpus.jsonl.gz"), out_dir + ".zip")
    return out_dir + ".zip", sum(e.duration for e in entries)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("am_data")
    train, _ = _speak(str(root / "train"), SENTENCES, "en-us")
    dev, dev_seconds = _speak(str(root / "dev"), SENTENCES[:4], "en-gb")
    (root / "text.txt").write_text("\n".join(SENTENCES) + "\n")
    spm.SentencePieceTrainer.train(input=str(root / "text.txt"), model_prefix=str(root / "spm"), vocab_size=40,
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return {"train": tk.Path(train), "dev": tk.Path(dev), "spm": tk.Path(str(root / "spm.model")),
            "dev_seconds": dev_seconds}


def _read_nbest(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _check_search(job, data, nbest):
    out = _read_nbest(job.out_nbest.get_path())
    assert sorted(out) == [f"en-gb/{i}" for i in range(4)]
    for hyps in out.values():
        assert 1 <= len(hyps) <= nbest
        assert [h["score"] for h in hyps] == sorted([h["score"] for h in hyps], reverse=True)
        for h in hyps:
            assert all(isinstance(x, int) for x in h["labels"]) and h["scores"]["length"] >= 0
            assert isinstance(h["text"], str)
    with open(job.out_search_stats.get_path()) as f:
        stats = json.load(f)
    assert stats["audio_seconds"] == pytest.approx(data["dev_seconds"], rel=1e-3)
    assert stats["decode_seconds"] > 0
    return out


def _lexicon(data):
    """A word list of the dev sentences' words but "sea" and "bright" (a word the searches must not output)."""
    path = os.path.join(os.path.dirname(data["spm"].get_path()), "words.txt")
    words = sorted({w for s in SENTENCES for w in s.split()} - {"sea", "bright"})
    with open(path, "w") as f:
        f.write("".join(w + "\n" for w in words))
    return tk.Path(path)


def _check_lexicon_words(out, lexicon):
    """Every hypothesis that ends in a complete word (lexicon score 0, not the fallback end penalty) spells lexicon
    words only."""
    words = set(open(lexicon.get_path()).read().split())
    assert all(h["scores"]["lexicon"] in (0.0, FALLBACK_END_PENALTY) for hyps in out.values() for h in hyps)
    complete = [h for hyps in out.values() for h in hyps if h["scores"]["lexicon"] == 0.0]
    assert complete
    for h in complete:
        assert set(h["text"].split()) <= words, h["text"]


def test_ctc_training_killed_and_resumed_then_searches(data, run_job):
    cfg = CtcModelConfig(encoder=tiny_encoder_config(), aux_ctc_layers=(1,), aux_ctc_scales=(0.3,))
    opts = TrainingOptions(num_epochs=3, batch_size_seconds=8, learning_rate=2e-3, torch_threads=1)
    job = ReturnnTrainingJob(cfg, data["train"], data["dev"], data["spm"], options=opts, cpu=1)
    # start RETURNN by hand and SIGKILL it once the first epoch is saved
    job._sis_setup_directory()
    job.create_files()
    work = job._sis_path("work", abspath=True)
    os.makedirs(job.out_model_dir.get_path(), exist_ok=True)
    with open(os.path.join(work, "returnn.log"), "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "returnn", job.out_returnn_config.get_path()], cwd=work,
                                env=returnn_env(1), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    first = os.path.join(job.out_model_dir.get_path(), "epoch.001.opt.pt")
    try:
        for _ in range(1200):
            if os.path.exists(first) or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert os.path.exists(first), open(os.path.join(work, "returnn.log")).read()[-2000:]
    assert not os.path.exists(job.out_checkpoints[3].get_path())
    mtime = os.path.getmtime(job.out_checkpoints[1].get_path())
    with open(os.path.join(work, "returnn.log")) as f:
        killed_log_len = len(f.read())

    run_job(job)  # resumes
    with open(os.path.join(work, "returnn.log")) as f:
        resumed_log = f.read()[killed_log_len:]
    assert "Starting training at epoch 2" in resumed_log or "Starting training at epoch 3" in resumed_log
    assert "Starting training at epoch 1," not in resumed_log
    assert os.path.getmtime(job.out_checkpoints[1].get_path()) == mtime
    scores = read_learning_rates(job.out_learning_rates.get_path())
    assert sorted(scores) == [1, 2, 3] and all("dev_loss_ctc" in s["error"] for s in scores.values())
    # the one-cycle schedule follows the epochs (RETURNN records the rate each epoch starts with)
    for e, s in scores.items():
        expected = one_cycle_lr((e - 1) / 3, opts.learning_rate, opts.initial_learning_rate,
                                opts.final_learning_rate, opts.warmup_fraction)
        assert s["error"][":meta:effective_learning_rate"] == pytest.approx(expected, rel=1e-6), (e, s)
    model_cfg = json.load(open(job.out_model_config.get_path()))
    assert model_cfg["vocab_size"] == 40 and model_cfg["model_type"] == "ctc"

    best = run_job(GetBestCheckpointJob(job))
    best_ep = best.out_epoch.get()
    assert scores[best_ep]["error"]["dev_loss_ctc"] == min(s["error"]["dev_loss_ctc"] for s in scores.values())
    avg = run_job(AverageCheckpointsJob(job, num_best=2))
    assert len(avg.out_epochs.get()) == 2 and best_ep in avg.out_epochs.get()

    greedy = run_job(ReturnnForwardJob(avg.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                       mode=RecogMode.CTC_GREEDY))
    g = _check_search(greedy, data, 1)
    beam = run_job(ReturnnForwardJob(avg.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                     mode=RecogMode.CTC_BEAM, beam_size=4, nbest=3))
    b = _check_search(beam, data, 3)
    # the CTC beam's best sequence is at least as probable as the greedy best path's frame score
    for seq in g:
        assert b[seq][0]["scores"]["ctc"] >= g[seq][0]["scores"]["ctc"] - 1e-3
    lexicon = _lexicon(data)
    lex = run_job(ReturnnForwardJob(avg.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                    mode=RecogMode.CTC_BEAM, beam_size=4, nbest=3, lexicon=lexicon, length_reward=0.5))
    _check_lexicon_words(_check_search(lex, data, 3), lexicon)

    prior = run_job(EstimateCtcPriorJob(best.out_checkpoint, job.out_model_config, data["dev"], data["spm"]))
    import numpy as np

    lp = np.loadtxt(prior.out_log_prior.get_path())
    assert lp.shape == (41,) and lp[-1] == 0.0 and np.exp(lp[:-1]).sum() == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(np.loadtxt(prior.out_log_label_prior.get_path()), lp[:-1])

    dump = run_job(DumpCtcLogProbsJob(best.out_checkpoint, job.out_model_config, data["dev"], data["spm"]))
    import torch

    from llmasr.search.ctc_logprobs import read_ctc_logprobs

    logprobs = dict(read_ctc_logprobs(dump.out_ctc_logprobs.get_path()))
    assert sorted(logprobs) == [f"en-gb/{i}" for i in range(4)]
    assert all(v.shape[1] == 41 and torch.allclose(v.exp().sum(-1), torch.ones(v.shape[0]), atol=1e-3)
               for v in logprobs.values())


def test_aed_training_and_searches(data, run_job):
    cfg = AedModelConfig(encoder=tiny_encoder_config(), aux_ctc_layers=(2,), aux_ctc_scales=(0.5,),
                         decoder=TransformerDecoderConfig(num_layers=1, dim=32, num_heads=2, ff_dim=64, dropout=0.0))
    opts = TrainingOptions(num_epochs=2, batch_size_seconds=8, torch_threads=1,
                           schedule=LearningRateSchedule.PIECEWISE_LINEAR,
                           lr_points=((0.0, 1e-3), (0.5, 3e-3), (1.0, 1e-3)))
    job = run_job(ReturnnTrainingJob(cfg, data["train"], data["dev"], data["spm"], options=opts, cpu=1))
    scores = read_learning_rates(job.out_learning_rates.get_path())
    lrs = [scores[e]["error"][":meta:effective_learning_rate"] for e in (1, 2)]  # at the start of each epoch
    assert lrs == [pytest.approx(1e-3, rel=1e-6), pytest.approx(3e-3, rel=1e-6)]
    assert scores[2]["error"]["train_loss_ce"] < scores[1]["error"]["train_loss_ce"]
    assert "dev_loss_ce" in scores[2]["error"] and "dev_loss_aux_ctc_2" in scores[2]["error"]
    best = run_job(GetBestCheckpointJob(job, score_key="dev_loss_ce"))
    aed = run_job(ReturnnForwardJob(best.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                    mode=RecogMode.AED_BEAM, beam_size=3, nbest=2, max_len_ratio=0.4))
    out = _check_search(aed, data, 2)
    assert all("am" in h["scores"] for hyps in out.values() for h in hyps)
    joint = run_job(ReturnnForwardJob(best.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                      mode=RecogMode.AED_CTC, beam_size=3, nbest=2, max_len_ratio=0.4,
                                      ctc_scale=0.5))
    out = _check_search(joint, data, 2)
    assert all({"am", "ctc"} <= set(h["scores"]) for hyps in out.values() for h in hyps)
    lexicon = _lexicon(data)
    joint_lex = run_job(ReturnnForwardJob(best.out_checkpoint, job.out_model_config, data["dev"], data["spm"],
                                          mode=RecogMode.AED_CTC, beam_size=3, nbest=2, max_len_ratio=0.4,
                                          ctc_scale=0.5, lexicon=lexicon))
    _check_lexicon_words(_check_search(joint_lex, data, 2), lexicon)


def test_bad_inputs_are_reported(data, tmp_path):
    cfg = CtcModelConfig(encoder=tiny_encoder_config(), vocab_size=99)
    job = ReturnnTrainingJob(cfg, data["train"], data["dev"], data["spm"], options=TrainingOptions(num_epochs=1))
    job._sis_setup_directory()
    with pytest.raises(ValueError, match="vocab_size=99"):
        job.create_files()
    with pytest.raises(ValueError, match="partition_epoch"):
        ReturnnTrainingJob(cfg, data["train"], data["dev"], data["spm"], options=TrainingOptions(partition_epoch=0))
    missing = tk.Path(str(tmp_path / "missing.zip"))
    job = ReturnnTrainingJob(CtcModelConfig(encoder=tiny_encoder_config()), missing, data["dev"], data["spm"])
    job._sis_setup_directory()
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        job.create_files()
    with pytest.raises(ValueError, match="RecogMode"):
        ReturnnForwardJob(missing, missing, missing, data["spm"], mode="ctc_greedy")
    with pytest.raises(ValueError, match="lexicon needs a beam search"):
        ReturnnForwardJob(missing, missing, missing, data["spm"], mode=RecogMode.CTC_GREEDY, lexicon=missing)
    with pytest.raises(ValueError, match="length_reward is an option of CTC_BEAM, not AED_BEAM"):
        ReturnnForwardJob(missing, missing, missing, data["spm"], mode=RecogMode.AED_BEAM, length_reward=1.0)


def test_multi_gpu_training_runs_returnn_through_torchrun(data):
    from llmasr.returnn.training import returnn_command

    job = ReturnnTrainingJob(CtcModelConfig(encoder=tiny_encoder_config()), data["train"], data["dev"], data["spm"],
                             options=TrainingOptions(num_epochs=1), gpu=4)
    job._sis_setup_directory()
    job.create_files()
    with open(job.out_returnn_config.get_path()) as f:
        text = f.read()
    assert "torch_distributed" in text and ("'cuda'" in text or '"cuda"' in text)
    cmd = returnn_command(job.out_returnn_config.get_path(), gpus=4)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:] == ["-m", "returnn", job.out_returnn_config.get_path()]
    assert returnn_command("x.config", gpus=1) == [sys.executable, "-m", "returnn", "x.config"]
