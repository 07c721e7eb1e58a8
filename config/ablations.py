"""The paper's ablations, one graph function per family; each trains the speech LLMs it needs (on the paper's recipe,
:func:`config.paper.paper_speech_llm`, changing one choice of the base system) and writes its table
``<prefix>/report/<table>.md`` (the evaluation sets, their mean, the Open ASR mean and RTFx).

The base system (``base``: the paper's speech LLM on the AM's units) is a row of every table; it is trained once.
Each function returns its rows (label -> system), from which :func:`ablation_findings` reports the direction of each
change against the base.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sisyphus import tk

from config.names import alias, output
from config.paper import (JOINT_TIME_SYNC, PaperSpeechLLM, SpeechLLMRecipe, joint_recog, paper_speech_llm,
                          paper_speech_llm_encoder_config)
from llmasr.models.speech_llm import LLMTraining, SpeechInterface
from llmasr.scoring.report import Finding, ReportTableJob
from llmasr.scoring.wer import ScoreWERJob
from llmasr.search.options import TimeSyncOptions
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

LABEL_UNITS: Dict[str, Tuple[SentencePieceType, int]] = {
    "BPE 1k": (SentencePieceType.BPE, 1000), "BPE 2k": (SentencePieceType.BPE, 2000),
    "BPE 10k": (SentencePieceType.BPE, 10_000),
}
DOWNSAMPLING = (1, 2, 3, 4)  # adapter frame stacking on top of the encoder's 6x: 60, 120, 180, 240 ms per position


Rows = Dict[str, str]


def label_units(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *,
                train_text: Optional[tk.Path], name: str,
                units: Mapping[str, Tuple[SentencePieceType, int]] = LABEL_UNITS,
                base_label: str = "SPM unigram 10k (AM units)", table: str = "label_units") -> Rows:
    """Speech LLM targets: BPE 1k / 2k / 10k (``units``), the AM's SentencePiece unigram 10k (``base``, row
    ``base_label``), the LLM's own tokenizer. The BPE models are trained on ``train_text``; the encoder and its aux
    CTC follow the units."""
    if units and train_text is None:
        raise ValueError(f"label_units: the units {list(units)} need a train_text")
    rows = {base_label: base.systems["alone"]}
    for label, (kind, size) in units.items():
        spm = TrainSentencePieceJob(train_text, vocab_size=size, model_type=kind)
        tag = f"{kind.value}{size // 1000}k"
        alias(spm, f"{prefix}/labels/{tag}")
        rows[label] = paper_speech_llm(prefix, f"{name}-units-{tag}", recipe, llm, units=spm.out_model,
                                       joint=False).systems["alone"]
    rows["LLM tokenizer"] = paper_speech_llm(prefix, f"{name}-units-llm", recipe, llm,
                                             own_tokenizer=True).systems["alone"]
    recipe.results.table(table, rows)
    return rows


def encoder_training(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *, name: str,
                     table: str = "encoder_frozen_vs_trainable") -> Rows:
    """The pre-trained encoder frozen vs trained with the LLM (``base``) vs trained from random weights."""
    frozen = paper_speech_llm(prefix, f"{name}-encoder-frozen", recipe, llm, freeze_encoder=True, joint=False)
    scratch = paper_speech_llm(prefix, f"{name}-encoder-scratch", recipe, llm,
                               encoder=paper_speech_llm_encoder_config(), joint=False)
    rows = {"pre-trained, frozen": frozen.systems["alone"], "pre-trained, trainable": base.systems["alone"],
            "random init, trainable": scratch.systems["alone"]}
    recipe.results.table(table, rows)
    return rows


def llm_pretraining(prefix: str, recipe: SpeechLLMRecipe, bases: Mapping[str, PaperSpeechLLM],
                    instruct: Mapping[str, object], *, table: str = "llm_base_vs_instruct") -> Rows:
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
    return rows


def llm_size(prefix: str, recipe: SpeechLLMRecipe, bases: Mapping[str, PaperSpeechLLM],
             larger: Mapping[str, object], *, table: str = "llm_size") -> Rows:
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
    return rows


def encoder_downsampling(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *, name: str,
                         factors: Sequence[int] = DOWNSAMPLING, encoder_frame_ms: int = 60,
                         table: str = "encoder_downsampling") -> Rows:
    """Extra downsampling by the adapter (frame stacking k) on top of the encoder's (one encoder frame every
    ``encoder_frame_ms``: 60 ms for the paper's 6x); the base system is the recipe's k."""
    rows = {}
    for k in factors:
        system = base.systems["alone"] if k == recipe.adapter_k else paper_speech_llm(
            prefix, f"{name}-k{k}", recipe, llm, adapter_k=k, joint=False).systems["alone"]
        rows[f"k={k} ({encoder_frame_ms * k} ms)"] = system
    recipe.results.table(table, rows)
    return rows


def interface_and_fine_tuning(prefix: str, recipe: SpeechLLMRecipe, llm: object, base: PaperSpeechLLM, *,
                              name: str, prompt: Tuple[str, str], table: str = "interface_and_fine_tuning") -> Rows:
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
    return rows


def length_normalisation(prefix: str, recipe: SpeechLLMRecipe, base: PaperSpeechLLM, *,
                         eval_sets: Optional[Sequence[str]] = None, table: str = "length_normalisation") -> Rows:
    """Recognition alone with the hypotheses ranked by score / L^alpha: the recipe's alpha (``base``) against no
    normalisation, alpha = 0 (system ``<base>-alpha=0``, on ``eval_sets``, default all)."""
    alpha = recipe.recog_beam.length_norm_exponent
    if alpha == 0.0:
        raise ValueError("length_normalisation: the recipe's recognition beam has no length normalisation (alpha=0)")
    system = f"{base.systems['alone']}-alpha=0"
    beam = dataclasses.replace(recipe.recog_beam, length_norm_exponent=0.0)
    for s in eval_sets or recipe.data.eval_sets:
        rec = SpeechLLMRecogJob(base.train.out_last_checkpoint, base.train.out_setup, recipe.data.corpora[s],
                                beam=beam, device=recipe.device, cpu=recipe.search_cpu)
        recipe.results.add_search(system, s, recipe.data, rec)
    rows = {f"alpha={alpha:g}": base.systems["alone"], "alpha=0 (no normalisation)": system}
    recipe.results.table(table, rows)
    return rows


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


def ablation_findings(base: PaperSpeechLLM, tables: Mapping[str, Rows]) -> List[Finding]:
    """The direction of each ablation against the base system (no claim, ``vs``): one finding per row of each table
    (``table name -> rows`` as the functions above return them) that is not the base."""
    findings = []
    for table, rows in tables.items():
        base_label = next((label for label, system in rows.items() if system == base.systems["alone"]), None)
        if base_label is None:
            raise ValueError(f"ablation_findings: table {table!r} has no row of the base system "
                             f"{base.systems['alone']}")
        findings += [Finding(f"ablation ({table}): {label} against {base_label}",
                             ((system, "vs", base.systems["alone"]),))
                     for label, system in rows.items() if system != base.systems["alone"]]
    return findings


# the families the paper-scale LibriSpeech experiment builds
ABLATIONS = (label_units, encoder_training, llm_pretraining, llm_size, encoder_downsampling,
             interface_and_fine_tuning, length_normalisation, joint_optimisations)
