"""The paper-scale graphs carry the paper's hyperparameters: checked on the built jobs (no job runs)."""
import importlib

import pytest

from sisyphus import tk
from sisyphus.graph import graph


def _check_names(outputs):
    """Outputs and aliases of the graph are typable names (lower case, no spaces or brackets)."""
    from config.names import NAME_PATTERN

    aliases = {a for j in graph.jobs() for a in (j.get_aliases() or ())}
    assert sorted(n for n in set(outputs) | aliases if not NAME_PATTERN.match(n)) == []
    # an alias links its job's folder: none may be a folder of another alias
    folders = {a.rsplit("/", i)[0] for a in aliases for i in range(1, a.count("/") + 1)}
    assert sorted(aliases & folders) == []


def _jobs(kind: str):
    return [j for j in graph.jobs() if type(j).__name__ == kind]


def test_librispeech_graph_has_the_papers_hyperparameters_and_tables():
    from config import ablations, paper
    from llmasr.models.conformer import (AedModelConfig, CtcModelConfig, DecoderNorm, DecoderPositions,
                                         FeedForwardActivation, FrontendType)
    from llmasr.search.delayed_fusion import FusionMode
    from llmasr.search.speech_llm_recog import SpeechLLMSearchMode

    importlib.import_module("config.librispeech.experiment").py()
    names = {t.name for t in graph.targets}
    _check_names(names)

    # acoustic models: 16 x 1024, 8 heads, relu^2, conv subsampling, aux CTC 4/10(/16), RMSNorm+gated FF+RoPE, bf16
    train = _jobs("ReturnnTrainingJob")
    ams = {type(j.model_config).__name__ + str(j.model_config.encoder.num_layers): j for j in train}
    assert set(ams) == {"CtcModelConfig16", "AedModelConfig16", "CtcModelConfig18"}
    for j in train:
        enc = j.model_config.encoder
        assert (enc.dim, enc.num_heads, enc.ff_dim, enc.logmel.num_filters) == (1024, 8, 4096, 80)
        assert enc.ff_activation == FeedForwardActivation.RELU_SQUARED and enc.frontend == FrontendType.CONV_SUBSAMPLE
        assert j.options.bf16 and j.options.grad_clip_norm == 5.0 and j.rqmt["gpu"] == 1
    aed = ams["AedModelConfig16"].model_config
    assert isinstance(aed, AedModelConfig) and aed.aux_ctc_layers == (4, 10, 16) and aed.label_smoothing == 0.1
    assert (aed.decoder.num_layers, aed.decoder.dim, aed.decoder.norm, aed.decoder.gated_ff,
            aed.decoder.positions) == (6, 1024, DecoderNorm.RMS_NORM, True, DecoderPositions.ROPE)
    ctc = ams["CtcModelConfig16"].model_config
    assert isinstance(ctc, CtcModelConfig) and ctc.aux_ctc_layers == (4, 10)
    assert ams["CtcModelConfig18"].model_config.aux_ctc_layers == (16,)  # the speech LLM's encoder, pre-trained

    # speech LLMs: rsLoRA r=320 alpha 16 on q/v, aux CTC at 16 and 18, the 18-layer encoder, trainable (base)
    sllm = _jobs("SpeechLLMTrainingJob")
    assert len(sllm) >= 15
    for j in sllm:
        cfg = j.setup.config
        assert (cfg.lora_rank, cfg.lora_alpha, cfg.use_rslora, cfg.lora_targets) == (320, 16.0, True,
                                                                                   ("q_proj", "v_proj"))
        assert cfg.aux_ctc_layers == (16, 18) and j.options.bf16
        if j.setup.encoder is None:
            assert j.setup.aed_model_config.creator.model_config.encoder.num_layers == 18
        else:
            assert j.setup.encoder.num_layers == 18 and j.setup.aed_checkpoint is None
    llms = {j.setup.llm.creator.repo_id for j in sllm}  # read from DownloadHFModelJob outputs
    assert {"Qwen/Qwen2-0.5B", "Qwen/Qwen2-1.5B", "Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen2-7B"} <= llms
    assert {j.setup.config.adapter_k for j in sllm} == {1, 2, 3, 4}
    assert {j.setup.config.freeze_encoder for j in sllm} == {False, True}
    # the paper's speech LLMs train on audio (the frozen-encoder ablation too) and join their own CTC output
    assert all(p.get_path().endswith(".zip") for j in sllm for p in (*j.train_data, *j.dev_data))
    assert not _jobs("PlotAttentionJob")

    # recognition: length norm counting EOS; joint: beam 4, soft collapse 0.8, CTC scale chosen on dev among 5
    recog = _jobs("SpeechLLMRecogJob")
    alone = [j for j in recog if j.mode == SpeechLLMSearchMode.BEAM]
    assert alone and all(j.beam.length_norm_counts_eos for j in alone)
    # alpha = 1, and alpha = 0 for the length-normalisation table (the base speech LLM of each size on every set)
    assert {j.beam.length_norm_exponent for j in alone} == {0.0, 1.0}
    unnormalised = [j for j in alone if j.beam.length_norm_exponent == 0.0]
    assert 0 < len(unnormalised) < len(alone) / 10
    joint = [j for j in recog if j.mode == SpeechLLMSearchMode.JOINT_TIME_SYNC]
    assert joint and all(j.beam.beam_size == 4 and j.ctc_logprobs is None for j in joint)
    tuned = [j for j in joint if isinstance(j.ctc_scale, tk.Variable)]
    assert {j.time_sync.soft_collapse_threshold for j in tuned} == {0.8, None}  # None: the optimisation table's rows
    assert {j.ctc_scale for j in joint if not isinstance(j.ctc_scale, tk.Variable)} == set(paper.JOINT_CTC_SCALES)
    select = _jobs("SelectBestScaleJob")
    assert select and all(sorted(j.wers) == list(paper.JOINT_CTC_SCALES) for j in select)

    # shallow fusion: delays 1, 5, 10, 20, end; scale tuning 21 points in [0, 2], 10 refinements; prior on 100k
    delayed = [j for j in _jobs("CTCFusionSearchJob") if j.mode == FusionMode.DELAYED]
    assert {j.delay for j in delayed} == {1, 5, 10, 20, None}
    assert "librispeech/ctc-delayed-own-units-qwen2-1.5b-k=10/test-other/wer.json" in names
    tuning = _jobs("TuneScalesJob")
    grid = tuple(i / 10 for i in range(21))
    assert tuning and all(j.lm_scales == grid and j.refine_rounds == 10 for j in tuning)
    assert all(j.prior_scales in (grid, (0.0,)) for j in tuning)
    prior = _jobs("EstimateCtcPriorJob")
    assert len(prior) == 1 and prior[0].max_utterances == 100_000 and len(prior[0].data) == 3
    lm = [j for j in _jobs("CreateTinyLLMJob")]
    assert len(lm) == 1 and lm[0].config.num_hidden_layers == 32 and lm[0].config.hidden_size == 1024
    assert "librispeech/ctc-labelwise-trafo-lm-32l/dev-other/wer.json" in names
    for size in ("qwen2-0.5b", "qwen2-1.5b"):
        assert f"librispeech/ctc-delayed-own-units-{size}-k=5/test-other/wer.json" in names
        assert f"librispeech/speech-llm-{size}-ctc/ami/wer.json" in names
    assert {"librispeech/aed-ctc/earnings22/wer.json", "librispeech/speech-llm-qwen2-1.5b-xattn/ami/wer.json",
            "librispeech/speech-llm-qwen2-1.5b-units-bpe1k/test-other/wer.json"} <= names

    # tables: every ablation family and the comparison, with the Open ASR mean over the 8 sets and RTFx
    tables = {"results", "hallucination", "label_units", "encoder_frozen_vs_trainable", "llm_base_vs_instruct",
              "llm_size", "encoder_downsampling", "interface_and_fine_tuning", "length_normalisation",
              "joint_optimisations", "speech_llms", "open_asr", "fusion_qwen2-0.5b", "fusion_qwen2-1.5b", "fusion_trafo-lm-32l"}
    assert {f"librispeech/report/{t}.md" for t in tables} <= names
    assert len(ablations.ABLATIONS) == 8
    reports = [j for j in _jobs("ReportTableJob") if j.set_means and "Open ASR mean" in j.set_means]
    assert reports and all(len(j.set_means["Open ASR mean"]) == 8 and j.rtfx is not None for j in reports)
    by_table = {t.name: t for t in graph.targets}
    units = by_table["librispeech/report/label_units.md"].path.creator
    assert list(units.results) == ["SPM unigram 10k (AM units)", "BPE 1k", "BPE 2k", "BPE 10k", "LLM tokenizer"]
    opt = by_table["librispeech/report/joint_optimisations.md"].path.creator
    assert len(opt.results) == 6 and set(opt.rtfx["none (naive)"]) == {"dev-other", "test-other"}


def test_loquacious_graph_trains_on_small_medium_and_large():
    from llmasr.data.loquacious import LoquaciousSubset

    importlib.import_module("config.loquacious.experiment").py()
    names = {t.name for t in graph.targets}
    _check_names(names)
    for subset in ("small", "medium", "large"):
        assert f"loquacious/{subset}/report/results.md" in names
        assert f"loquacious/{subset}/speech-llm-qwen2-1.5b-ctc/test/wer.json" in names
        assert f"loquacious/{subset}/ami/wer.json" not in names  # systems are scored per set under their names
        assert f"loquacious/{subset}/ctc-beam/voxpopuli/wer.json" in names
    corpora = {j.subset for j in graph.jobs() if type(j).__name__ == "LoquaciousCorpusJob"}
    assert {LoquaciousSubset.SMALL, LoquaciousSubset.MEDIUM, LoquaciousSubset.LARGE} <= corpora
    # one shared set of evaluation corpora; a prior on 100k utterances per subset
    assert sum(1 for j in graph.jobs() if type(j).__name__ == "LoquaciousCorpusJob") == 5
    assert {j.max_utterances for j in graph.jobs() if type(j).__name__ == "EstimateCtcPriorJob"} == {100_000}


def test_one_lora_setup_for_speech_llm_and_fine_tuning():
    pytest.importorskip("peft")
    from config.paper import PAPER_LORA
    from llmasr.llm.train import FineTuneLLMJob, FineTuneMethod
    from llmasr.models.lora import lora_config

    sllm = PAPER_LORA.speech_llm_fields()
    a = lora_config(rank=sllm["lora_rank"], alpha=sllm["lora_alpha"], dropout=sllm["lora_dropout"],
                    targets=sllm["lora_targets"], use_rslora=sllm["use_rslora"])
    job = FineTuneLLMJob("Qwen/Qwen2-0.5B", tk.Path("/text.txt"), method=FineTuneMethod.LORA,
                         **PAPER_LORA.fine_tune_kwargs())
    b = lora_config(rank=job.lora_rank, alpha=job.lora_alpha, dropout=job.lora_dropout,
                    targets=job.lora_target_modules, use_rslora=job.use_rslora, causal_lm=True)
    for cfg in (a, b):
        assert (cfg.r, cfg.lora_alpha, cfg.use_rslora, set(cfg.target_modules)) == (320, 16.0, True,
                                                                                   {"q_proj", "v_proj"})
    # the job id of a fine-tuning without rsLoRA is the one it had before the option existed
    plain = FineTuneLLMJob("Qwen/Qwen2-0.5B", tk.Path("/text.txt"), method=FineTuneMethod.LORA)
    args = dict(plain._sis_kwargs)
    assert args.pop("use_rslora") is False
    assert FineTuneLLMJob.hash(args) == FineTuneLLMJob.hash(plain._sis_kwargs) != FineTuneLLMJob.hash(job._sis_kwargs)


def _recipe(**changes):
    from config.experiment import ExperimentData, Results
    from config.paper import SpeechLLMRecipe
    from llmasr.returnn.config import TrainingOptions

    data = ExperimentData(corpora={"dev": tk.Path("/dev.json")}, zips={"dev": tk.Path("/dev.zip")},
                          train_zips=tk.Path("/train.zip"), dev_zips=tk.Path("/dev.zip"), spm_model=tk.Path("/spm"),
                          tune_set="dev", eval_sets=("dev",))
    return SpeechLLMRecipe(data, Results("x", hallucination_set="dev"), TrainingOptions(), tk.Path("/ckpt"),
                           tk.Path("/model_config.json"), **changes)


def test_speech_llm_recipe_defaults_are_the_papers():
    from config import paper
    from llmasr.models.speech_llm import LLMTraining, SpeechInterface
    from llmasr.search.speech_llm_recog import SpeechLLMSearchMode

    recipe = _recipe()
    assert (recipe.lora, recipe.aux_ctc_layers, recipe.adapter_k, recipe.freeze_encoder) == (
        paper.PAPER_LORA, (16, 18), 2, False)
    assert (recipe.recog_beam, recipe.joint_beam, recipe.joint_time_sync) == (
        paper.RECOG_BEAM, paper.JOINT_BEAM, paper.JOINT_TIME_SYNC)
    assert recipe.joint_modes == {"ctc": SpeechLLMSearchMode.JOINT_TIME_SYNC}
    assert recipe.joint_ctc_scales == paper.JOINT_CTC_SCALES and recipe.device == "cuda"
    assert recipe.encoder_frames is None and recipe.ctc_logprobs is None and not recipe.attention_plots
    cfg = recipe.config(interface=SpeechInterface.CROSS_ATTENTION, llm_training=LLMTraining.FULL, adapter_k=3)
    assert (cfg.lora_rank, cfg.use_rslora, cfg.aux_ctc_layers, cfg.aux_ctc_scale, cfg.adapter_k) == (
        320, True, (16, 18), 1.0, 3)
    # without aux CTC layers the config has no CTC output
    plain = _recipe(aux_ctc_layers=None).config()
    assert plain.aux_ctc_scale == 0.0 and plain.aux_ctc_layers == ()


def test_speech_llm_recipe_rejects_bad_fields():
    from llmasr.search.speech_llm_recog import SpeechLLMSearchMode

    for changes, field in ((dict(joint_modes={}), "joint_modes"), (dict(joint_ctc_scales=()), "joint_ctc_scales"),
                           (dict(joint_modes={"x": SpeechLLMSearchMode.BEAM}), "joint_modes"),
                           (dict(encoder_frames={"train": tk.Path("/f.hdf")}), "encoder_frames")):
        with pytest.raises(ValueError, match=field):
            _recipe(**changes)


def test_ablation_checks():
    from config import ablations
    from config.paper import PaperSpeechLLM, joint_findings
    from llmasr.search.options import LabelSyncBeam

    base = PaperSpeechLLM(train=None, systems={"alone": "speech-llm-b"})
    with pytest.raises(ValueError, match="alpha=0"):
        ablations.length_normalisation("x", _recipe(recog_beam=LabelSyncBeam(length_norm_exponent=0.0)), base)
    with pytest.raises(ValueError, match="no row of the base system"):
        ablations.ablation_findings(base, {"t": {"a": "speech-llm-c"}})
    findings = ablations.ablation_findings(base, {"t": {"b": "speech-llm-b", "c": "speech-llm-c"}})
    assert [(f.claim, f.comparisons) for f in findings] == [
        ("ablation (t): c against b", (("speech-llm-c", "vs", "speech-llm-b"),))]
    with pytest.raises(ValueError, match="joint_findings"):
        joint_findings(base)
    # every joint search is checked against both the speech LLM and the CTC model, not only the first
    both = PaperSpeechLLM(train=None, systems={"alone": "s", "joint": "s-ls", "ls": "s-ls", "ts": "s-ts"})
    wer, hallucination = joint_findings(both)
    assert [f.comparisons for f in wer] == [(("s-ls", "<", "s"), ("s-ls", "<", "ctc-beam")),
                                           (("s-ts", "<", "s"), ("s-ts", "<", "ctc-beam"))]
    assert len(hallucination) == 2
