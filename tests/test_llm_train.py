"""Tiny LLM jobs: create + pre-train on toy text, fine-tune on AM units with LoRA, perplexity, resume."""
import json
import os
import random

import pytest
import torch

from sisyphus import tk

from llmasr.llm import ComputePerplexityJob, CreateTinyLLMJob, FineTuneLLMJob, FineTuneMethod, FineTuneUnits
from llmasr.llm import PretrainLLMJob
from llmasr.llm.train import CHECKPOINT, TrainConfig, train_causal_lm
from llmasr.models.llm import LLMTokenizer, TinyLLMConfig, load_llm, load_llm_tokenizer, tiny_random_qwen2

WORDS = "the a cat dog sat ran on under mat house big small red quickly".split()
TINY = TinyLLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, max_position_embeddings=64)


def _sentences(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(" ".join([rng.choice(["the", "a"]), rng.choice(["big", "small", "red"]), rng.choice(["cat", "dog"]),
                             rng.choice(["sat", "ran"]), rng.choice(["on", "under"]), "the",
                             rng.choice(["mat", "house"])]))
    return out


def _spm(path, text_file, vocab_size, model_type):
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=text_file, model_prefix=path, vocab_size=vocab_size, model_type=model_type,
                                   hard_vocab_limit=False, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   minloglevel=2)
    return path + ".model"


@pytest.fixture
def toy(tmp_path):
    torch.set_num_threads(1)
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("\n".join(_sentences(300, 1)) + "\n")
    dev_text = tmp_path / "dev.txt"
    dev_text.write_text("\n".join(_sentences(40, 2)) + "\n")
    llm_spm = _spm(str(tmp_path / "llm_bpe"), str(lm_text), 60, "bpe")
    am_spm = _spm(str(tmp_path / "am_unigram"), str(lm_text), 40, "unigram")
    return {"lm": tk.Path(str(lm_text)), "dev": tk.Path(str(dev_text)), "llm_spm": tk.Path(llm_spm),
            "am_spm": tk.Path(am_spm)}


def _ppl(run_job, model, text):
    job = run_job(ComputePerplexityJob(model, text))
    with open(job.out_ppl.get_path()) as f:
        return json.load(f)


def test_pretrain_and_finetune_am_units_lora(run_job, toy):
    create = run_job(CreateTinyLLMJob(toy["llm_spm"], config=TINY))
    pre = PretrainLLMJob(create.out_model, toy["lm"], dev_text=toy["dev"], cpu=1,
                         train_config=TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, warmup_steps=5))
    run_job(pre)
    with open(pre.out_history.get_path()) as f:
        hist = json.load(f)
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["dev_loss"] < hist[0]["dev_loss"]
    ppl0 = _ppl(run_job, create.out_model, toy["dev"])
    ppl1 = _ppl(run_job, pre.out_model, toy["dev"])
    assert ppl1["subword_ppl"] < 0.5 * ppl0["subword_ppl"]
    assert ppl1["word_ppl"] >= ppl1["subword_ppl"]  # never fewer subwords than words
    assert os.path.isfile(os.path.join(pre._sis_path("work"), "checkpoint.pt"))

    ft = FineTuneLLMJob(pre.out_model, toy["dev"], units=FineTuneUnits.AM, am_spm_model=toy["am_spm"],
                        method=FineTuneMethod.LORA, lora_rank=4, cpu=1,
                        train_config=TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, warmup_steps=2))
    run_job(ft)
    with open(ft.out_history.get_path()) as f:
        hist = json.load(f)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    model = load_llm(ft.out_model.get_path())
    tok = load_llm_tokenizer(ft.out_model.get_path())
    am = LLMTokenizer(spm_model=toy["am_spm"].get_path())
    assert tok.vocab_size == am.vocab_size == model.config.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == am.vocab_size
    assert not any("lora" in n for n, _ in model.named_parameters())  # adapters merged
    assert tok.encode("the big cat") == am.encode("the big cat")
    ppl_ft = _ppl(run_job, ft.out_model, toy["dev"])
    # the swapped but untrained model is worse: fine-tuning lowered the loss on the AM units
    from llmasr.llm.perplexity import compute_perplexity
    from llmasr.llm.train import read_texts
    from llmasr.models.llm import swap_vocabulary

    base = load_llm(pre.out_model.get_path())
    swap_vocabulary(base, load_llm_tokenizer(pre.out_model.get_path()), am)
    ppl_swapped = compute_perplexity(base, am, read_texts(toy["dev"].get_path()))
    assert ppl_ft["subword_ppl"] < 0.8 * ppl_swapped["subword_ppl"]


def test_finetune_own_tokenizer_lowercase_full(run_job, toy, tmp_path):
    create = run_job(CreateTinyLLMJob(toy["llm_spm"], config=TINY))
    upper = tmp_path / "upper.txt"
    upper.write_text("\n".join(s.upper() for s in _sentences(30, 3)) + "\n")
    ft = FineTuneLLMJob(create.out_model, tk.Path(str(upper)), lowercase=True, cpu=1,
                        train_config=TrainConfig(epochs=2, batch_size=8, learning_rate=3e-3, warmup_steps=2))
    run_job(ft)
    tok = load_llm_tokenizer(ft.out_model.get_path())
    assert tok.lowercase and tok.encode("THE CAT") == tok.encode("the cat")


def test_checkpoint_resume(tmp_path):
    torch.set_num_threads(1)
    model = tiny_random_qwen2(12, bos_id=1, eos_id=2, seed=0)
    seqs = [[1] + [random.Random(i).randrange(3, 12) for _ in range(6)] + [2] for i in range(20)]
    h1 = train_causal_lm(model, seqs, TrainConfig(epochs=1, batch_size=4, warmup_steps=1), pad_id=2,
                         checkpoint_dir=str(tmp_path))
    w1 = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    fresh = tiny_random_qwen2(12, bos_id=1, eos_id=2, seed=0)
    h2 = train_causal_lm(fresh, seqs, TrainConfig(epochs=2, batch_size=4, warmup_steps=1), pad_id=2,
                         checkpoint_dir=str(tmp_path))
    assert len(h2) == 2 and h2[0] == h1[0]  # epoch 1 came from the checkpoint
    assert not torch.equal(fresh.model.layers[0].mlp.up_proj.weight, w1)  # trained on from the restored weights
    done = tiny_random_qwen2(12, bos_id=1, eos_id=2, seed=0)
    h3 = train_causal_lm(done, seqs, TrainConfig(epochs=2, batch_size=4, warmup_steps=1), pad_id=2,
                         checkpoint_dir=str(tmp_path))
    assert h3 == h2
    assert torch.allclose(done.model.layers[0].mlp.up_proj.weight, fresh.model.layers[0].mlp.up_proj.weight)


def test_finetune_killed_mid_epoch_resumes_to_the_same_weights(run_job, toy, tmp_path, monkeypatch, caplog):
    """SIGKILL a fine-tuning worker after its first step checkpoint, resume: the weights equal those of an
    uninterrupted run in another work dir (tolerance 1e-6; on CPU with one thread they are bitwise equal)."""
    import logging
    import signal
    import subprocess
    import sys
    import time

    import sisyphus.global_settings as gs
    from safetensors.torch import load_file
    from sisyphus.job import created_jobs

    def jobs():
        create = run_job(CreateTinyLLMJob(toy["llm_spm"], config=TINY))
        return FineTuneLLMJob(create.out_model, toy["lm"], cpu=1, checkpoint_every=3,
                              train_config=TrainConfig(epochs=3, batch_size=8, learning_rate=3e-3, warmup_steps=2))

    ft = jobs()
    ft._sis_setup_directory()
    job_dir = ft._sis_path(abspath=True)
    progress = os.path.join(job_dir, "work", "progress.json")
    worker = subprocess.Popen([sys.executable, "-m", "sisyphus", "worker", job_dir, "run"], cwd=gs.BASE_DIR,
                              start_new_session=True)
    try:
        for _ in range(12000):
            if os.path.exists(progress) or worker.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    log = os.path.join(job_dir, "log.run.1")
    assert os.path.exists(progress), open(log).read()[-3000:] if os.path.exists(log) else "no worker log"
    assert not os.path.exists(ft.out_history.get_path()), "the worker finished before it was killed"
    # the checkpoint decides where training resumes; the progress file is written after it, so a kill between
    # the two leaves it one checkpoint (3 steps) behind, never ahead
    at = torch.load(os.path.join(job_dir, "work", CHECKPOINT), weights_only=False)
    shown = ft.training_progress()
    assert at["step"] > 0  # killed mid-epoch
    every = ft.checkpoint_every
    assert shown in ([at["epoch"], at["step"]], [at["epoch"], at["step"] - every]), (shown, at["step"])
    with caplog.at_level(logging.INFO):
        run_job(ft)
    assert f"resuming LLM training at epoch {at['epoch'] + 1}, step {at['step']}" in caplog.text
    resumed = load_file(os.path.join(ft.out_model.get_path(), "model.safetensors"))
    with open(ft.out_history.get_path()) as f:
        resumed_hist = json.load(f)

    monkeypatch.setattr(gs, "WORK_DIR", str(tmp_path / "work_uninterrupted"))
    created_jobs.clear()
    again = jobs()
    assert again.job_id() == ft.job_id()
    run_job(again)
    reference = load_file(os.path.join(again.out_model.get_path(), "model.safetensors"))
    assert reference.keys() == resumed.keys()
    for name, w in reference.items():
        assert torch.allclose(w, resumed[name], atol=1e-6, rtol=0), name
    with open(again.out_history.get_path()) as f:
        assert json.load(f) == [pytest.approx(h) for h in resumed_hist]


def test_tokenized_text_streams_and_matches_encode_texts(tmp_path):
    from llmasr.llm.train import TokenizedText, encode_texts, iter_texts

    text = tmp_path / "t.txt"
    sentences = _sentences(50, 4)
    text.write_text("\n".join(sentences) + "\n")
    tok = LLMTokenizer(spm_model=_spm(str(tmp_path / "bpe"), str(text), 40, "bpe"))
    seqs = TokenizedText.build(iter_texts(str(text)), tok, 6, str(tmp_path / "tokens"), max_sentences=30)
    expected = encode_texts(tok, sentences[:30], 6)
    assert len(seqs) == 30 and [seqs[i] for i in range(30)] == expected
    assert isinstance(seqs.offsets, __import__("numpy").memmap)  # read from disk, not held


def test_tokenized_text_repeats_a_share_of_the_sentences(tmp_path):
    """With repeat_fraction, about that share of the sequences is BOS s EOS s EOS (same draw for the same seed),
    the others stay BOS s EOS; 0 keeps every sentence single."""
    from llmasr.llm.train import TokenizedText, encode_texts, iter_texts

    text = tmp_path / "t.txt"
    sentences = _sentences(400, 4)
    text.write_text("\n".join(sentences) + "\n")
    tok = LLMTokenizer(spm_model=_spm(str(tmp_path / "bpe"), str(text), 40, "bpe"))
    single = encode_texts(tok, sentences, 1000)

    def build(name, fraction, seed=1):
        seqs = TokenizedText.build(iter_texts(str(text)), tok, 1000, str(tmp_path / name), repeat_fraction=fraction,
                                   seed=seed)
        return [seqs[i] for i in range(len(seqs))]

    repeated = build("a", 0.3)
    doubled = 0
    for seq, one in zip(repeated, single):
        if seq != one:
            assert seq == one + one[1:], (seq, one)  # the copy follows the first EOS, without a second BOS
            doubled += 1
    assert 80 <= doubled <= 160  # 120 expected
    assert build("b", 0.3) == repeated and build("c", 0.3, seed=2) != repeated
    assert build("d", 0.0) == single
    with pytest.raises(ValueError, match="repeat_fraction"):
        TokenizedText.build(iter_texts(str(text)), tok, 1000, str(tmp_path / "e"), repeat_fraction=1.5)
    from llmasr.llm.train import PretrainLLMJob

    with pytest.raises(ValueError, match="PretrainLLMJob: repeat_fraction"):  # a config typo fails at graph build
        PretrainLLMJob("llm", tk.Path(str(text)), repeat_fraction=75)
