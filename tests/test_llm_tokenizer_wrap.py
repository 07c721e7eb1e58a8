"""LLMTokenizer over a HF byte-level BPE and a SentencePiece model: word-by-word == whole-text encoding."""
import random

import pytest
from sisyphus import tk

from llmasr.llm import CreateTinyLLMJob
from llmasr.llm.train import load_tokenizer_source
from llmasr.models.llm import TinyLLMConfig, load_llm, load_llm_tokenizer

TEXT = ["the quick brown fox jumps over the lazy dog", "a small red house stands under the old tree",
        "numbers like twenty one are spelled out"]


def test_hf_bpe_tokenizer_and_tiny_llm(run_job, tmp_path):
    from llmasr.text.llm_tokenizer import TrainLlmTokenizerJob

    rng = random.Random(0)
    (tmp_path / "t.txt").write_text("\n".join(rng.choice(TEXT) for _ in range(100)) + "\n")
    tok_job = run_job(TrainLlmTokenizerJob(tk.Path(str(tmp_path / "t.txt")), vocab_size=300))
    tok = load_tokenizer_source(tok_job.out_tokenizer_dir.get_path())
    assert tok.bos_id == tok.eos_id >= 0  # one special token for both
    for line in TEXT:
        assert tok.encode_words(line.split()) == tok.encode(line)
    assert tok.decode(tok.encode(TEXT[0])) == TEXT[0]
    job = run_job(CreateTinyLLMJob(tok_job.out_tokenizer_dir, config=TinyLLMConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)))
    model = load_llm(job.out_model.get_path())
    tok2 = load_llm_tokenizer(job.out_model.get_path())
    assert model.config.vocab_size == tok2.vocab_size == tok.vocab_size
    assert tok2.encode(TEXT[1]) == tok.encode(TEXT[1])
    lc = load_llm_tokenizer(job.out_model.get_path(), lowercase=True)
    assert lc.encode("THE DOG") == tok.encode("the dog")


def test_spm_tokenizer_words(tmp_path):
    import sentencepiece as spm

    (tmp_path / "t.txt").write_text("\n".join(TEXT * 20) + "\n")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "t.txt"), model_prefix=str(tmp_path / "m"), vocab_size=60,
                                   model_type="bpe", hard_vocab_limit=False, minloglevel=2)
    tok = load_tokenizer_source(str(tmp_path / "m.model"))
    for line in TEXT:
        assert tok.encode_words(line.split()) == tok.encode(line)
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_tokenizer_source(str(tmp_path / "missing.model"))
