"""Training causal LLMs with a plain PyTorch loop: the toy LLM's pre-training and fine-tuning on transcriptions.

Fine-tuning uses the LLM's own tokenizer (optionally lower-cased) or the acoustic model's SentencePiece
units (embedding and output matrices swapped, see :func:`llmasr.models.llm.swap_vocabulary`), with all
weights or LoRA adapters (peft; with swapped units the new embedding/output matrices train too).
Every epoch writes a checkpoint to the job's work dir; a restarted task resumes from it.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import os
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from sisyphus import Job, Task, tk

from llmasr.models.llm import TinyLLMConfig

CHECKPOINT = "checkpoint.pt"


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

    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)

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
                    checkpoint_dir: Optional[str] = None, dev_seqs: Optional[Sequence[Sequence[int]]] = None
                    ) -> List[Dict[str, Any]]:
    """AdamW with linear warmup and cosine decay over the trainable parameters; returns per-epoch stats.

    With ``checkpoint_dir``, every epoch saves trainable weights, optimiser and progress there, and a
    call finding a checkpoint continues after its epoch.
    """
    import torch

    if not seqs:
        raise ValueError("no training sequences")
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    opt, sched = _optimizer(params, cfg, total_steps=max(1, steps_per_epoch * cfg.epochs))
    history: List[Dict[str, Any]] = []
    start_epoch = 0
    ckpt_path = os.path.join(checkpoint_dir, CHECKPOINT) if checkpoint_dir else None
    if ckpt_path and os.path.isfile(ckpt_path):
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in ckpt["params"]]
        if missing:
            raise ValueError(f"{ckpt_path}: checkpoint lacks parameters {missing[:3]} (different model setup?)")
        model.load_state_dict(ckpt["params"], strict=False)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        history = ckpt["history"]
        start_epoch = ckpt["epoch"] + 1
        logging.info("resuming LLM training after epoch %d from %s", ckpt["epoch"] + 1, ckpt_path)

    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        rng = random.Random(cfg.seed + epoch)
        order = list(range(len(seqs)))
        rng.shuffle(order)
        loss_sum, tok_sum = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if not idx:
                break
            loss, n_tok = _train_step(model, opt, sched, [seqs[i] for i in idx], pad_id, cfg.grad_clip)
            loss_sum += loss * n_tok
            tok_sum += n_tok
        stats: Dict[str, Any] = {"epoch": epoch + 1, "train_loss": loss_sum / max(tok_sum, 1),
                                 "learning_rate": sched.get_last_lr()[0]}
        if dev_seqs:
            stats["dev_loss"] = evaluate_loss(model, dev_seqs, pad_id)
            model.train()
        history.append(stats)
        logging.info("LLM epoch %d: %s", epoch + 1, stats)
        if ckpt_path:
            trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
            tmp = ckpt_path + ".tmp"
            torch.save({"params": trainable, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "history": history, "epoch": epoch}, tmp)
            os.replace(tmp, ckpt_path)
    model.eval()
    return history


def _write_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class CreateTinyLLMJob(Job):
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


class PretrainLLMJob(Job):
    """Pre-trains (or continues training) a causal LLM on a text corpus with its own tokenizer."""

    def __init__(self, llm: Union[tk.Path, str], text: tk.Path, *, dev_text: Optional[tk.Path] = None,
                 train_config: TrainConfig = TrainConfig(epochs=2, learning_rate=2e-3),
                 max_sentences: Optional[int] = None, cpu: int = 2, device: str = "cpu"):
        """
        :param llm: model dir (e.g. ``CreateTinyLLMJob.out_model``) or hub name
        :param text: training text, one sentence per line (plain/gz) or a corpus manifest
        :param dev_text: optional held-out text for a per-epoch dev loss
        :param train_config: optimisation settings
        :param max_sentences: use only the first N sentences
        :param cpu: threads; :param device: "cpu" or "cuda"
        """
        self.llm = llm
        self.text = text
        self.dev_text = dev_text
        self.train_config = train_config
        self.max_sentences = max_sentences
        self.cpu = cpu
        self.device = device
        self.out_model = self.output_path("model", directory=True)
        self.out_history = self.output_path("history.json")
        self.out_train_loss = self.output_var("train_loss")
        self.rqmt = {"cpu": cpu, "mem": 8, "time": 24, "gpu": 1 if device == "cuda" else 0}

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def _prepare(self):
        """Model and tokenizer ready to train (subclasses swap units / add adapters)."""
        from llmasr.models.llm import load_llm, load_llm_tokenizer

        loc = location(self.llm)
        return load_llm(loc, device=self.device, eval_mode=False), load_llm_tokenizer(loc)

    def _finish(self, model):
        return model

    def run(self):
        import torch

        from llmasr.models.llm import save_llm

        torch.set_num_threads(max(1, self.cpu))
        torch.manual_seed(self.train_config.seed)
        model, tok = self._prepare()
        texts = read_texts(self.text.get_path())[: self.max_sentences]
        seqs = encode_texts(tok, texts, self.train_config.max_length)
        dev = None
        if self.dev_text is not None:
            dev = encode_texts(tok, read_texts(self.dev_text.get_path()), self.train_config.max_length)
        history = train_causal_lm(model, seqs, self.train_config, pad_id=tok.eos_id, checkpoint_dir=self._sis_work(),
                                  dev_seqs=dev)
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
                 max_sentences: Optional[int] = None, cpu: int = 2, device: str = "cpu", use_rslora: bool = False):
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
        """
        if not isinstance(units, FineTuneUnits):
            raise ValueError(f"units must be a FineTuneUnits, got {units!r}")
        if not isinstance(method, FineTuneMethod):
            raise ValueError(f"method must be a FineTuneMethod, got {method!r}")
        if units == FineTuneUnits.AM and am_spm_model is None:
            raise ValueError("units=FineTuneUnits.AM needs am_spm_model")
        super().__init__(llm, text, dev_text=dev_text, train_config=train_config, max_sentences=max_sentences,
                         cpu=cpu, device=device)
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
        model.to(self.device)
        return model, tok

    def _finish(self, model):
        if self.method == FineTuneMethod.LORA:
            model = model.merge_and_unload()
        return model
