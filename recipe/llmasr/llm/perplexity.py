"""Perplexity of an LLM on dev/test text, per subword (its own units) and per word (comparable across units)."""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Dict, Optional, Sequence, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob


def compute_perplexity(model, tokenizer, texts: Sequence[str], *, batch_size: int = 32,
                       max_length: Optional[int] = None) -> Dict[str, float]:
    """log-likelihood of BOS + tokens + EOS per sentence; PPL per token (EOS counted) and per word (+1 per
    sentence for EOS), so that models with different units compare per word."""
    from llmasr.models.llm import score_sequences

    if not texts:
        raise ValueError("no text to compute a perplexity on")
    toks = [tokenizer.encode(t) for t in texts]
    if max_length:
        toks = [t[: max_length - 2] for t in toks]
    ll = score_sequences(model, toks, tokenizer.bos_id, tokenizer.eos_id, batch_size=batch_size)
    total = float(sum(ll))
    n_tok = sum(len(t) + 1 for t in toks)
    n_words = sum(len(t.split()) + 1 for t in texts)
    return {"log_likelihood": total, "num_sentences": len(texts), "num_subwords": n_tok, "num_words": n_words,
            "subword_ppl": math.exp(-total / n_tok), "word_ppl": math.exp(-total / n_words)}


class ComputePerplexityJob(ResourceJob):
    """Per-subword and per-word perplexity of an LLM (dir or hub name) on a text or corpus."""

    def __init__(self, llm: Union[tk.Path, str], text: tk.Path, *, lowercase: Optional[bool] = None,
                 batch_size: int = 32, max_length: Optional[int] = 512, device: str = "cpu"):
        """
        :param llm: model dir (with its tokenizer) or hub name
        :param text: one sentence per line (plain/gz) or a corpus manifest
        :param lowercase: lower-case before tokenising (None: as saved with the model)
        :param batch_size: sentences per forward
        :param max_length: truncate sentences to this many tokens (incl. BOS/EOS)
        :param device: "cpu" or "cuda"
        """
        self.llm = llm
        self.text = text
        self.lowercase = lowercase
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.out_ppl = self.output_path("ppl.json")
        self.out_subword_ppl = self.output_var("subword_ppl")
        self.out_word_ppl = self.output_var("word_ppl")
        self.rqmt = {"cpu": 1, "mem": 8, "time": 2, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import torch

        from llmasr.llm.train import location, read_texts
        from llmasr.models.llm import load_llm, load_llm_tokenizer

        torch.set_num_threads(1)
        loc = location(self.llm)
        model = load_llm(loc, device=self.run_device())
        tok = load_llm_tokenizer(loc, lowercase=self.lowercase)
        res = compute_perplexity(model, tok, read_texts(self.text.get_path()), batch_size=self.batch_size,
                                 max_length=self.max_length)
        logging.info("perplexity of %s on %s: %s", loc, self.text.get_path(), res)
        tmp = self.out_ppl.get_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, self.out_ppl.get_path())
        self.out_subword_ppl.set(res["subword_ppl"])
        self.out_word_ppl.set(res["word_ppl"])
