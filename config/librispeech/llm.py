"""The pre-trained LLMs of the paper (Qwen2 0.5B/1.5B) and their fine-tuned variants on LibriSpeech text."""
from typing import Dict

from config.experiment import hub_llms
from llmasr.llm.hub import DownloadHFModelJob
from llmasr.llm.train import TrainConfig

# hub id and revision of each LLM, downloaded once by DownloadHFModelJob (compute nodes need no hub access). The
# revision is part of every LLM job's id: "main" until the commit of the paper's download is known (the job
# records the commit it got in out_model/hub_source.json); pinning it then changes the LLM jobs' ids once.
QWEN2_HUB = {"qwen2-0.5b": ("Qwen/Qwen2-0.5B", "main"), "qwen2-1.5b": ("Qwen/Qwen2-1.5B", "main")}
QWEN2 = {name: DownloadHFModelJob(repo, revision=rev).out_model for name, (repo, rev) in QWEN2_HUB.items()}
GPU_TRAIN = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-5, warmup_steps=1000, max_length=256)


def librispeech_llms(data: Dict[str, object], prefix: str = "librispeech") -> Dict[str, object]:
    """Hub models as they are, fine-tuned on the LM text with their own tokenizer (lower-cased), and
    fine-tuned with the AM's SentencePiece units (vocabulary swap) for label-wise fusion."""
    return hub_llms(prefix, QWEN2, data["llm_text"], data["spm"].out_model,
                    {s: data["corpora"][s] for s in ("dev-other", "test-other")}, train_config=GPU_TRAIN)
