"""The experiment configs build their graphs (no job runs): the toy default and the LibriSpeech data and LLMs."""
import importlib

from sisyphus.graph import graph


def test_toy_config_builds_the_whole_graph():
    toy = importlib.import_module("config.toy")
    toy.py()
    names = {t.name for t in graph.targets}
    assert "toy/report/results.md" in names
    assert {"toy/ctc-greedy/test/wer.json", "toy/aed+ctc/dev/wer.json", "toy/llm/ft-own/test/ppl.json",
            "toy/report/hallucination.md"} <= names
    # every fusion and speech-LLM system of the table is scored on dev and test
    systems = ["ctc-beam + rescoring (ft-own)", "aed-beam + rescoring (pretrained)", "ctc + label-wise fusion",
               "aed + label-wise fusion"] + [f"ctc + delayed fusion (k={k})" for k in (1, 5, 20, "end")]
    systems += [f"speech-llm {v}" for v in toy.SPEECH_LLM_VARIANTS] + [
        "speech-llm prefix-lora-k2 (alpha=0)", "speech-llm prefix-lora-k2 + ctc (label-sync)",
        "speech-llm prefix-lora-k2 + ctc (time-sync)"]
    for system in systems:
        assert {f"toy/{system}/dev/wer.json", f"toy/{system}/test/wer.json"} <= names, system
    jobs = graph.jobs()
    kinds = {j.job_id().split("/")[-1].split(".")[0] for j in jobs}
    assert {"MakeToyCorpusJob", "TrainSentencePieceJob", "ReturnnTrainingJob", "ReturnnForwardJob", "ScoreWERJob",
            "PretrainLLMJob", "ReportTableJob", "TuneScalesJob", "RescoreNBestJob", "CTCFusionSearchJob",
            "AedFusionSearchJob", "SpeechLLMTrainingJob", "SpeechLLMRecogJob"} <= kinds
    # the scales are tuned once per (AM, LLM) pair and shared by dev and test
    assert sum(1 for j in jobs if "TuneScalesJob" in j.job_id()) == 6
    # shared stages are one job: a single corpus job and a single SentencePiece model feed everything
    assert sum(1 for j in jobs if "MakeToyCorpusJob" in j.job_id()) == 1
    assert sum(1 for j in jobs if "TrainSentencePieceJob" in j.job_id()) == 1


def test_librispeech_configs_build():
    from config.librispeech.data import librispeech_data
    from config.librispeech.llm import librispeech_llms

    data = librispeech_data()
    llms = librispeech_llms(data)
    assert set(data["open_asr"]) >= {"ami", "earnings22", "librispeech_test_other", "voxpopuli"}
    assert "qwen2-1.5b-ft-am-units" in llms
    assert len(graph.jobs()) > 30

# the paper-scale experiments (LibriSpeech, Loquacious) are built and checked in tests/test_paper_configs.py
