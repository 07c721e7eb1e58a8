"""AedFusionSearchJob on a random tiny AED and a random tiny LLM over the AM units: scores add up, the cached LLM
score of each hypothesis equals a full forward, and lm_scale 0 keeps the plain AED search."""
import json

import pytest
import torch

from sisyphus import tk

from llmasr.search.aed_fusion import AedFusionSearchJob
from tests.tiny_models import save_tiny_aed, write_noise_corpus

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "she sells sea shells", "birds fly over the hill"]


@pytest.fixture
def setup(tmp_path):
    import sentencepiece as spm

    torch.set_num_threads(1)
    (tmp_path / "text.txt").write_text("\n".join(SENTENCES * 10) + "\n")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / "am"),
                                   vocab_size=30, hard_vocab_limit=False, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_file=str(tmp_path / "am.model")).get_piece_size()
    ckpt, config, _ = save_tiny_aed(str(tmp_path), vocab, name="epoch.001.pt")
    write_noise_corpus(str(tmp_path), SENTENCES[:3])
    return {"ckpt": tk.Path(str(tmp_path / "epoch.001.pt")), "config": tk.Path(str(tmp_path / "model_config.json")),
            "corpus": tk.Path(str(tmp_path / "dev.jsonl.gz")), "spm": tk.Path(str(tmp_path / "am.model"))}


def test_aed_labelwise_fusion_job(run_job, setup):
    from llmasr.llm.train import CreateTinyLLMJob
    from llmasr.models.llm import TinyLLMConfig, load_llm, load_llm_tokenizer
    from llmasr.models.llm import score_sequences
    from llmasr.search.nbest import read_nbest

    llm = run_job(CreateTinyLLMJob(setup["spm"], config=TinyLLMConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)))
    common = dict(beam_size=3, nbest=3, max_len_ratio=0.5, utterances_per_batch=2)
    plain = run_job(AedFusionSearchJob(setup["ckpt"], setup["config"], setup["corpus"], setup["spm"], **common))
    zero = run_job(AedFusionSearchJob(setup["ckpt"], setup["config"], setup["corpus"], setup["spm"], llm.out_model,
                                      lm_scale=0.0, **common))
    fused = run_job(AedFusionSearchJob(setup["ckpt"], setup["config"], setup["corpus"], setup["spm"], llm.out_model,
                                       lm_scale=0.7, length_norm_exponent=0.0, **common))
    plain_nb, zero_nb, fused_nb = (read_nbest(j.out_nbest.get_path()) for j in (plain, zero, fused))
    assert sorted(plain_nb) == ["u0", "u1", "u2"]
    for seq_id in plain_nb:
        assert [h["labels"] for h in zero_nb[seq_id]] == [h["labels"] for h in plain_nb[seq_id]]
        assert "lm" not in plain_nb[seq_id][0]["scores"] and "lm" in zero_nb[seq_id][0]["scores"]
    model = load_llm(llm.out_model.get_path())
    tok = load_llm_tokenizer(llm.out_model.get_path())
    hyps = [h for hs in fused_nb.values() for h in hs]
    full = score_sequences(model, [h["labels"] for h in hyps], tok.bos_id, tok.eos_id)
    for h, lm in zip(hyps, full):
        assert h["scores"]["lm"] == pytest.approx(lm, abs=1e-3)
        assert h["score"] == pytest.approx(h["scores"]["am"] + 0.7 * h["scores"]["lm"], abs=1e-3)
        assert isinstance(h["text"], str)
    with open(fused.out_search_stats.get_path()) as f:
        stats = json.load(f)
    assert stats["llm_forward_tokens"] >= stats["llm_forward_calls"] > 0
    assert stats["audio_seconds"] == pytest.approx((8000 + 10000 + 12000) / 16000)


def test_aed_fusion_job_rejects_bad_input(setup, tmp_path):
    from llmasr.data.corpus import CorpusEntry, write_corpus

    write_corpus([CorpusEntry(id="x", audio=str(tmp_path / "missing.flac"), duration=1.0, speaker="s", text="a b")],
                 str(tmp_path / "bad.jsonl.gz"))
    job = AedFusionSearchJob(setup["ckpt"], setup["config"], tk.Path(str(tmp_path / "bad.jsonl.gz")), setup["spm"])
    job._sis_setup_directory()
    with pytest.raises(Exception, match="missing.flac"):
        job.run()
    assert not job._sis_finished()
