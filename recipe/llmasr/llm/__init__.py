"""LLM jobs: create and pre-train a tiny LLM, fine-tune an LLM on transcriptions, compute perplexities."""
from llmasr.llm.perplexity import ComputePerplexityJob
from llmasr.llm.train import (
    CreateTinyLLMJob,
    FineTuneLLMJob,
    FineTuneMethod,
    FineTuneUnits,
    PretrainLLMJob,
)

__all__ = ["ComputePerplexityJob", "CreateTinyLLMJob", "FineTuneLLMJob", "FineTuneMethod", "FineTuneUnits",
           "PretrainLLMJob"]
