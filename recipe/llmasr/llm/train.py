"""Training causal LLMs with a plain PyTorch loop: the toy LLM's pre-training and fine-tuning on transcriptions.

Fine-tuning uses the LLM's own tokenizer (optionally lower-cased) or the acoustic model's SentencePiece
units (embedding and output matrices swapped, see :func:`llmasr.models.llm.swap_vocabulary`), with all
weights or LoRA adapters (peft; with swapped units the new embedding/output matrices train too).
The text is tokenised once, streaming, into flat token/offset files in the job's work dir (memory: the offsets, not
the sentences), and a checkpoint is written every ``checkpoint_every`` steps and at every epoch end; a restarted task
resumes from it mid-epoch (same batches, same weights as an uninterrupted run).
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import random
from array import array
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from sisyphus import Task, tk

from llmasr.models.llm import TinyLLMConfig
from llmasr.resources import RESOURCE_ARGS, ResourceJob

CHECKPOINT = "checkpoint.pt"
TOKENS = "tokens"  # <work>/tokens.{ids,offsets}.npy: the tokenised training text
PROGRESS = "progress.json"  # (epoch, step) of the checkpoint, read by the manager (task progress)


class FineTuneUnits(enum.Enum):
    """Which units the fine-tuned LLM predicts."""

    LLM = "llm"  # the LLM's own tokenizer
    AM = "am"  # the acoustic model's SentencePiece units (vocabulary swap)


class FineTuneMethod(enum.Enum):
    FULL = "full"
    LORA = "lora"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one LLM training run."""

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    max_length: int = 128
    max_steps_per_epoch: Optional[int] = None
    grad_clip: float = 1.0
    seed: int = 1


def read_texts(path: str) -> List[str]:
    """Sentences of a text file (plain/gz, one per line) or the transcriptions of a corpus manifest."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"text file not found: {path}")
    if path.endswith((".jsonl", ".jsonl.gz")):
        from llmasr.data.corpus import iter_corpus

        texts = [e.text for e in iter_corpus(path)]
    else:
        from llmasr.text.sentencepiece import iter_text_lines

        texts = list(iter_text_lines(path))
    if not texts:
        raise ValueError(f"{path}: no text lines")
    return texts


def iter_texts(path: str) -> Iterator[str]:
    """Sentences of a text file or corpus manifest, streamed (as :func:`read_texts`, without holding them)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"text file not found: {path}")
    if path.endswith((".jsonl", ".jsonl.gz")):
        from llmasr.data.corpus import iter_corpus

        return (e.text for e in iter_corpus(path))
    from llmasr.text.sentencepiece import iter_text_lines

    return iter_text_lines(path)


def check_repeat_fraction(value: float, where: str) -> float:
    """``value`` if it is a share in [0, 1]; else a ValueError naming ``where`` and the field."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: repeat_fraction must be in [0, 1], got {value}")
    return value


class TokenizedText:
    """Tokenised sentences in two flat numpy files (int32 ids, int64 offsets), memory-mapped: ``seqs[i]`` is the
    i-th sentence's ids, so training over 40 M sentences holds 320 MB of offsets, not 40 M Python lists."""

    def __init__(self, prefix: str):
        import numpy as np

        self.ids = np.load(prefix + ".ids.npy", mmap_mode="r")
        self.offsets = np.load(prefix + ".offsets.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> List[int]:
        return self.ids[int(self.offsets[i]) : int(self.offsets[i + 1])].tolist()

    @staticmethod
    def build(texts: Iterator[str], tokenizer, max_length: int, prefix: str, max_sentences: Optional[int] = None,
              *, repeat_fraction: float = 0.0, seed: int = 0) -> "TokenizedText":
        """Tokenises streamed sentences (BOS + tokens + EOS, truncated) into ``<prefix>.{ids,offsets}.npy``; a
        complete earlier build is reused (the text and tokenizer are inputs of the job, so it cannot be stale).

        :param repeat_fraction: this share of the sentences (drawn with ``seed``) is followed by a second copy of
            itself (BOS + tokens + EOS + tokens + EOS): the in-context copying that a large LLM learns from the
            repetitions of long documents, which a small one pre-trained on single sentences never sees
        """
        import numpy as np

        check_repeat_fraction(repeat_fraction, "TokenizedText.build")
        if not (os.path.isfile(prefix + ".ids.npy") and os.path.isfile(prefix + ".offsets.npy")):
            ids, offsets, n = array("i"), array("q", [0]), 0
            rng = random.Random(seed)
            for text in texts:
                if max_sentences is not None and n >= max_sentences:
                    break
                tokens = tokenizer.encode(text)
                repeat = tokens + [tokenizer.eos_id] if repeat_fraction and rng.random() < repeat_fraction else []
                ids.extend(([tokenizer.bos_id] + tokens + [tokenizer.eos_id] + repeat)[:max_length])
                offsets.append(len(ids))
                n += 1
            if n == 0:
                raise ValueError(f"no text lines for {prefix}")
            for name, arr, dtype in (("ids", ids, np.int32), ("offsets", offsets, np.int64)):
                with open(f"{prefix}.{name}.tmp.npy", "wb") as f:
                    np.save(f, np.frombuffer(arr, dtype=dtype))
            os.replace(prefix + ".ids.tmp.npy", prefix + ".ids.npy")  # ids first: offsets mark a complete build
            os.replace(prefix + ".offsets.tmp.npy", prefix + ".offsets.npy")
        return TokenizedText(prefix)


def location(x: Union[str, "tk.Path"]) -> str:
    return x.get_path() if hasattr(x, "get_path") else str(x)


def load_tokenizer_source(path_or_name: str, *, lowercase: bool = False):
    """A SentencePiece ``.model`` file, a tokenizer/model dir or a hub name as an ``LLMTokenizer``."""
    from llmasr.models.llm import LLMTokenizer, load_llm_tokenizer

    if path_or_name.endswith(".model"):
        if not os.path.isfile(path_or_name):
            raise FileNotFoundError(f"SentencePiece model not found: {path_or_name}")
        return LLMTokenizer(spm_model=path_or_name, lowercase=lowercase)
    if path_or_name.startswith(("/", ".")) and not os.path.isdir(path_or_name):
        raise FileNotFoundError(f"tokenizer directory not found: {path_or_name}")
    return load_llm_tokenizer(path_or_name, lowercase=lowercase)


def encode_texts(tokenizer, texts: Sequence[str], max_length: int) -> List[List[int]]:
    """BOS + tokens + EOS per sentence, truncated to ``max_length`` tokens."""
    out = []
    for t in texts:
        ids = [tokenizer.bos_id] + tokenizer.encode(t) + [tokenizer.eos_id]
        out.append(ids[:max_length])
    return out


def make_batch(seqs: Sequence[Sequence[int]], pad_id: int):
    """input_ids, attention_mask, labels (-100 on padding) as right-padded tensors."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def evaluate_loss(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 32) -> float:
    """Mean per-token negative log-likelihood (nats) over all predicted tokens."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(0, len(seqs), batch_size):
            ids, mask, labels = make_batch(seqs[b : b + batch_size], pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            lp = logits[:, :-1].float().log_softmax(-1)
            tgt = labels[:, 1:].to(device)
            valid = tgt != -100
            tok = lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
            total -= float(tok[valid].sum())
            count += int(valid.sum())
    model.train(was_training)
    return total / max(count, 1)


def _optimizer(params, cfg: TrainConfig, *, total_steps: int):
    """AdamW over ``params`` with a linear warmup over ``cfg.warmup_steps`` and a cosine decay to a tenth of the
    learning rate at ``total_steps``: (optimiser, scheduler stepped once per batch)."""
    import torch

    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def _train_step(model, opt, sched, seqs: Sequence[Sequence[int]], pad_id: int, grad_clip: float) -> Tuple[float, int]:
    """One update on a batch of sequences; returns its mean loss per predicted token and the number of those."""
    import torch

    device = next(model.parameters()).device
    ids, mask, labels = make_batch(seqs, pad_id)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device), use_cache=False)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    opt.step()
    sched.step()
    return float(out.loss.detach()), int((labels[:, 1:] != -100).sum())


def train_causal_lm(model, seqs: Sequence[Sequence[int]], cfg: TrainConfig, *, pad_id: int,
                    checkpoint_dir: Optional[str] = None, dev_seqs: Optional[Sequence[Sequence[int]]] = None,
                    checkpoint_every: int = 0) -> List[Dict[str, Any]]:
    """AdamW with linear warmup and cosine decay over the trainable parameters; returns per-epoch stats.

    With ``checkpoint_dir``, every ``checkpoint_every`` steps (0: never mid-epoch) and every epoch end save the
    trainable weights, optimiser, schedule, position in the epoch and RNG state there; a call finding a
    checkpoint continues from that step with the same batches.
    """
    if not seqs:
        raise ValueError("no training sequences")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    opt, sched = _optimizer(params, cfg, total_steps=max(1, steps_per_epoch * cfg.epochs))
    history: List[Dict[str, Any]] = []
    start_epoch, start_step, sums = 0, 0, (0.0, 0)
    ckpt_path = os.path.join(checkpoint_dir, CHECKPOINT) if checkpoint_dir else None

    def save(epoch: int, next_step: int, loss_sum: float, tok_sum: int) -> None:
        _save_checkpoint(ckpt_path, model, opt, sched, history, epoch, next_step, (loss_sum, tok_sum))

    if ckpt_path and os.path.isfile(ckpt_path):
        history, start_epoch, start_step, sums = _resume(ckpt_path, model, opt, sched)

    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        rng = random.Random(cfg.seed + epoch)
        order = array("l", range(len(seqs)))  # the same permutation as a list, 8 bytes per sentence
        rng.shuffle(order)
        loss_sum, tok_sum = sums if epoch == start_epoch else (0.0, 0)
        for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if not idx:
                break
            loss, n_tok = _train_step(model, opt, sched, [seqs[i] for i in idx], pad_id, cfg.grad_clip)
            loss_sum += loss * n_tok
            tok_sum += n_tok
            if ckpt_path and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps_per_epoch:
                save(epoch, step + 1, loss_sum, tok_sum)
        stats: Dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(tok_sum, 1),
                                 "learning_rate": sched.get_last_lr()[0]}
        if dev_seqs:
            stats["dev_loss"] = evaluate_loss(model, dev_seqs, pad_id)
            model.train()
        history.append(stats)
        logging.info("LLM epoch %d: %s", epoch + 1, stats)
        if ckpt_path:
            save(epoch + 1, 0, 0.0, 0)
    model.eval()
    return history


def _save_checkpoint(path: str, model, opt, sched, history: List[Dict[str, Any]], epoch: int, next_step: int,
                     sums: Tuple[float, int]) -> None:
    """Saves the trainable weights, optimiser, schedule, per-epoch stats, the position (``epoch``, ``next_step``,
    the loss and token sums of the epoch so far) and the RNG state to ``path`` (atomically), and the position to
    the progress file beside it."""
    import torch

    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    tmp = path + ".tmp"
    torch.save({"params": trainable, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "history": history, "epoch": epoch, "step": next_step, "sums": sums,
                "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, path)
    _write_json({"epoch": epoch, "step": next_step}, os.path.join(os.path.dirname(path), PROGRESS))


def _resume(path: str, model, opt, sched) -> Tuple[List[Dict[str, Any]], int, int, Tuple[float, int]]:
    """Loads a checkpoint of :func:`_save_checkpoint` into the model, optimiser and schedule; returns the per-epoch
    stats and where to continue: (history, epoch, step, loss and token sums of that epoch so far)."""
    import torch

    ckpt = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in ckpt["params"]]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks parameters {missing[:3]} (different model setup?)")
    model.load_state_dict(ckpt["params"], strict=False)
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    start_epoch, start_step, sums = 0, 0, (0.0, 0)
    if "step" in ckpt:  # mid-epoch checkpoint: continue at that step of that epoch
        start_epoch, start_step, sums = ckpt["epoch"], ckpt["step"], tuple(ckpt["sums"])
        torch.set_rng_state(ckpt["rng"].cpu())
    else:  # an epoch-end checkpoint of an earlier version
        start_epoch = ckpt["epoch"] + 1
    logging.info("resuming LLM training at epoch %d, step %d from %s", start_epoch + 1, start_step, path)
    return ckpt["history"], start_epoch, start_step, sums


def _write_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class CreateTinyLLMJob(ResourceJob):
    """A randomly initialised tiny Qwen2-architecture LLM over a given tokenizer (the toy LLM before training)."""

    def __init__(self, tokenizer: Union[tk.Path, str], *, config: TinyLLMConfig = TinyLLMConfig(), seed: int = 0):
        """
        :param tokenizer: SentencePiece ``.model`` file, HF tokenizer dir (e.g. ``TrainLlmTokenizerJob``) or hub name
        :param config: model size
        :param seed: initialisation seed
        """
        self.tokenizer = tokenizer
        self.config = config
        self.seed = seed
        self.out_model = self.output_path("model", directory=True)

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        from llmasr.models.llm import create_tiny_qwen2, save_llm

        tok = load_tokenizer_source(location(self.tokenizer))
        model = create_tiny_qwen2(self.config, tok, seed=self.seed)
        logging.info("tiny LLM with %d parameters", sum(p.numel() for p in model.parameters()))
        save_llm(model, tok, self.out_model.get_path())


class PretrainLLMJob(ResourceJob):
    """Pre-trains (or continues training) a causal LLM on a text corpus with its own tokenizer."""

    resource_args = RESOURCE_ARGS | {"checkpoint_every"}  # how often to save does not change the weights
    __sis_hash_exclude__ = {"repeat_fraction": 0.0}

    def __init__(self, llm: Union[tk.Path, str], text: tk.Path, *, dev_text: Optional[tk.Path] = None,
                 train_config: TrainConfig = TrainConfig(epochs=2, learning_rate=2e-3),
                 max_sentences: Optional[int] = None, repeat_fraction: float = 0.0, cpu: int = 2,
                 device: str = "cpu", checkpoint_every: int = 1000):
        """
        :param llm: model dir (e.g. ``CreateTinyLLMJob.out_model``) or hub name
        :param text: training text, one sentence per line (plain/gz) or a corpus manifest
        :param dev_text: optional held-out text for a per-epoch dev loss
        :param train_config: optimisation settings
        :param max_sentences: use only the first N sentences
        :param repeat_fraction: share of the sentences trained as BOS s EOS s EOS (see :meth:`TokenizedText.build`);
            the dev loss stays on single sentences
        :param cpu: threads; :param device: "cpu" or "cuda"
        :param checkpoint_every: steps between checkpoints (a killed run resumes from the last one; not hashed)
        """
        self.llm = llm
        self.text = text
        self.dev_text = dev_text
        self.train_config = train_config
        self.max_sentences = max_sentences
        self.repeat_fraction = check_repeat_fraction(repeat_fraction, "PretrainLLMJob")
        self.cpu = cpu
        self.device = device
        self.checkpoint_every = checkpoint_every
        self.out_model = self.output_path("model", directory=True)
        self.out_history = self.output_path("history.json")
        self.out_train_loss = self.output_var("train_loss")
        self.rqmt = {"cpu": cpu, "mem": 8, "time": 24, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt, resume="run", progress="training_progress")

    def training_progress(self) -> Optional[List[int]]:
        """[epoch, step] of the last checkpoint (None before the first)."""
        path = os.path.join(self._sis_path("work", abspath=True), PROGRESS)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            d = json.load(f)
        return [d["epoch"], d["step"]]

    def _prepare(self):
        """Model and tokenizer ready to train (subclasses swap units / add adapters)."""
        from llmasr.models.llm import load_llm, load_llm_tokenizer

        loc = location(self.llm)
        return load_llm(loc, device=self.run_device(), eval_mode=False), load_llm_tokenizer(loc)

    def _finish(self, model):
        return model

    def run(self):
        import torch

        from llmasr.models.llm import save_llm

        torch.set_num_threads(self.run_threads())
        torch.manual_seed(self.train_config.seed)
        model, tok = self._prepare()
        work = self._sis_work()
        seqs = TokenizedText.build(iter_texts(self.text.get_path()), tok, self.train_config.max_length,
                                   os.path.join(work, TOKENS), self.max_sentences,
                                   repeat_fraction=getattr(self, "repeat_fraction", 0.0),  # jobs saved before it
                                   seed=self.train_config.seed)
        dev = None
        if self.dev_text is not None:
            dev = encode_texts(tok, read_texts(self.dev_text.get_path()), self.train_config.max_length)
        history = train_causal_lm(model, seqs, self.train_config, pad_id=tok.eos_id, checkpoint_dir=work,
                                  dev_seqs=dev, checkpoint_every=self.checkpoint_every)
        model = self._finish(model)
        save_llm(model, tok, self.out_model.get_path())
        _write_json(history, self.out_history.get_path())
        self.out_train_loss.set(history[-1]["train_loss"] if history else float("nan"))

    def _sis_work(self) -> str:
        """The job's work dir (checkpoints for resuming)."""
        path = location(self.work_path())
        if not os.path.isabs(path):  # tasks run inside the job's work dir
            path = os.getcwd()
        os.makedirs(path, exist_ok=True)
        return path


class FineTuneLLMJob(PretrainLLMJob):
    """Fine-tunes an LLM on training transcriptions: own or AM units, all weights or LoRA."""

    __sis_hash_exclude__ = {"use_rslora": False}

    def __init__(self, llm: Union[tk.Path, str], text: tk.Path, *, units: FineTuneUnits = FineTuneUnits.LLM,
                 am_spm_model: Optional[tk.Path] = None, lowercase: bool = False,
                 method: FineTuneMethod = FineTuneMethod.FULL, lora_rank: int = 8, lora_alpha: float = 16.0,
                 lora_dropout: float = 0.0,
                 lora_target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                 dev_text: Optional[tk.Path] = None,
                 train_config: TrainConfig = TrainConfig(epochs=2, learning_rate=5e-4),
                 max_sentences: Optional[int] = None, cpu: int = 2, device: str = "cpu", use_rslora: bool = False,
                 checkpoint_every: int = 1000):
        """
        :param llm: pre-trained model dir or hub name
        :param text: transcriptions (corpus manifest or one sentence per line)
        :param units: LLM (own tokenizer) or AM (SentencePiece units of ``am_spm_model``, vocabulary swap)
        :param am_spm_model: the AM's SentencePiece model, required for ``units=AM``
        :param lowercase: lower-case the text (own tokenizer; saved with the model for later scoring)
        :param method: FULL or LORA (adapters merged into the saved model)
        :param lora_rank: LoRA rank; :param lora_alpha: LoRA alpha; :param lora_dropout: LoRA dropout
        :param lora_target_modules: linear layers that get adapters
        :param use_rslora: rank-stabilised LoRA scaling alpha / sqrt(r) (the set-up of :mod:`llmasr.models.lora`)
        :param dev_text: optional held-out text for a per-epoch dev loss
        :param train_config: optimisation settings
        :param max_sentences: use only the first N sentences
        :param cpu: threads; :param device: "cpu" or "cuda"
        :param checkpoint_every: steps between checkpoints (not hashed)
        """
        if not isinstance(units, FineTuneUnits):
            raise ValueError(f"units must be a FineTuneUnits, got {units!r}")
        if not isinstance(method, FineTuneMethod):
            raise ValueError(f"method must be a FineTuneMethod, got {method!r}")
        if units == FineTuneUnits.AM and am_spm_model is None:
            raise ValueError("units=FineTuneUnits.AM needs am_spm_model")
        super().__init__(llm, text, dev_text=dev_text, train_config=train_config, max_sentences=max_sentences,
                         cpu=cpu, device=device, checkpoint_every=checkpoint_every)
        self.units = units
        self.am_spm_model = am_spm_model
        self.lowercase = lowercase
        self.method = method
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = tuple(lora_target_modules)
        self.use_rslora = use_rslora

    def _prepare(self):
        from llmasr.models.llm import LLMTokenizer, load_llm, load_llm_tokenizer, swap_vocabulary

        loc = location(self.llm)
        model = load_llm(loc, device="cpu", eval_mode=False)
        tok = load_llm_tokenizer(loc, lowercase=self.lowercase)
        if self.units == FineTuneUnits.AM:
            am_tok = LLMTokenizer(spm_model=self.am_spm_model.get_path(), lowercase=self.lowercase)
            swap_vocabulary(model, tok, am_tok)
            tok = am_tok
        if self.method == FineTuneMethod.LORA:
            from peft import get_peft_model

            from llmasr.models.lora import lora_config

            lcfg = lora_config(rank=self.lora_rank, alpha=self.lora_alpha, dropout=self.lora_dropout,
                               targets=self.lora_target_modules, use_rslora=self.use_rslora, causal_lm=True)
            model = get_peft_model(model, lcfg)
            if self.units == FineTuneUnits.AM:  # the new input/output matrices must learn too
                for p in model.get_input_embeddings().parameters():
                    p.requires_grad = True
                for p in model.get_output_embeddings().parameters():
                    p.requires_grad = True
            n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
            logging.info("LoRA: %d trainable parameters", n_train)
        model.to(self.run_device())
        return model, tok

    def _finish(self, model):
        if self.method == FineTuneMethod.LORA:
            model = model.merge_and_unload()
        return model
