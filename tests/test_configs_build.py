"""The experiment configs build their graphs (no job runs): the toy default, the LibriSpeech data and LLMs, and the
paper-scale job ids (stable: a golden digest); their outputs and aliases have names a researcher can type."""
import hashlib
import importlib
import os

import pytest

from config.names import NAME_PATTERN, checked_name
from sisyphus.graph import graph

# Digest of the sorted job ids of the paper-scale graphs (LibriSpeech + Loquacious): a change of any paper-scale
# job id (a new hashed field, a resource entering the hash) fails here. After an intended change run
# ``UPDATE_PAPER_JOB_IDS=1 pytest tests/test_configs_build.py -k paper`` and commit the file with the reason.
PAPER_IDS_FILE = os.path.join(os.path.dirname(__file__), "data", "paper_scale_job_ids.txt")


def check_resources_out_of_the_hash(jobs):
    """Every job a config builds keeps its resources out of its id (``ResourceJob``; the classes are checked
    argument by argument in tests/test_resources.py)."""
    from llmasr.resources import ResourceJob

    plain = sorted({type(j).__name__ for j in jobs if not isinstance(j, ResourceJob)})
    assert not plain, f"jobs that hash their resources: {plain}"


def check_llms_are_downloaded(jobs):
    """No job but the download names a hub model: every LLM job reads a DownloadHFModelJob's output folder."""
    import dataclasses

    def hub_ids(value):
        if isinstance(value, str):
            return [value] if value.startswith(("Qwen/", "meta-llama/")) else []
        if isinstance(value, dict):
            return [h for v in value.values() for h in hub_ids(v)]
        if isinstance(value, (list, tuple, set)):
            return [h for v in value for h in hub_ids(v)]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return hub_ids(vars(value))
        return []

    named = {j.job_id(): hub_ids(j._sis_kwargs) for j in jobs if type(j).__name__ != "DownloadHFModelJob"}
    bad = {k: v for k, v in named.items() if v}
    assert not bad, f"jobs that would load a hub model at run time: {sorted(bad.items())[:5]}"
    assert any(type(j).__name__ == "DownloadHFModelJob" for j in jobs)


def check_paper_scale_job_ids(ids):
    """Compares ``<count> <sha256>`` of the sorted ids with the stored one (or rewrites it when asked to)."""
    ids = sorted(ids)
    line = f"{len(ids)} {hashlib.sha256(chr(10).join(ids).encode()).hexdigest()}"
    if os.environ.get("UPDATE_PAPER_JOB_IDS"):
        with open(PAPER_IDS_FILE, "w") as f:
            f.write(line + "\n")
    with open(PAPER_IDS_FILE) as f:
        stored = f.read().strip()
    assert line == stored, (f"paper-scale job ids changed ({line} != stored {stored} in {PAPER_IDS_FILE}): "
                            "existing work/ trees would be recomputed")


def test_toy_config_builds_the_whole_graph():
    toy = importlib.import_module("config.toy")
    toy.py()
    names = {t.name for t in graph.targets}
    assert "toy/report/results.md" in names
    assert {"toy/ctc-greedy/test/wer.json", "toy/aed-ctc/dev/wer.json", "toy/llm/ft-own/test/ppl.json",
            "toy/report/hallucination.md"} <= names
    # every fusion and speech-LLM system of the table is scored on dev and test
    systems = ["ctc-beam-rescore-ft-own", "aed-beam-rescore-pretrained", "ctc-labelwise", "aed-labelwise"] + [
        f"ctc-delayed-{units}-k={k}" for k in (1, 5, 10, 20, "end") for units in ("am-units", "own-units")]
    systems += [f"speech-llm-base{v}" for v in ("", "-frozen", "-full", "-xattn", "-prompt", "-k1", "-units-llm",
                                                 "-alpha=0", "-ctc-label-sync", "-ctc-time-sync")]
    for system in systems:
        assert {f"toy/{system}/dev/wer.json", f"toy/{system}/test/wer.json"} <= names, system
    jobs = graph.jobs()
    check_resources_out_of_the_hash(jobs)
    kinds = {j.job_id().split("/")[-1].split(".")[0] for j in jobs}
    assert {"MakeToyCorpusJob", "TrainSentencePieceJob", "ReturnnTrainingJob", "ReturnnForwardJob", "ScoreWERJob",
            "PretrainLLMJob", "ReportTableJob", "TuneScalesJob", "RescoreNBestJob", "CTCFusionSearchJob",
            "AedFusionSearchJob", "SpeechLLMTrainingJob", "SpeechLLMRecogJob"} <= kinds
    # the scales are tuned once per (AM, LLM) pair and shared by dev and test
    assert sum(1 for j in jobs if "TuneScalesJob" in j.job_id()) == 6
    # delayed fusion with the label-wise LLM uses the scales of CTC label-wise fusion (k=1 compares with it)
    fusion = [j for j in jobs if type(j).__name__ == "CTCFusionSearchJob"]
    labelwise = [j for j in fusion if j.mode.value == "labelwise"]
    same_llm = {j.scales.lm_scale.creator for j in fusion if j.mode.value == "delayed" and j.llm == labelwise[0].llm}
    assert len({j.scales.lm_scale.creator for j in labelwise}) == 1 and same_llm == {labelwise[0].scales.lm_scale.creator}
    # one encoder training: the AED's decoder and the speech LLMs train on the CTC encoder's stored outputs
    trainings = [j for j in jobs if "ReturnnTrainingJob" in j.job_id()]
    # (train, dev and the extra utterances, one dump per training OggZip)
    assert len(trainings) == 2 and sum(1 for j in jobs if "DumpEncoderFramesJob" in j.job_id()) == 3
    frames = {p.get_path() for j in trainings for p in j.train_data if p.get_path().endswith(".hdf")}
    assert len(frames) == 2
    extra = next(j for j in jobs if type(j).__name__ == "MakeToyExtraTrainJob")
    encoder = next(j for j in trainings if not any(p.get_path().endswith(".hdf") for p in j.train_data))
    decoder = next(j for j in trainings if j is not encoder)
    # the encoder trains on the corpus's and the extra utterances, in sub-epochs of the corpus's size; the decoder on
    # the encoder's outputs for the same utterances, in whole epochs
    assert {type(p.creator.corpus.creator).__name__ for p in encoder.train_data} == {"MakeToyCorpusJob",
                                                                                       "MakeToyExtraTrainJob"}
    assert extra in {p.creator.corpus.creator for p in encoder.train_data}
    assert {p.creator.data[0] for p in decoder.train_data} == set(encoder.train_data)
    assert (encoder.options.partition_epoch, decoder.options.partition_epoch) == (4, 1)
    sllm = [j for j in jobs if "SpeechLLMTrainingJob" in j.job_id()]
    assert {p.get_path() for j in sllm for p in j.train_data} == frames
    # dev (everything is chosen and tuned on it) is the dev sentences spoken by test's accents with variants heard in
    # neither train nor test; the corpus's dev set of training voices is only the trainings' validation set
    from llmasr.data.toy import DEV_VARIANTS, DEV_VOICES, TEST_VARIANTS, TEST_VOICES, TRAIN_VOICES
    assert not set(toy.TRAIN_VARIANTS) & set(DEV_VARIANTS + TEST_VARIANTS)
    assert set(DEV_VOICES) == set(TEST_VOICES) and not set(DEV_VOICES) & set(TRAIN_VOICES)
    assert not set(DEV_VARIANTS) & set(TEST_VARIANTS)
    def reference_jobs(split):
        return {type(j.corpus.creator).__name__ for j in jobs if type(j).__name__ == "ScoreWERJob"
                if any(a.endswith(f"/{split}/score") for a in j.get_aliases() or ())}

    assert reference_jobs("dev") == {"MakeToyUnseenVoicesJob"} and reference_jobs("test") == {"MakeToyCorpusJob"}
    assert [type(p.creator.corpus.creator).__name__ for p in encoder.dev_data] == ["MakeToyCorpusJob"]
    # every finding the toy is meant to show is checked in the report
    report = next(j for j in jobs if "toy/report/results" in (j.get_aliases() or ()))
    claims = " ".join(f.claim for f in report.findings)
    for word in ("AED+CTC below", "fusion below the AM", "rises with k", "close to label-wise", "rescoring",
                 "joint speech LLM + CTC (ctc-label-sync) below", "alpha=0", "full fine-tuning", "cross-attention",
                 "text prompt", "k=1", "LLM tokenizer", "fewer LLM calls"):
        assert word in claims, word
    # the LLM calls per utterance of every fusion system (not of the AMs alone or rescoring) are in the table
    fusion = {s for s in systems if "-labelwise" in s or "-delayed-" in s}
    assert set(report.llm_stats) == fusion and all(set(row) == {"dev", "test"} for row in report.llm_stats.values())
    hall = next(j for j in jobs if "toy/report/hallucination" in (j.get_aliases() or ()))
    assert sorted(f.comparisons[0][0] for f in hall.findings) == [
        "speech-llm-base-ctc-label-sync:insertions", "speech-llm-base-ctc-time-sync:insertions"]
    # shared stages are one job: a single corpus job and a single SentencePiece model feed everything
    assert sum(1 for j in jobs if "MakeToyCorpusJob" in j.job_id()) == 1
    assert sum(1 for j in jobs if "TrainSentencePieceJob" in j.job_id()) == 1


def test_toy_speech_llms_are_the_papers_recipe_at_toy_size():
    """The toy's speech LLMs come from config.paper / config.ablations with the toy's sizes: the AED's frozen encoder
    and its stored outputs, LoRA r=32 on every linear layer without aux CTC, joint recognition with the CTC model's
    log-probs (its scale chosen on dev by the label-sync search), one-thread CPU jobs, the ablation tables and
    attention plots."""
    from config import toy
    from llmasr.search.options import LabelSyncBeam, TimeSyncOptions
    from llmasr.search.speech_llm_recog import SpeechLLMSearchMode

    toy.py()
    names = {t.name for t in graph.targets}
    jobs = graph.jobs()
    by_kind = {}
    for j in jobs:
        by_kind.setdefault(type(j).__name__, []).append(j)
    sllm = by_kind["SpeechLLMTrainingJob"]
    assert len(sllm) == 7  # base, frozen, full, xattn, prompt, k=1, LLM tokenizer
    ctc = next(j for j in by_kind["ReturnnTrainingJob"] if type(j.model_config).__name__ == "CtcModelConfig")
    frames = {p.creator for p in (*sllm[0].train_data, *sllm[0].dev_data)}
    assert {type(c).__name__ for c in frames} == {"DumpEncoderFramesJob"} and len(frames) == 3  # + extra utterances
    for j in sllm:
        cfg = j.setup.config
        assert (cfg.lora_rank, cfg.lora_alpha, cfg.use_rslora) == (32, 32.0, False)
        assert set(cfg.lora_targets) == {f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")}
        assert cfg.freeze_encoder and cfg.aux_ctc_layers == () and cfg.aux_ctc_scale == 0.0
        # the AED's frozen encoder is the CTC model's: loaded from the CTC checkpoint, the frames' own encoder
        assert j.setup.aed_model_config == ctc.out_model_config and j.setup.encoder is None
        assert j.setup.aed_checkpoint == next(iter(frames)).checkpoint
        assert {p.creator for p in (*j.train_data, *j.dev_data)} == frames
        assert (j.rqmt["cpu"], j.rqmt["mem"], j.rqmt["gpu"]) == (1, 6, 0)
    assert {j.setup.config.adapter_k for j in sllm} == {1, 2}
    # the cross-attention system: its gates open from the start and its own (lower) learning rate; the others share one
    xattn = [j for j in sllm if j.setup.config.interface.value == "cross_attention"]
    assert len(xattn) == 1 and xattn[0].setup.config.cross_attention_gate_init == toy.SPEECH_LLM_XATTN_GATE_INIT > 0
    assert xattn[0].options == toy.SPEECH_LLM_XATTN_TRAINING != toy.SPEECH_LLM_TRAINING
    # the frozen-LLM system: an MLP adapter (all its speech side that learns) and its own (higher) learning rate
    frozen = [j for j in sllm if j.setup.config.llm_training.value == "frozen"]
    assert len(frozen) == 1 and frozen[0].setup.config.adapter_hidden == toy.SPEECH_LLM_FROZEN_ADAPTER_HIDDEN > 0
    assert frozen[0].options == toy.SPEECH_LLM_FROZEN_TRAINING != toy.SPEECH_LLM_TRAINING
    assert all(j.options == toy.SPEECH_LLM_TRAINING and j.setup.config.cross_attention_gate_init == 0.0
               and j.setup.config.adapter_hidden == 0 for j in sllm if j not in xattn + frozen)
    assert sum(1 for j in sllm if j.setup.am_spm_model is None) == 1  # the LLM's own tokenizer
    recog = by_kind["SpeechLLMRecogJob"]
    assert all(j.rqmt["cpu"] == 1 and j.device == "cpu" for j in recog)
    joint = [j for j in recog if j.mode != SpeechLLMSearchMode.BEAM]
    dumps = {j.out_ctc_logprobs for j in by_kind["DumpCtcLogProbsJob"]}
    assert len(joint) == len(toy.SPEECH_LLM_CTC_SCALES) + 4 and {j.ctc_logprobs for j in joint} == dumps
    assert {j.mode for j in joint} == {SpeechLLMSearchMode.JOINT_LABEL_SYNC, SpeechLLMSearchMode.JOINT_TIME_SYNC}
    assert all(j.beam == LabelSyncBeam() and j.time_sync == TimeSyncOptions() for j in joint)
    # the scale is tried on dev with the label-sync search; both modes then use the chosen one on dev and test
    tried = [j for j in joint if isinstance(j.ctc_scale, float)]
    assert sorted(j.ctc_scale for j in tried) == sorted(toy.SPEECH_LLM_CTC_SCALES) and len(toy.SPEECH_LLM_CTC_SCALES) > 1
    assert all(j.mode == SpeechLLMSearchMode.JOINT_LABEL_SYNC and type(j.corpus.creator).__name__ ==
               "MakeToyUnseenVoicesJob" for j in tried)  # the dev set
    chosen = [j for j in by_kind["SelectBestScaleJob"] if j.out_scale in {r.ctc_scale for r in joint}]
    assert len(chosen) == 1 and all(j.ctc_scale == chosen[0].out_scale for j in joint if j not in tried)
    # AED+CTC: its CTC weight tried on dev, the best one searched on dev and test
    aed_ctc = [j for j in by_kind["ReturnnForwardJob"] if j.mode.value == "aed_ctc"]
    tried_aed = [j for j in aed_ctc if isinstance(j.ctc_scale, float)]
    assert sorted(j.ctc_scale for j in tried_aed) == sorted(toy.AED_CTC_SCALES)
    assert all("dev" in str(j.data) for j in tried_aed)
    best = [j for j in by_kind["SelectBestScaleJob"] if j not in chosen and set(j.wers) == set(toy.AED_CTC_SCALES)]
    assert len(best) == 1
    assert len(aed_ctc) == len(toy.AED_CTC_SCALES) + 4 and all(j.ctc_scale == best[0].out_scale
                                                                 for j in aed_ctc if j not in tried_aed)
    # the lexicon (the words of the training and LM text): the three beam searches again, restricted to its words;
    # the CTC one with its own beam and a length reward tried on dev
    lexicon, = [j.out_word_list for j in by_kind["WordListJob"]]
    lex = [j for j in by_kind["ReturnnForwardJob"] if j.lexicon is not None]
    assert all(j.lexicon == lexicon for j in lex)
    assert sorted(j.mode.value for j in lex if j not in tried_aed) == ["aed_beam"] * 2 + ["aed_ctc"] * 2 + [
        "ctc_beam"] * (2 + len(toy.LEXICON_LENGTH_REWARDS))
    lex_ctc = [j for j in lex if j.mode.value == "ctc_beam"]
    assert all(j.beam_size == j.label_topk == toy.LEXICON_CTC_BEAM for j in lex_ctc)
    reward, = [j for j in by_kind["SelectBestScaleJob"] if set(j.wers) == set(toy.LEXICON_LENGTH_REWARDS)]
    assert sorted(j.length_reward for j in lex_ctc if isinstance(j.length_reward, float)) == sorted(
        toy.LEXICON_LENGTH_REWARDS)
    assert [j.length_reward for j in lex_ctc if not isinstance(j.length_reward, float)] == [reward.out_scale] * 2
    alone = [j for j in recog if j.mode == SpeechLLMSearchMode.BEAM]
    assert sorted(j.beam.length_norm_exponent for j in alone) == [0.0] * 2 + [1.0] * 14
    assert len(by_kind["TrainSentencePieceJob"]) == 1
    assert len(by_kind["PlotAttentionJob"]) == 7
    assert {f"toy/speech_llm/base{v}/attention" for v in ("", "-frozen", "-k1", "-units-llm")} <= names
    tables = {t.name: t.path.creator for t in graph.targets if t.name.startswith("toy/report/")}
    assert list(tables["toy/report/label_units.md"].results) == ["SPM unigram 256 (AM units)", "LLM tokenizer"]
    assert list(tables["toy/report/encoder_downsampling.md"].results) == ["k=1 (80 ms)", "k=2 (160 ms)"]
    assert list(tables["toy/report/length_normalisation.md"].results) == ["alpha=1", "alpha=0 (no normalisation)"]
    assert list(tables["toy/report/interface_and_fine_tuning.md"].results) == [
        "prefix, LoRA", "prefix, frozen LLM", "prefix, full fine-tuning", "cross-attention, LoRA",
        "prefix, LoRA, text prompt"]


def test_toy_graph_names_and_aliases():
    """Every output and alias of the toy graph is a typable name, results are ``toy/<system>/<set>/...`` and every job
    has an alias (so that ``alias/`` shows searches and scoring as well as trainings)."""
    importlib.import_module("config.toy").py()
    names = [t.name for t in graph.targets]
    assert [n for n in names if not NAME_PATTERN.match(n)] == []
    results = [n.split("/") for n in names if n.endswith("/wer.json") and "/tuning/" not in n]
    tuning = [n for n in names if n.endswith("/wer.json") and "/tuning/" in n]
    assert tuning and all(n.endswith("/dev/wer.json") for n in tuning)  # nothing is chosen on test
    assert len(results) > 50 and {r[0] for r in results} == {"toy"} and {r[2] for r in results} == {"dev", "test"}
    assert all(len(r) == 4 for r in results), results
    unnamed = [j.job_id() for j in graph.jobs() if not j.get_aliases()]
    assert unnamed == []
    aliases = [a for j in graph.jobs() for a in j.get_aliases()]
    assert [a for a in aliases if not NAME_PATTERN.match(a)] == []
    # an alias is a link to its job's folder, so no alias may be a folder of another one (the manager cannot link it)
    folders = {a.rsplit("/", i)[0] for a in aliases for i in range(1, a.count("/") + 1)}
    assert sorted(set(aliases) & folders) == []
    # every search and scoring job of a result sits under the result's name (or under the tuning it serves)
    for job in graph.jobs():
        kind = type(job).__name__
        if kind in ("ScoreWERJob", "CTCFusionSearchJob", "AedFusionSearchJob", "SpeechLLMRecogJob"):
            assert any((a.count("/") == 3 or "/tuning/" in a) and a.endswith(("/score", "/search"))
                       for a in job.get_aliases()), kind


@pytest.mark.parametrize("name", ["toy/ctc + fusion/test/wer.json", "toy/CTC/test", "toy//test", "/toy", "toy/../x",
                                  "toy/aed+ctc/dev"])
def test_untypable_names_stop_the_graph(name):
    with pytest.raises(ValueError, match="output or alias name"):
        checked_name(name)


def test_librispeech_configs_build():
    from config.librispeech.data import librispeech_data
    from config.librispeech.llm import librispeech_llms

    data = librispeech_data()
    llms = librispeech_llms(data)
    assert set(data["open_asr"]) >= {"ami", "earnings22", "librispeech_test_other", "voxpopuli"}
    assert "qwen2-1.5b-ft-am-units" in llms
    assert len(graph.jobs()) > 30


# the paper-scale experiments (LibriSpeech, Loquacious) are built and checked in tests/test_paper_configs.py; here
# only their job ids
def test_paper_scale_job_ids_are_stable():
    from config.librispeech import experiment as ls
    from config.loquacious import experiment as loq

    ls.py()
    loq.py()
    check_resources_out_of_the_hash(graph.jobs())
    check_llms_are_downloaded(graph.jobs())
    check_paper_scale_job_ids(j.job_id() for j in graph.jobs())


def test_extra_decoder_data_needs_a_frozen_encoder():
    """Extra training data of the decoders on stored encoder outputs is refused where no encoder output is stored (the
    AED would otherwise train without it, silently)."""
    import dataclasses

    from config import toy
    from config.experiment import ExperimentData, Results, acoustic_models
    from sisyphus import tk

    data = ExperimentData(corpora={"dev": tk.Path("dev.jsonl.gz")}, zips={"dev": tk.Path("dev.zip")},
                          train_zips=tk.Path("train.zip"), dev_zips=tk.Path("dev.zip"), spm_model=tk.Path("spm.model"),
                          tune_set="dev", eval_sets=("dev",), frames_train_zips=tk.Path("extra.zip"))
    models = dict(ctc_config=toy.CTC_MODEL, aed_config=toy.AED_MODEL, options=toy.AM_TRAINING)
    with pytest.raises(ValueError, match="frames_train_zips .* needs freeze_aed_encoder=True"):
        acoustic_models("x", data, Results("x", hallucination_set="dev"), **models)
    am = acoustic_models("x", dataclasses.replace(data, frames_train_zips=None), Results("x", hallucination_set="dev"),
                         **models)
    assert am.encoder_frames is None
