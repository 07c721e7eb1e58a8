"""Options the paper needs, each off by default: aux CTC on several speech-LLM encoder layers, rsLoRA, EOS in the
length normalisation, bf16 autocast, the CTC prior on a random subset, dev-tuned search scales, report columns."""
import math

import pytest
import torch

from llmasr.models.conformer import tiny_encoder_config
from llmasr.models.conformer_modules import ConformerEncoder, ctc_loss_sum
from llmasr.models.llm import tiny_random_qwen2
from llmasr.models.speech_llm import LLMTraining, SpeechLLMConfig
from llmasr.models.speech_llm_modules import SpeechLLM
from llmasr.scoring.report import markdown_table
from llmasr.search.beam_search import beam_search
from llmasr.search.scorer import LabelScorer

V, BOS, EOS = 20, 0, 1


def test_speech_llm_aux_ctc_on_two_encoder_layers_and_rslora():
    pytest.importorskip("peft")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    encoder = ConformerEncoder(tiny_encoder_config(num_layers=3))
    cfg = SpeechLLMConfig(adapter_k=2, llm_training=LLMTraining.LORA, ctc_vocab_size=V + 1, aux_ctc_scale=0.5,
                          aux_ctc_layers=(2, 3), lora_rank=4, lora_alpha=16.0,
                          use_rslora=True).resolve(encoder_dim=32, bos_id=BOS, eos_id=EOS)
    model = SpeechLLM(cfg, encoder, tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS)).train()
    lora_a = [m for n, m in model.llm.named_modules() if n.endswith("q_proj")][0]
    assert lora_a.scaling["default"] == pytest.approx(16.0 / math.sqrt(4))  # rsLoRA: alpha / sqrt(r)
    audio = 0.1 * torch.randn(2, 8000)
    lens = torch.tensor([8000, 6000])
    targets = [[3, 4, 9], [8, 2]]
    losses = model.compute_losses(audio, lens, targets)
    assert set(losses) == {"ce", "aux_ctc_2", "aux_ctc_3"} and losses["aux_ctc_2"][1] == 0.5
    model.eval()
    outs, flens = encoder(audio, lens, return_layers=[1, 2])
    for layer, out in zip((2, 3), outs):
        ref = ctc_loss_sum(model.ctc_heads[str(layer)](out), flens, torch.tensor([[3, 4, 9], [8, 2, 0]]),
                           torch.tensor([3, 2]), blank=V)
        got = model.compute_losses(audio, lens, targets)[f"aux_ctc_{layer}"][0]
        assert float(got) == pytest.approx(float(ref), rel=1e-4)
    logp, _ = model.ctc_log_probs(audio, lens)  # joint search reads the highest layer
    assert torch.allclose(logp, model.ctc_heads["3"](outs[1]).log_softmax(-1), atol=1e-5)
    with pytest.raises(ValueError, match="outside the encoder's layers"):
        SpeechLLM(SpeechLLMConfig(ctc_vocab_size=V + 1, aux_ctc_layers=(4,)).resolve(encoder_dim=32, bos_id=BOS,
                                                                                    eos_id=EOS), encoder,
                  tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS))


class _Fixed(LabelScorer):
    """Scores from a table by step: a short hypothesis [5] + EOS and a long one [6, 7] + EOS."""

    def initial_state(self, batch_indices):
        return torch.zeros(len(batch_indices), dtype=torch.long)

    def score(self, state, labels):
        lp = torch.full((labels.shape[0], 8), -30.0)
        for i, (step, lab) in enumerate(zip(state.tolist(), labels.tolist())):
            if step == 0:
                lp[i, 5], lp[i, 6] = math.log(0.5), math.log(0.5)
            elif lab == 5:
                lp[i, EOS] = -1.0 - math.log(0.5)
            elif lab == 6:
                lp[i, 7] = 0.0
            elif lab == 7:
                lp[i, EOS] = -1.8 - math.log(0.5)
        return lp, state + 1

    def select(self, state, indices):
        return state[indices]


def test_length_norm_counting_eos_changes_the_ranking():
    # log p with EOS: short [5] = -1.0, long [6, 7] = -1.8. Labels only: -1.0 / 1 < -1.8 / 2, the long one wins;
    # counting EOS: -1.0 / 2 > -1.8 / 3, the short one wins
    for counts_eos, lengths, best in ((False, {(5,): 1, (6, 7): 2}, [6, 7]), (True, {(5,): 2, (6, 7): 3}, [5])):
        out = beam_search({"am": (_Fixed(), 1.0)}, 1, 2, BOS, EOS, 5, 1.0, length_norm_counts_eos=counts_eos)[0]
        assert sorted(tuple(h["labels"]) for h in out) == [(5,), (6, 7)]
        for hyp in out:
            assert hyp["score"] == pytest.approx(hyp["scores"]["am"] / lengths[tuple(hyp["labels"])])
        assert out[0]["labels"] == best


def test_bf16_and_prior_subset_reach_the_returnn_configs(tmp_path, monkeypatch):
    from llmasr.returnn.config import TrainingOptions, training_params
    from llmasr.returnn.forward import forward_params

    z = tmp_path / "a.zip"
    z.write_bytes(b"")
    params = training_params({}, [str(z)], [str(z)], "spm", 10, "m", "lr", TrainingOptions(bf16=True))
    assert params["torch_amp"] == "bfloat16"
    assert "torch_amp" not in training_params({}, [str(z)], [str(z)], "spm", 10, "m", "lr", TrainingOptions())
    assert TrainingOptions().__sis_state__() == {k: v for k, v in TrainingOptions(bf16=False).__dict__.items()
                                                 if k not in ("bf16", "lr_points", "torch_threads", "num_workers")}
    cfg, ckpt = tmp_path / "model_config.json", tmp_path / "epoch.001.pt"
    cfg.write_text("{}")
    ckpt.write_bytes(b"")
    monkeypatch.setattr("llmasr.returnn.forward.spm_vocab_size", lambda _: 10)
    kwargs = dict(mode="ctc_prior", opts={}, outputs={}, batch_seconds=10, max_seqs=2)
    sub = forward_params(str(cfg), str(ckpt), [str(z)], "spm", max_utterances=100_000, **kwargs)
    assert sub["forward_data"]["fixed_random_subset"] == 100_000
    assert "fixed_random_subset" not in forward_params(str(cfg), str(ckpt), [str(z)], "spm", **kwargs)["forward_data"]


def test_select_best_scale_and_report_columns(tmp_path, run_job):
    from sisyphus import tk

    from llmasr.tuning.scales import SelectBestScaleJob

    wers = {}
    for scale, wer in ((0.1, 7.0), (0.3, 5.5), (0.5, 5.5)):
        v = tk.Variable(str(tmp_path / f"wer{scale}"))
        v.set(wer)
        wers[scale] = v
    job = run_job(SelectBestScaleJob(wers))
    assert job.out_scale.get() == 0.3 and job.out_wer.get() == 5.5  # ties go to the smaller scale

    table = markdown_table({"a": {"ami": 10.0, "tedlium": 4.0, "dev": 2.0}, "b": {"ami": 20.0, "tedlium": 6.0}},
                           set_means={"Open ASR mean": ("ami", "tedlium")},
                           rtfx={"a": {"ami": 100.0, "tedlium": 300.0}, "b": {"ami": None}})
    lines = table.splitlines()
    assert lines[0] == "| system | ami | dev | tedlium | avg | Open ASR mean | RTFx |"
    assert lines[2] == "| a | 10.00 | 2.00 | 4.00 | 5.33 | 7.00 | 200.0 |"
    assert lines[3] == "| b | 20.00 | - | 6.00 | 13.00 | 13.00 | - |"
    # without the new options the table is the one of before
    assert markdown_table({"a": {"x": 1.0}}).splitlines()[0] == "| system | x | avg |"


def test_speech_llm_setup_with_its_own_encoder_config(tmp_path):
    """The paper's encoder need not be the AED's: a setup with an encoder config builds a fresh encoder of that size
    (no AED files needed), and its setup dict round-trips."""
    pytest.importorskip("sentencepiece")
    from llmasr.models.conformer import FeedForwardActivation
    from llmasr.models.conformer_modules import ConformerEncoder
    from llmasr.models.speech_llm_modules import build_from_setup
    from llmasr.returnn.speech_llm import SpeechLLMSetup, setup_to_dict
    from tests.test_speech_llm import speech_llm_files

    files = speech_llm_files(tmp_path)
    enc = tiny_encoder_config(num_layers=3, ff_activation=FeedForwardActivation.RELU_SQUARED)
    cfg = SpeechLLMConfig(ctc_vocab_size=files["am_vocab"] + 1, aux_ctc_scale=1.0,
                          aux_ctc_layers=(2, 3))
    setup = SpeechLLMSetup(config=cfg, llm=files["llm"], aed_checkpoint=None, aed_model_config=None,
                           am_spm_model=files["am_spm_model"], encoder=enc)
    d = setup_to_dict(setup)
    assert d["encoder"]["ff_activation"] == "relu_squared" and d["aed_checkpoint"] is None
    model, tok = build_from_setup(d, with_aed_weights=True)
    assert isinstance(model.encoder, ConformerEncoder) and model.encoder.cfg == enc
    assert model.cfg.encoder_dim == 32 and set(model.ctc_heads) == {"2", "3"}
    with pytest.raises(ValueError, match="aed_checkpoint and aed_model_config are needed"):
        SpeechLLMSetup(config=cfg, llm=files["llm"], aed_checkpoint=None, aed_model_config=None)
