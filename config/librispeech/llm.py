"""The pre-trained LLMs of the paper (Qwen2 0.5B/1.5B) and their fine-tuned variants on LibriSpeech text."""
from typing import Dict

from sisyphus import tk

from llmasr.llm.perplexity import ComputePerplexityJob
from llmasr.llm.train import FineTuneLLMJob, FineTuneMethod, FineTuneUnits, TrainConfig

QWEN2 = {"qwen2-0.5b": "Qwen/Qwen2-0.5B", "qwen2-1.5b": "Qwen/Qwen2-1.5B"}
GPU_TRAIN = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-5, warmup_steps=1000, max_length=256)


def librispeech_llms(data: Dict[str, object], prefix: str = "librispeech") -> Dict[str, object]:
    """Hub models as they are, fine-tuned on the LM text with their own tokenizer (lower-cased), and
    fine-tuned with the AM's SentencePiece units (vocabulary swap) for label-wise fusion."""
    llms: Dict[str, object] = {}
    for name, hub in QWEN2.items():
        llms[name] = hub
        llms[f"{name}-ft"] = FineTuneLLMJob(
            hub, data["llm_text"], units=FineTuneUnits.LLM, lowercase=True, method=FineTuneMethod.FULL,
            train_config=GPU_TRAIN, device="cuda", cpu=4).out_model
        llms[f"{name}-ft-am-units"] = FineTuneLLMJob(
            hub, data["llm_text"], units=FineTuneUnits.AM, am_spm_model=data["spm"].out_model,
            method=FineTuneMethod.FULL, train_config=GPU_TRAIN, device="cuda", cpu=4).out_model
    for name, model in llms.items():
        for subset in ("dev-other", "test-other"):
            ppl = ComputePerplexityJob(model, data["corpora"][subset], device="cuda")
            tk.register_output(f"{prefix}/llm/{name}/{subset}/ppl.json", ppl.out_ppl)
    return llms
