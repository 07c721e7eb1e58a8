"""Speech LLMs trained through ``python -m returnn`` (prefix and cross-attention interfaces, AM units and the LLM's
own tokenizer, aux CTC), then recognised alone and jointly with CTC."""
import dataclasses
import json
import os

import pytest
import torch

from sisyphus import tk

from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig, config_from_dict
from llmasr.returnn.config import LearningRateSchedule, TrainingOptions
from llmasr.returnn.speech_llm import SpeechLLMSetup, SpeechLLMTrainingJob, setup_to_dict
from llmasr.returnn.training import read_learning_rates
from llmasr.search.nbest import read_nbest
from llmasr.search.options import LabelSyncBeam, TimeSyncOptions
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob, SpeechLLMSearchMode
from tests.test_returnn_am import data, pytestmark  # noqa: F401  (espeak-ng corpus fixture, skip marker)
from tests.tiny_models import save_tiny_aed

OPTS = TrainingOptions(num_epochs=1, batch_size_seconds=8, learning_rate=1e-3, torch_threads=1,
                       schedule=LearningRateSchedule.CONSTANT)


def _parts(data, tmp_path, run_job):
    from llmasr.llm.train import CreateTinyLLMJob
    from llmasr.models.llm import TinyLLMConfig

    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_file=data["spm"].get_path()).get_piece_size()
    ckpt, config, _ = save_tiny_aed(str(tmp_path), vocab)
    llm = run_job(CreateTinyLLMJob(data["spm"], config=TinyLLMConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)))
    return tk.Path(ckpt), tk.Path(config), llm.out_model, vocab


def _corpus(zip_path: tk.Path) -> tk.Path:
    return tk.Path(os.path.join(zip_path.get_path()[: -len(".zip")], "corpus.jsonl.gz"))


def test_setup_config_round_trip():
    cfg = SpeechLLMConfig(adapter_k=2, interface=SpeechInterface.CROSS_ATTENTION, llm_training=LLMTraining.LORA)
    setup = SpeechLLMSetup(config=cfg, llm="Qwen/Qwen2-0.5B", aed_checkpoint=tk.Path("/a.pt"),
                           aed_model_config=tk.Path("/a.json"))
    d = setup_to_dict(setup)
    assert d["config"]["interface"] == "cross_attention" and d["llm"] == "Qwen/Qwen2-0.5B"
    assert config_from_dict(d["config"]) == cfg
    with pytest.raises(ValueError, match="adapter_kk"):
        config_from_dict({**d["config"], "adapter_kk": 2})
    # setups stored by older versions also hold the derived fields, at placeholder values: left out
    assert config_from_dict({**d["config"], "encoder_dim": 0, "bos_id": 0, "prompt_pre": []}) == cfg


def test_prefix_speech_llm_am_units_trains_and_recognises(data, run_job, tmp_path):
    aed_ckpt, aed_cfg, llm, vocab = _parts(data, tmp_path, run_job)
    setup = SpeechLLMSetup(config=SpeechLLMConfig(adapter_k=2, llm_training=LLMTraining.LORA,
                                                  aux_ctc_scale=0.3),
                           llm=llm, aed_checkpoint=aed_ckpt, aed_model_config=aed_cfg, am_spm_model=data["spm"],
                           prompt_pre_text="the", prompt_post_text="cat")
    job = run_job(SpeechLLMTrainingJob(setup, data["train"], data["dev"], data["spm"], options=OPTS, cpu=1))
    scores = read_learning_rates(job.out_learning_rates.get_path())
    assert {"dev_loss_ce", "dev_loss_aux_ctc", "train_loss_ce"} <= set(scores[1]["error"])
    written = json.load(open(job.out_setup.get_path()))
    assert written["config"]["ctc_vocab_size"] == vocab + 1
    state = torch.load(job.out_last_checkpoint.get_path(), map_location="cpu")["model"]
    aed_state = torch.load(aed_ckpt.get_path())["model"]
    # LoRA adapters in the LLM; the encoder starts from the AED's and trains
    assert any("lora" in k for k in state)
    assert any(not torch.equal(v, aed_state[k]) for k, v in state.items() if k.startswith("encoder."))

    corpus = _corpus(data["dev"])
    beam = run_job(SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, corpus,
                                     beam=LabelSyncBeam(beam_size=3, nbest=2, max_labels_per_second=5.0)))
    out = read_nbest(beam.out_nbest.get_path())
    assert sorted(out) == [f"en-gb/{i}" for i in range(4)]
    assert all(1 <= len(h) <= 2 and all(x < vocab for x in h[0]["labels"]) for h in out.values())
    # joint recognition with CTC log-probs over the same units (random here; blank last)
    g = torch.Generator().manual_seed(0)
    ctc = {k: torch.randn(12, vocab + 1, generator=g).log_softmax(-1) for k in out}
    torch.save(ctc, tmp_path / "ctc.pt")
    for mode in (SpeechLLMSearchMode.JOINT_LABEL_SYNC, SpeechLLMSearchMode.JOINT_TIME_SYNC):
        joint = run_job(SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, corpus, mode=mode,
                                          ctc_logprobs=tk.Path(str(tmp_path / "ctc.pt")),
                                          beam=LabelSyncBeam(beam_size=3, nbest=2, max_labels_per_second=5.0)))
        jo = read_nbest(joint.out_nbest.get_path())
        assert sorted(jo) == sorted(out) and all("ctc" in h[0]["scores"] for h in jo.values())
        if mode == SpeechLLMSearchMode.JOINT_TIME_SYNC:  # the same interpolation as label-sync: 0.7 LLM + 0.3 CTC
            assert all(h["score"] == pytest.approx(0.7 * h["scores"]["am"] + 0.3 * h["scores"]["ctc"], abs=1e-4)
                       for hyps in jo.values() for h in hyps)
    # the paper's joint search: the speech LLM's own aux CTC, beam 4, soft collapse 0.8, CTC scale from a variable;
    # the naive reference (every hypothesis scored every frame, one call each) finds the same hypotheses
    scale = tk.Variable(str(tmp_path / "ctc_scale"))
    scale.set(0.4)
    found = []
    for fast in (True, False):
        own = run_job(SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, corpus,
                                        mode=SpeechLLMSearchMode.JOINT_TIME_SYNC, ctc_scale=scale,
                                        beam=LabelSyncBeam(beam_size=4, nbest=1),
                                        time_sync=TimeSyncOptions(soft_collapse_threshold=0.8,
                                                                  score_new_labels_only=fast, batch_hyps=fast)))
        found.append({k: h[0]["labels"] for k, h in read_nbest(own.out_nbest.get_path()).items()})
    assert sorted(found[0]) == sorted(out) and found[0] == found[1]


def test_cross_attention_speech_llm_own_tokenizer_trains(data, run_job, tmp_path):
    aed_ckpt, aed_cfg, llm, _ = _parts(data, tmp_path, run_job)
    setup = SpeechLLMSetup(config=SpeechLLMConfig(interface=SpeechInterface.CROSS_ATTENTION,
                                                  llm_training=LLMTraining.FROZEN, freeze_encoder=True),
                           llm=llm, aed_checkpoint=aed_ckpt, aed_model_config=aed_cfg)
    job = run_job(SpeechLLMTrainingJob(setup, data["train"], data["dev"], data["spm"], options=OPTS, cpu=1))
    state = torch.load(job.out_last_checkpoint.get_path(), map_location="cpu")["model"]
    aed_state = torch.load(aed_ckpt.get_path())["model"]
    enc = {k: v for k, v in state.items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, aed_state[k]) for k, v in enc.items())  # frozen encoder = the AED's
    beam = run_job(SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, _corpus(data["dev"]),
                                     beam=LabelSyncBeam(beam_size=2, nbest=1, max_labels_per_second=5.0)))
    assert len(read_nbest(beam.out_nbest.get_path())) == 4
    # joint search needs labels shared with a CTC output; this one keeps the LLM's tokenizer (and has no aux CTC)
    with pytest.raises(ValueError, match="needs a speech LLM over the CTC model's units"):
        run_job(SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, _corpus(data["dev"]),
                                  mode=SpeechLLMSearchMode.JOINT_TIME_SYNC))


def test_models_train_on_stored_encoder_outputs(data, run_job, tmp_path):
    """A frozen encoder's outputs are stored once (HDF); an AED decoder and a speech LLM train on them and their
    checkpoints hold the whole model with the encoder unchanged."""
    import h5py

    from llmasr.models.conformer import AedModelConfig, TransformerDecoderConfig, tiny_encoder_config
    from llmasr.returnn.forward import DumpEncoderFramesJob, RecogMode, ReturnnForwardJob
    from llmasr.returnn.training import ReturnnTrainingJob

    aed_ckpt, aed_cfg, llm, vocab = _parts(data, tmp_path, run_job)
    frames = {s: run_job(DumpEncoderFramesJob(aed_ckpt, aed_cfg, data[s], data["spm"])).out_frames
              for s in ("train", "dev")}
    with h5py.File(frames["dev"].get_path()) as f:
        assert f["inputs"].shape[1] == 32 and len(f["seqTags"]) == 4  # encoder width; 4 dev utterances
    aed_state = torch.load(aed_ckpt.get_path())["model"]

    cfg = AedModelConfig(encoder=tiny_encoder_config(), aux_ctc_layers=(2,), aux_ctc_scales=(0.3,),
                         decoder=TransformerDecoderConfig(num_layers=1, dim=32, num_heads=2, ff_dim=64, dropout=0.0))
    aed = run_job(ReturnnTrainingJob(cfg, frames["train"], frames["dev"], data["spm"], options=OPTS, cpu=1,
                                     init_checkpoint=aed_ckpt))
    state = torch.load(aed.out_last_checkpoint.get_path(), map_location="cpu")["model"]
    # no threaded HDF cache: it hands out labels before they are read (-1 ids)
    assert "'cache_byte_size': 0" in open(aed.out_returnn_config.get_path()).read()
    assert all(torch.equal(v, aed_state[k]) for k, v in state.items() if k.startswith("encoder."))
    assert not torch.equal(state["decoder.output.weight"], aed_state["decoder.output.weight"])
    scores = read_learning_rates(aed.out_learning_rates.get_path())[1]["error"]
    assert {"dev_loss_ce", "dev_loss_aux_ctc_2", "train_loss_ce"} <= set(scores)
    rec = run_job(ReturnnForwardJob(aed.out_last_checkpoint, aed.out_model_config, data["dev"], data["spm"],
                                    mode=RecogMode.AED_BEAM, beam_size=2, nbest=1, max_len_ratio=0.4))
    assert len(read_nbest(rec.out_nbest.get_path())) == 4

    setup = SpeechLLMSetup(config=SpeechLLMConfig(adapter_k=2, llm_training=LLMTraining.LORA,
                                                  freeze_encoder=True, aux_ctc_scale=0.3),
                           llm=llm, aed_checkpoint=aed_ckpt, aed_model_config=aed_cfg, am_spm_model=data["spm"])
    sllm = run_job(SpeechLLMTrainingJob(setup, frames["train"], frames["dev"], data["spm"], options=OPTS, cpu=1))
    state = torch.load(sllm.out_last_checkpoint.get_path(), map_location="cpu")["model"]
    assert all(torch.equal(v, aed_state[k]) for k, v in state.items() if k.startswith("encoder."))
    assert {"dev_loss_ce", "train_loss_ce"} <= set(read_learning_rates(sllm.out_learning_rates.get_path())[1]["error"])

    trainable = dataclasses.replace(setup, config=dataclasses.replace(setup.config, freeze_encoder=False))
    with pytest.raises(ValueError, match="freeze_encoder"):
        SpeechLLMTrainingJob(trainable, frames["train"], frames["dev"], data["spm"], options=OPTS).create_files()
