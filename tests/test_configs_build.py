"""The experiment configs build their graphs (no job runs): the toy default and the paper-scale LibriSpeech and
Loquacious experiments."""
import hashlib
import importlib
import os

from sisyphus.graph import graph

# Digest of the sorted job ids of the paper-scale graphs (LibriSpeech + Loquacious): a change of any paper-scale
# job id (a new hashed field, a resource entering the hash) fails here. After an intended change run
# ``UPDATE_PAPER_JOB_IDS=1 pytest tests/test_configs_build.py -k paper`` and commit the file with the reason.
PAPER_IDS_FILE = os.path.join(os.path.dirname(__file__), "data", "paper_scale_job_ids.txt")


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


def test_paper_scale_experiments_build():
    from config.librispeech import experiment as ls
    from config.loquacious import experiment as loq

    ls.py()
    names = {t.name for t in graph.targets}
    for size in ("qwen2-0.5b", "qwen2-1.5b"):
        assert f"librispeech/ctc + delayed fusion (k=5) [{size}]/test-other/wer.json" in names
        assert f"librispeech/speech-llm {size} xattn-lora-k2/ami/wer.json" in names
    assert "librispeech/aed+ctc/earnings22/wer.json" in names and "librispeech/report/hallucination.md" in names
    train = [j for j in graph.jobs() if "ReturnnTrainingJob" in j.job_id()]
    assert {j.model_config.encoder.num_layers for j in train} == {16} and all(j.rqmt["gpu"] == 1 for j in train)
    loq.py()
    names = {t.name for t in graph.targets}
    assert "loquacious/ctc-beam/test/wer.json" in names and "loquacious/report/results.md" in names
    check_paper_scale_job_ids(j.job_id() for j in graph.jobs())
