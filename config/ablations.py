"""The paper's ablations, one graph function per family; each trains the speech LLMs it needs (on the paper's recipe,
:func:`config.paper.paper_speech_llm`, changing one choice of the base system) and writes its table
``<prefix>/report/<table>.md`` (the evaluation sets, their mean, the Open ASR mean and RTFx).

The base system (``base``: the paper's speech LLM on the AM's units) is a row of every table; it is trained once.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Sequence, Tuple

from sisyphus import tk

from config.names import alias, output
from config.paper import (JOINT_TIME_SYNC, PaperSpeechLLM, SpeechLLMRecipe, joint_recog, paper_speech_llm,
                          paper_speech_llm_encoder_config)
from llmasr.models.speech_llm import LLMTraining, SpeechInterface
from llmasr.scoring.report import ReportTableJob
from llmasr.scoring.wer import ScoreWERJob
from llmasr.search.options import TimeSyncOptions
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

LABEL_UNITS: Dict[str, Tuple[SentencePieceType, int]] = {
    "BPE 1k": (SentencePieceType.BPE, 1000), "BPE 2k": (SentencePieceType.BPE, 2000),
    "BPE 10k": (SentencePieceType.BPE, 10_000),
}
DOWNSAMPLING = (1, 2, 3, 4)  # adapter frame stacking on top of the encoder's 6x: 60, 120, 180, 240 ms per position


def label_units(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *, train_text: tk.Path,
                name: str, table: str = "label_units") -> None:
    """Speech LLM targets: BPE 1k / 2k / 10k, the AM's SentencePiece unigram 10k (``base``), the LLM's own
    tokenizer. The BPE models are trained on ``train_text``; the encoder and its aux CTC follow the units."""
    rows = {"SPM unigram 10k (AM units)": base.systems["alone"]}
    for label, (kind, size) in LABEL_UNITS.items():
        spm = TrainSentencePieceJob(train_text, vocab_size=size, model_type=kind)
        tag = f"{kind.value}{size // 1000}k"
        alias(spm, f"{prefix}/labels/{tag}")
        rows[label] = paper_speech_llm(prefix, f"{name}-units-{tag}", recipe, llm, units=spm.out_model,
                                       joint=False).systems["alone"]
    rows["LLM tokenizer"] = paper_speech_llm(prefix, f"{name}-units-llm", recipe, llm,
                                             own_tokenizer=True).systems["alone"]
    recipe.results.table(table, rows)


def encoder_training(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *, name: str,
                     table: str = "encoder_frozen_vs_trainable") -> None:
    """The pre-trained encoder frozen vs trained with the LLM (``base``) vs trained from random weights."""
    frozen = paper_speech_llm(prefix, f"{name}-encoder-frozen", recipe, llm, freeze_encoder=True, joint=False)
    scratch = paper_speech_llm(prefix, f"{name}-encoder-scratch", recipe, llm,
                               encoder=paper_speech_llm_encoder_config(), joint=False)
    recipe.results.table(table, {"pre-trained, frozen": frozen.systems["alone"],
                                 "pre-trained, trainable": base.systems["alone"],
                                 "random init, trainable": scratch.systems["alone"]})


def llm_pretraining(prefix: str, recipe: SpeechLLMRecipe, bases: Mapping[str, PaperSpeechLLM],
                    instruct: Mapping[str, object], *, table: str = "llm_base_vs_instruct") -> None:
    """Base vs instruct checkpoints of the same size: ``bases`` maps a size to its base speech LLM, ``instruct``
    maps ``<size>-instruct`` to the instruct checkpoint."""
    rows = {}
    for size, base in bases.items():
        rows[f"{size} (base)"] = base.systems["alone"]
        inst = f"{size}-instruct"
        if inst in instruct:
            rows[f"{size} (instruct)"] = paper_speech_llm(prefix, inst, recipe, instruct[inst],
                                                          joint=False).systems["alone"]
    recipe.results.table(table, rows)


def llm_size(prefix: str, recipe: SpeechLLMRecipe, bases: Mapping[str, PaperSpeechLLM],
             larger: Mapping[str, object], *, table: str = "llm_size") -> None:
    """Speech LLMs over LLMs of growing size: the paper's (``bases``) and the larger hub checkpoints (``larger``);
    alone and joint with CTC."""
    rows = {}
    for size, base in bases.items():
        rows[size] = base.systems["alone"]
        rows[f"{size} + ctc"] = base.systems["joint"]
    for size, llm in larger.items():
        big = paper_speech_llm(prefix, size, recipe, llm)
        rows[size] = big.systems["alone"]
        rows[f"{size} + ctc"] = big.systems["joint"]
    recipe.results.table(table, rows)


def encoder_downsampling(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *, name: str,
                         factors: Sequence[int] = DOWNSAMPLING, base_factor: int = 2,
                         table: str = "encoder_downsampling") -> None:
    """Extra downsampling by the adapter (frame stacking k) on top of the encoder's 6x."""
    rows = {}
    for k in factors:
        system = base.systems["alone"] if k == base_factor else paper_speech_llm(
            prefix, f"{name}-k{k}", recipe, llm, adapter_k=k, joint=False).systems["alone"]
        rows[f"k={k} ({60 * k} ms)"] = system
    recipe.results.table(table, rows)


def interface_and_fine_tuning(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *,
                              name: str, prompt: Tuple[str, str], table: str = "interface_and_fine_tuning") -> None:
    """Prefix vs cross-attention interface, frozen / rsLoRA (``base``) / fully fine-tuned LLM, text prompt."""
    variants = {"prefix, frozen LLM": dict(llm_training=LLMTraining.FROZEN),
                "prefix, full fine-tuning": dict(llm_training=LLMTraining.FULL),
                "cross-attention, LoRA": dict(interface=SpeechInterface.CROSS_ATTENTION),
                "prefix, LoRA, text prompt": dict(prompt=prompt)}
    tags = {"prefix, frozen LLM": "frozen", "prefix, full fine-tuning": "full",
            "cross-attention, LoRA": "xattn", "prefix, LoRA, text prompt": "prompt"}
    rows = {"prefix, LoRA": base.systems["alone"]}
    for label, changes in variants.items():
        rows[label] = paper_speech_llm(prefix, f"{name}-{tags[label]}", recipe, llm, joint=False,
                                       **changes).systems["alone"]
    recipe.results.table(table, rows)


# joint recognition: each optimisation switched off alone, and all of them off (the naive search)
JOINT_OPTIMISATIONS: Dict[str, TimeSyncOptions] = {
    "all optimisations": JOINT_TIME_SYNC,
    "- soft collapse": dataclasses.replace(JOINT_TIME_SYNC, soft_collapse_threshold=None),
    "- top-k label pruning": dataclasses.replace(JOINT_TIME_SYNC, label_topk=None),
    "- decoder on new labels only": dataclasses.replace(JOINT_TIME_SYNC, score_new_labels_only=False),
    "- batched decoder calls": dataclasses.replace(JOINT_TIME_SYNC, batch_hyps=False),
    "none (naive)": TimeSyncOptions(soft_collapse_threshold=None, label_topk=None, score_new_labels_only=False,
                                    batch_hyps=False),
}
JOINT_OPTIMISATION_NAMES = {"all optimisations": "all", "- soft collapse": "no-soft-collapse",
                            "- top-k label pruning": "no-topk", "- decoder on new labels only": "no-new-labels-only",
                            "- batched decoder calls": "no-batching", "none (naive)": "naive"}


def joint_optimisations(prefix: str, recipe: SpeechLLMRecipe, base: PaperSpeechLLM, *, eval_sets: Sequence[str],
                        table: str = "joint_optimisations") -> None:
    """WER and speed (RTFx) of the joint speech LLM + CTC search with its optimisations switched off one at a time
    (the tuned CTC scale of ``base``). Recombination of equal label sequences is part of the CTC prefix search and
    has no switch."""
    if base.ctc_scale is None:
        raise ValueError("joint_optimisations needs a base speech LLM recognised jointly with CTC")
    wers: Dict[str, Dict[str, object]] = {}
    rtfx: Dict[str, Dict[str, object]] = {}
    for label, options in JOINT_OPTIMISATIONS.items():
        for s in eval_sets:
            where = f"{prefix}/{table}/{JOINT_OPTIMISATION_NAMES[label]}/{s}"
            rec = alias(joint_recog(recipe, base.train, s, ctc_scale=base.ctc_scale, time_sync=options),
                        f"{where}/search")
            score = alias(ScoreWERJob(rec.out_nbest, recipe.data.corpora[s], search_stats=rec.out_search_stats),
                          f"{where}/score")
            wers.setdefault(label, {})[s] = score.out_wer
            rtfx.setdefault(label, {})[s] = score.out_rtfx
    job = alias(ReportTableJob(wers, rtfx=rtfx), f"{prefix}/report/{table}")
    output(f"{prefix}/report/{table}.md", job.out_table)


ABLATIONS = (label_units, encoder_training, llm_pretraining, llm_size, encoder_downsampling,
             interface_and_fine_tuning, joint_optimisations)
