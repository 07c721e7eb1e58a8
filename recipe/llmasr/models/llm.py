"""Hugging Face causal LMs (Qwen2, Llama, ...) as used by shallow fusion and the speech LLM.

Loads a model from a hub name or a local ``save_pretrained`` directory, builds tiny Qwen2-architecture
models for the toy setup, swaps an LLM's vocabulary to the acoustic model's SentencePiece units and
wraps both tokenizer kinds (SentencePiece model or HF tokenizer) behind one small interface.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence

TOKENIZER_INFO = "llmasr_tokenizer.json"  # written next to a model when its tokenizer is a SentencePiece model
SPM_FILE = "spm.model"


@dataclasses.dataclass(frozen=True)
class TinyLLMConfig:
    """Size of a Qwen2-architecture model trained from scratch (the toy LLM); vocab comes from the tokenizer."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0


class LLMTokenizer:
    """A tokenizer with the few operations fusion needs: encode text/words, BOS/EOS ids, vocab size.

    Either a SentencePiece model (the toy LLM, or an LLM whose vocabulary was swapped to AM units)
    or a Hugging Face tokenizer; ``lowercase`` lower-cases text before encoding.
    """

    def __init__(self, *, spm_model: Optional[str] = None, hf_tokenizer: Any = None,
                 bos_id: Optional[int] = None, eos_id: Optional[int] = None, lowercase: bool = False):
        if (spm_model is None) == (hf_tokenizer is None):
            raise ValueError("LLMTokenizer needs exactly one of spm_model and hf_tokenizer")
        self.lowercase = lowercase
        self.sp = None
        self.hf = hf_tokenizer
        if spm_model is not None:
            import sentencepiece as spm

            if not os.path.isfile(spm_model):
                raise FileNotFoundError(f"SentencePiece model not found: {spm_model}")
            self.sp = spm.SentencePieceProcessor(model_file=spm_model)
            self.spm_model = spm_model
            self.vocab_size = self.sp.get_piece_size()
            bos = self.sp.bos_id() if bos_id is None else bos_id
            eos = self.sp.eos_id() if eos_id is None else eos_id
        else:
            self.vocab_size = len(hf_tokenizer)
            bos = hf_tokenizer.bos_token_id if bos_id is None else bos_id
            eos = hf_tokenizer.eos_token_id if eos_id is None else eos_id
            if bos is None:  # e.g. Qwen2 has no BOS token: use EOS ("<|endoftext|>") as the sentence start
                bos = eos
        if bos is None or bos < 0 or eos is None or eos < 0:
            raise ValueError(f"tokenizer has no BOS/EOS ids (bos={bos}, eos={eos}); pass bos_id/eos_id")
        self.bos_id = int(bos)
        self.eos_id = int(eos)

    def _norm(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> List[int]:
        """Token ids of a text (no BOS/EOS)."""
        text = self._norm(text)
        if self.sp is not None:
            return list(self.sp.encode(text))
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_word(self, word: str, first: bool) -> List[int]:
        """Token ids of one word; words after the first get the word-boundary space.

        Encoding word by word and concatenating equals encoding the whole text for SentencePiece and
        byte-level BPE tokenizers (they pre-split at spaces), so incremental (delayed) conversion and
        full-text rescoring see the same tokens.
        """
        word = self._norm(word)
        if self.sp is not None:
            return list(self.sp.encode(word))
        return list(self.hf.encode(word if first else " " + word, add_special_tokens=False))

    def encode_words(self, words: Sequence[str], *, first_index: int = 0) -> List[int]:
        """Token ids of words starting at word position ``first_index``, word by word (see :meth:`encode_word`)."""
        out: List[int] = []
        for i, w in enumerate(words):
            out.extend(self.encode_word(w, first_index + i == 0))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        if self.sp is not None:
            return self.sp.decode(list(ids))
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        if self.sp is not None:
            return self.sp.id_to_piece(i)
        return self.hf.convert_ids_to_tokens(i)

    def save(self, model_dir: str) -> None:
        """Saves the tokenizer next to a model so that :func:`load_llm_tokenizer` finds it."""
        if self.sp is not None:
            if os.path.abspath(self.spm_model) != os.path.abspath(os.path.join(model_dir, SPM_FILE)):
                shutil.copyfile(self.spm_model, os.path.join(model_dir, SPM_FILE))
            info = {"type": "sentencepiece", "model": SPM_FILE, "bos_id": self.bos_id, "eos_id": self.eos_id,
                    "lowercase": self.lowercase}
        else:
            self.hf.save_pretrained(model_dir)
            info = {"type": "hf", "bos_id": self.bos_id, "eos_id": self.eos_id, "lowercase": self.lowercase}
        with open(os.path.join(model_dir, TOKENIZER_INFO), "w") as f:
            json.dump(info, f, indent=1)


def load_llm_tokenizer(name_or_dir: str, *, lowercase: Optional[bool] = None) -> LLMTokenizer:
    """Loads the tokenizer of a model directory (SentencePiece info file or HF tokenizer) or hub name."""
    info_path = os.path.join(name_or_dir, TOKENIZER_INFO)
    info: Dict[str, Any] = {}
    if os.path.isfile(info_path):
        with open(info_path) as f:
            info = json.load(f)
    lc = info.get("lowercase", False) if lowercase is None else lowercase
    if info.get("type") == "sentencepiece":
        return LLMTokenizer(spm_model=os.path.join(name_or_dir, info["model"]), bos_id=info.get("bos_id"),
                            eos_id=info.get("eos_id"), lowercase=lc)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_dir)
    return LLMTokenizer(hf_tokenizer=tok, bos_id=info.get("bos_id"), eos_id=info.get("eos_id"), lowercase=lc)


def load_llm(name_or_dir: str, *, dtype: str = "float32", device: str = "cpu", eval_mode: bool = True):
    """Loads any HF causal LM with ``AutoModelForCausalLM.from_pretrained`` (hub name or local dir)."""
    import torch
    from transformers import AutoModelForCausalLM

    if not os.path.isdir(name_or_dir) and os.path.sep in name_or_dir and name_or_dir.startswith((".", "/")):
        raise FileNotFoundError(f"LLM directory not found: {name_or_dir}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} for LLM {name_or_dir}")
    model = AutoModelForCausalLM.from_pretrained(name_or_dir, dtype=torch_dtype)
    model.to(device)
    if eval_mode:
        model.eval()
    return model


def create_tiny_qwen2(cfg: TinyLLMConfig, tokenizer: LLMTokenizer, *, seed: int = 0):
    """A randomly initialised Qwen2-architecture causal LM sized by ``cfg`` over ``tokenizer``'s vocab."""
    return tiny_random_qwen2(tokenizer.vocab_size, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, cfg=cfg,
                             seed=seed)


def tiny_random_qwen2(vocab_size: int, *, bos_id: int, eos_id: int, cfg: Optional[TinyLLMConfig] = None,
                      seed: int = 0):
    """A random-weight Qwen2 causal LM (tests, benchmarks and the toy LLM before pre-training)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = cfg or TinyLLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(seed)
    hf_cfg = Qwen2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_word_embeddings, rope_theta=cfg.rope_theta,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )
    return Qwen2ForCausalLM(hf_cfg)


def swap_vocabulary(model, old_tokenizer: LLMTokenizer, new_tokenizer: LLMTokenizer) -> None:
    """Replaces the LLM's embedding and output matrices by ones over ``new_tokenizer``'s units (in place).

    Each new unit starts from the mean of the old embeddings (and output rows) of its text under the old
    tokenizer, so fine-tuning starts from the LLM's knowledge instead of random rows.
    """
    import torch

    old_in = model.get_input_embeddings().weight.data
    old_out_layer = model.get_output_embeddings()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    old_out = old_out_layer.weight.data if old_out_layer is not None else old_in
    vocab = new_tokenizer.vocab_size
    dim = old_in.shape[1]
    new_in = torch.empty(vocab, dim, dtype=old_in.dtype)
    new_out = torch.empty(vocab, old_out.shape[1], dtype=old_out.dtype)
    mean_in, mean_out = old_in.mean(0), old_out.mean(0)
    specials = {new_tokenizer.bos_id: old_tokenizer.bos_id, new_tokenizer.eos_id: old_tokenizer.eos_id}
    for i in range(vocab):
        if i in specials:
            ids = [specials[i]]
        else:
            piece = new_tokenizer.id_to_piece(i)
            text = piece.replace("\u2581", " ")
            ids = [] if piece.startswith("<") and piece.endswith(">") else old_tokenizer.encode(text)
            ids = [t for t in ids if 0 <= t < old_in.shape[0]]
        if ids:
            new_in[i] = old_in[ids].mean(0)
            new_out[i] = old_out[ids].mean(0)
        else:
            new_in[i] = mean_in
            new_out[i] = mean_out
    emb = torch.nn.Embedding(vocab, dim)
    emb.weight.data.copy_(new_in)
    model.set_input_embeddings(emb)
    if old_out_layer is not None:
        head = torch.nn.Linear(old_out.shape[1], vocab, bias=False)
        head.weight.data.copy_(new_in if tied else new_out)
        if tied:
            head.weight = emb.weight
        model.set_output_embeddings(head)
    model.config.vocab_size = vocab
    for key, value in (("bos_token_id", new_tokenizer.bos_id), ("eos_token_id", new_tokenizer.eos_id),
                       ("pad_token_id", new_tokenizer.eos_id)):
        setattr(model.config, key, value)
        if getattr(model, "generation_config", None) is not None:
            setattr(model.generation_config, key, value)
    logging.info("swapped LLM vocabulary to %d units (tied=%s)", vocab, tied)


def save_llm(model, tokenizer: LLMTokenizer, out_dir: str) -> None:
    """Saves model + tokenizer to ``out_dir`` atomically (temp dir, then rename)."""
    tmp = out_dir.rstrip("/") + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    tokenizer.save(tmp)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def score_sequences(model, token_lists: Sequence[Sequence[int]], bos: int, eos: Optional[int], *,
                    batch_size: int = 32) -> List[float]:
    """Full-forward log p(tokens (+ EOS) | BOS) per sequence, batched with right padding (shortest first, so that
    batches hold sequences of similar length); ``eos=None`` scores without the end-of-sentence token."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    result = [0.0] * len(token_lists)
    pad = eos if eos is not None else bos
    with torch.no_grad():
        for b in range(0, len(order), batch_size):
            idxs = order[b : b + batch_size]
            seqs = [[bos] + list(token_lists[i]) + ([eos] if eos is not None else []) for i in idxs]
            ids = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                mask[r, : len(s)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            logp = logits.float().log_softmax(-1)[:, :-1]  # [B, W-1]: position t predicts token t+1
            tok_lp = logp.gather(-1, ids[:, 1:].to(device)[..., None])[..., 0] * mask[:, 1:].to(device)
            for r, i in enumerate(idxs):
                result[i] = float(tok_lp[r].sum())
    return result
