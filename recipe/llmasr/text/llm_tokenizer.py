"""The LLM's own label units: Hugging Face tokenizers from a hub name or a local dir, vocab export, and a
byte-level BPE tokenizer trained on toy text for the tiny LLM of the embedded experiment.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import List, Optional, Sequence, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.text.sentencepiece import iter_text_lines

TokenizerSource = Union[str, tk.Path]  # hub name (e.g. "Qwen/Qwen2.5-0.5B") or a local dir (Path)


def tokenizer_location(source: TokenizerSource) -> str:
    """A hub name as it is, a Path as its directory."""
    return source.get_path() if hasattr(source, "get_path") else str(source)


def load_tokenizer(source: TokenizerSource):
    """``AutoTokenizer.from_pretrained`` for a hub name or a local dir; a missing dir raises naming it."""
    from transformers import AutoTokenizer

    loc = tokenizer_location(source)
    if (loc.startswith("/") or loc.startswith(".")) and not os.path.isdir(loc):
        raise FileNotFoundError(f"tokenizer directory {loc} does not exist")
    return AutoTokenizer.from_pretrained(loc)


def tokenizer_vocab(tokenizer) -> List[str]:
    """Token strings in id order (``len(tokenizer)`` entries, added/special tokens included)."""
    return [tokenizer.convert_ids_to_tokens(i) or f"<unused_{i}>" for i in range(len(tokenizer))]


class ExportLlmVocabJob(ResourceJob):
    """Writes an LLM tokenizer's vocabulary: ``out_vocab`` one token a line (id order), ``out_vocab_json`` a list."""

    def __init__(self, tokenizer: TokenizerSource):
        """
        :param tokenizer: hub name or local tokenizer dir
        """
        self.tokenizer = tokenizer
        self.out_vocab = self.output_path("llm.vocab")
        self.out_vocab_json = self.output_path("llm.vocab.json")
        self.out_vocab_size = self.output_var("vocab_size")
        self.out_special_ids = self.output_var("special_ids")  # {"bos": id|None, "eos": id|None, "pad": id|None}

    def tasks(self):
        yield Task("run", rqmt={"cpu": 1, "mem": 2, "time": 1})

    def run(self):
        tok = load_tokenizer(self.tokenizer)
        vocab = tokenizer_vocab(tok)
        with open(self.out_vocab_json.get_path() + ".tmp", "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        os.replace(self.out_vocab_json.get_path() + ".tmp", self.out_vocab_json.get_path())
        # one token per line: line breaks inside tokens are written escaped
        with open(self.out_vocab.get_path() + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(t.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") + "\n" for t in vocab))
        os.replace(self.out_vocab.get_path() + ".tmp", self.out_vocab.get_path())
        self.out_vocab_size.set(len(vocab))
        self.out_special_ids.set({"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id})


class TrainLlmTokenizerJob(ResourceJob):
    """Trains a byte-level BPE tokenizer (GPT-2/Qwen2 style) on text and saves it as a HF tokenizer dir."""

    def __init__(
        self,
        text: tk.Path,
        *,
        vocab_size: int = 1000,
        special_tokens: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        max_lines: Optional[int] = None,
    ):
        """
        :param text: training text, one sentence per line (plain or gz)
        :param vocab_size: target vocabulary size (the 256 byte symbols and the special tokens included)
        :param special_tokens: the first is used as bos, eos and pad token
        :param max_lines: train on the first N lines (None: all)
        """
        self.text = text
        self.vocab_size = vocab_size
        self.special_tokens = list(special_tokens)
        self.max_lines = max_lines
        self.out_tokenizer_dir = self.output_path("tokenizer", directory=True)
        self.out_vocab_size = self.output_var("vocab_size")

    def tasks(self):
        yield Task("run", rqmt={"cpu": 1, "mem": 2, "time": 1})

    def run(self):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        def lines():
            for i, line in enumerate(iter_text_lines(self.text.get_path())):
                if self.max_lines is not None and i >= self.max_lines:
                    return
                yield line

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, special_tokens=self.special_tokens,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(lines(), trainer=trainer)
        eos = self.special_tokens[0]
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=eos,
                                     unk_token=None)
        out = self.out_tokenizer_dir.get_path()
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        hf.save_pretrained(tmp)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
        self.out_vocab_size.set(len(hf))
