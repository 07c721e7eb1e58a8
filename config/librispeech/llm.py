"""The pre-trained LLMs of the paper (Qwen2 0.5B/1.5B) and their fine-tuned variants on LibriSpeech text."""
from typing import Dict

from config.experiment import hub_llms
from config.paper import QWEN2, hub_models
from llmasr.llm.train import TrainConfig

GPU_TRAIN = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-5, warmup_steps=1000, max_length=256)


def librispeech_llms(data: Dict[str, object], prefix: str = "librispeech") -> Dict[str, object]:
    """Hub models as they are, fine-tuned on the LM text with their own tokenizer (lower-cased), and
    fine-tuned with the AM's SentencePiece units (vocabulary swap) for label-wise fusion."""
    return hub_llms(prefix, hub_models(QWEN2), data["llm_text"], data["spm"].out_model,
                    {s: data["corpora"][s] for s in ("dev-other", "test-other")}, train_config=GPU_TRAIN)
