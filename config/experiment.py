"""The comparison as graph-building functions shared by the toy and the paper-scale configs.

Stages after data, label units and LLMs: acoustic models and their recognition (:func:`acoustic_models`), the LLM
joined at search time (:func:`shallow_fusion`), speech LLMs alone and with CTC (:func:`speech_llms`), and the
tables (:meth:`Results.report`). Sizes and variants are arguments; the configs hold the numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from sisyphus import tk

from llmasr.llm.perplexity import ComputePerplexityJob
from llmasr.llm.train import FineTuneLLMJob, FineTuneMethod, FineTuneUnits, TrainConfig
from llmasr.models.conformer import AedModelConfig, CtcModelConfig
from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.forward import (DumpCtcLogProbsJob, DumpEncoderFramesJob, EstimateCtcPriorJob, RecogMode,
                                    ReturnnForwardJob)
from llmasr.returnn.speech_llm import SpeechLLMSetup, SpeechLLMTrainingJob
from llmasr.returnn.training import AverageCheckpointsJob, GetBestCheckpointJob, ReturnnTrainingJob
from llmasr.scoring.attention_plot import PlotAttentionJob
from llmasr.scoring.report import LLM_CALLS, Finding, ReportTableJob
from llmasr.scoring.wer import ScoreWERJob
from llmasr.search.aed_fusion import AedFusionSearchJob
from llmasr.search.delayed_fusion import CTCFusionSearchJob, FusionMode
from llmasr.search.rescoring import RescoreNBestJob
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob, SpeechLLMSearchMode
from llmasr.tuning.scales import TuneScalesJob

Zips = Union[tk.Path, List[tk.Path]]

# speech LLM variants of the comparison: each changes one choice of the first (the configs' base: prefix, LoRA,
# 2x extra downsampling), "am_units": False keeps the LLM's tokenizer, "prompt": True adds the text prompt
SPEECH_LLM_VARIANTS: Dict[str, Dict[str, object]] = {
    "prefix-lora-k2": {},
    "prefix-frozen-k2": dict(llm_training=LLMTraining.FROZEN),
    "prefix-full-k2": dict(llm_training=LLMTraining.FULL),
    "prefix-lora-k1": dict(adapter_k=1),
    "xattn-lora-k2": dict(interface=SpeechInterface.CROSS_ATTENTION),
    "prefix-lora-k2-prompt": dict(prompt=True),
    "prefix-lora-k2-llm-units": dict(am_units=False),
}
SPEECH_LLM_PROMPT = ("USER: ", " Transcribe speech to text. ASSISTANT: ")


@dataclasses.dataclass
class ExperimentData:
    """What the later stages read.

    :param corpora: evaluation set -> corpus manifest (references, audio for the non-RETURNN searches)
    :param zips: evaluation set -> OggZip (RETURNN forward jobs)
    :param train_zips: AM / speech-LLM training data; :param dev_zips: their dev data (checkpoint selection)
    :param spm_model: the AM's SentencePiece model
    :param tune_set: the evaluation set the scales are tuned on; :param eval_sets: the sets in the tables
    :param prior_zips: data for the CTC prior (default: the training data)
    :param prior_utterances: the CTC prior averages a fixed random subset of this many utterances (None: all)
    """

    corpora: Dict[str, tk.Path]
    zips: Dict[str, tk.Path]
    train_zips: Zips
    dev_zips: Zips
    spm_model: tk.Path
    tune_set: str
    eval_sets: Tuple[str, ...]
    prior_zips: Optional[Zips] = None
    prior_utterances: Optional[int] = None


@dataclasses.dataclass
class Results:
    """WER per system and evaluation set, extra columns per system (tuned scales), hallucination figures (on
    ``hallucination_set``); ``set_means`` adds mean columns over groups of sets (e.g. the Open ASR mean) and
    ``with_rtfx`` an RTFx column to the tables; ``llm_stats`` (the search statistics of the LLM fusion systems) an
    "LLM calls/utt" column to the results table."""

    prefix: str
    hallucination_set: str
    wer: Dict[str, Dict[str, tk.Variable]] = dataclasses.field(default_factory=dict)
    info: Dict[str, Dict[str, object]] = dataclasses.field(default_factory=dict)
    hallucination: Dict[str, Dict[str, object]] = dataclasses.field(default_factory=dict)
    findings: List[Finding] = dataclasses.field(default_factory=list)  # checked against the WER table
    hallucination_findings: List[Finding] = dataclasses.field(default_factory=list)  # ... the hallucination table
    set_means: Dict[str, Tuple[str, ...]] = dataclasses.field(default_factory=dict)
    with_rtfx: bool = False
    rtfx: Dict[str, Dict[str, tk.Variable]] = dataclasses.field(default_factory=dict)
    llm_stats: Dict[str, Dict[str, tk.Path]] = dataclasses.field(default_factory=dict)

    def score(self, system: str, eval_set: str, data: ExperimentData, nbest: tk.Path,
              search_stats: Optional[tk.Path] = None, *, hallucination: bool = True,
              llm_calls: bool = False) -> ScoreWERJob:
        """Scores an N-best output and files the WER (and, if asked, the hallucination figures); ``llm_calls``: the
        search statistics count LLM forward calls (LLM fusion), shown per utterance in the results table."""
        job = ScoreWERJob(nbest, data.corpora[eval_set], search_stats=search_stats)
        tk.register_output(f"{self.prefix}/{system}/{eval_set}/wer.json", job.out_report)
        self.wer.setdefault(system, {})[eval_set] = job.out_wer
        if search_stats is not None:
            self.rtfx.setdefault(system, {})[eval_set] = job.out_rtfx
            if llm_calls:
                self.llm_stats.setdefault(system, {})[eval_set] = search_stats
        if hallucination and eval_set == self.hallucination_set:
            self.hallucination[system] = {"insertions": job.out_insertion_rate, "overlong": job.out_long_share,
                                          "loops": job.out_loop_share, "empty": job.out_empty_share}
        return job

    def _table_options(self, rows: Mapping[str, str]) -> Dict[str, object]:
        """The optional columns of a table whose ``rows`` map row labels to systems (none: the tables as before)."""
        opts: Dict[str, object] = {}
        if self.set_means:
            opts["set_means"] = dict(self.set_means)
        if self.with_rtfx:
            opts["rtfx"] = {label: self.rtfx.get(system, {}) for label, system in rows.items()}
        return opts

    def table(self, name: str, rows: Mapping[str, str]) -> ReportTableJob:
        """A named table ``<prefix>/report/<name>.md`` of some systems: ``rows`` maps the row label to the system
        name (with the Open ASR mean and RTFx columns where the results have them)."""
        missing = [s for s in rows.values() if s not in self.wer]
        if missing:
            raise ValueError(f"table {name!r}: systems {missing} have no scores")
        job = ReportTableJob({label: self.wer[s] for label, s in rows.items()}, **self._table_options(rows))
        tk.register_output(f"{self.prefix}/report/{name}.md", job.out_table)
        return job

    def report(self) -> None:
        """``<prefix>/report/results.md`` (+ plot) and ``hallucination.md``."""
        hall_set = self.hallucination_set
        report = ReportTableJob(self.wer, info=self.info, findings=self.findings, llm_stats=self.llm_stats or None,
                                **self._table_options({n: n for n in self.wer}))
        tk.register_output(f"{self.prefix}/report/results.md", report.out_table)
        tk.register_output(f"{self.prefix}/report/results.png", report.out_plot)
        if self.hallucination:
            hall = ReportTableJob({n: {hall_set: self.wer[n][hall_set]}
                                   for n in self.hallucination}, info=self.hallucination,
                                  metric="WER [%] and hallucination figures [%]",
                                  findings=self.hallucination_findings)
            tk.register_output(f"{self.prefix}/report/hallucination.md", hall.out_table)


def hub_llms(prefix: str, hub_models: Mapping[str, object], text: tk.Path, spm_model: tk.Path,
             ppl_corpora: Mapping[str, tk.Path], *, train_config: TrainConfig, device: str = "cuda",
             cpu: int = 4) -> Dict[str, object]:
    """Hub LLMs (``name -> model folder``, e.g. :func:`config.paper.hub_models`, or hub id) as they are (``name``),
    fine-tuned on ``text`` with their own tokenizer lower-cased (``name-ft``), and fine-tuned with the AM's units by
    a vocabulary swap (``name-ft-am-units``); perplexities registered."""
    llms: Dict[str, object] = {}
    for name, hub in hub_models.items():
        llms[name] = hub
        llms[f"{name}-ft"] = FineTuneLLMJob(hub, text, units=FineTuneUnits.LLM, lowercase=True,
                                            method=FineTuneMethod.FULL, train_config=train_config, device=device,
                                            cpu=cpu).out_model
        llms[f"{name}-ft-am-units"] = FineTuneLLMJob(hub, text, units=FineTuneUnits.AM, am_spm_model=spm_model,
                                                     method=FineTuneMethod.FULL, train_config=train_config,
                                                     device=device, cpu=cpu).out_model
    for name, model in llms.items():
        for eval_set, corpus in ppl_corpora.items():
            ppl = ComputePerplexityJob(model, corpus, device=device)
            tk.register_output(f"{prefix}/llm/{name}/{eval_set}/ppl.json", ppl.out_ppl)
    return llms


@dataclasses.dataclass
class AcousticModels:
    """The trained AMs and what fusion and speech LLMs reuse from them."""

    ctc: ReturnnTrainingJob
    ctc_checkpoint: tk.Path
    aed: ReturnnTrainingJob
    aed_checkpoint: tk.Path
    nbest: Dict[Tuple[str, str], tk.Path]  # (system, eval set) -> N-best
    ctc_logprobs: Dict[str, tk.Path]  # eval set -> CTC log-probs
    prior: EstimateCtcPriorJob
    # stored outputs of the frozen encoder shared by the AED and the speech LLMs ("train", "dev"), if it is frozen
    encoder_frames: Optional[Dict[str, tk.Path]] = None


def acoustic_models(prefix: str, data: ExperimentData, results: Results, *, ctc_config: CtcModelConfig,
                    aed_config: AedModelConfig, options: TrainingOptions, aed_options: Optional[TrainingOptions] = None,
                    aed_average: int = 2, aed_encoder_from_ctc: bool = False, freeze_aed_encoder: bool = False,
                    cpu: int = 2, gpu: int = 0, mem: int = 8, search_cpu: int = 2, device: str = "cpu"
                    ) -> AcousticModels:
    """CTC (best checkpoint by dev CTC loss) and AED (average of the best by dev CE), trained through RETURNN;
    CTC greedy/beam, AED beam and AED+CTC recognition of every evaluation set; CTC prior and log-prob dumps.
    ``aed_options`` (default: ``options``) trains the AED; ``aed_encoder_from_ctc`` starts the AED's encoder from
    the CTC model (same encoder config needed), so that it can train for fewer epochs; ``freeze_aed_encoder`` also
    keeps it fixed: its outputs are then stored once (``encoder_frames``) and the AED's decoder and aux CTC layer
    train on them, at a small share of the cost of an encoder training."""
    ctc = ReturnnTrainingJob(ctc_config, data.train_zips, data.dev_zips, data.spm_model, options=options,
                             cpu=cpu, gpu=gpu, mem=mem)
    ctc.add_alias(f"{prefix}/am/ctc/train")
    ctc_ckpt = GetBestCheckpointJob(ctc, score_key="dev_loss_ctc").out_checkpoint
    if (aed_encoder_from_ctc or freeze_aed_encoder) and aed_config.encoder != ctc_config.encoder:
        raise ValueError("aed_encoder_from_ctc / freeze_aed_encoder need the same encoder config in ctc_config and "
                         "aed_config")
    frames = None
    if freeze_aed_encoder:
        frames = {name: DumpEncoderFramesJob(ctc_ckpt, ctc.out_model_config, zips, data.spm_model,
                                             cpu=search_cpu, device=device).out_frames
                  for name, zips in (("train", data.train_zips), ("dev", data.dev_zips))}
    aed = ReturnnTrainingJob(aed_config, frames["train"] if frames else data.train_zips,
                             frames["dev"] if frames else data.dev_zips, data.spm_model,
                             options=aed_options or options, cpu=cpu, gpu=gpu, mem=mem,
                             init_checkpoint=ctc_ckpt if (aed_encoder_from_ctc or freeze_aed_encoder) else None,
                             init_mapping=ctc_output_to_aed_aux(ctc_config, aed_config) if freeze_aed_encoder else None)
    aed.add_alias(f"{prefix}/am/aed/train")
    aed_ckpt = AverageCheckpointsJob(aed, num_best=aed_average, score_key="dev_loss_ce").out_checkpoint
    systems = {
        "ctc-greedy": (ctc_ckpt, ctc.out_model_config, RecogMode.CTC_GREEDY),
        "ctc-beam": (ctc_ckpt, ctc.out_model_config, RecogMode.CTC_BEAM),
        "aed-beam": (aed_ckpt, aed.out_model_config, RecogMode.AED_BEAM),
        "aed+ctc": (aed_ckpt, aed.out_model_config, RecogMode.AED_CTC),
    }
    nbest = {}
    for name, (ckpt, model_config, mode) in systems.items():
        for eval_set in data.eval_sets:
            rec = ReturnnForwardJob(ckpt, model_config, data.zips[eval_set], data.spm_model, mode=mode,
                                    cpu=search_cpu, device=device)
            nbest[name, eval_set] = rec.out_nbest
            results.score(name, eval_set, data, rec.out_nbest, rec.out_search_stats)
    kwargs = dict(cpu=search_cpu, device=device)
    prior = EstimateCtcPriorJob(ctc_ckpt, ctc.out_model_config, data.prior_zips or data.train_zips, data.spm_model,
                                max_utterances=data.prior_utterances, **kwargs)
    logprobs = {s: DumpCtcLogProbsJob(ctc_ckpt, ctc.out_model_config, data.zips[s], data.spm_model,
                                      **kwargs).out_ctc_logprobs for s in data.eval_sets}
    results.findings.append(Finding("AED+CTC below both the AED and the CTC model",
                                    (("aed+ctc", "<", "aed-beam"), ("aed+ctc", "<", "ctc-beam"))))
    return AcousticModels(ctc, ctc_ckpt, aed, aed_ckpt, nbest, logprobs, prior, encoder_frames=frames)


def ctc_output_to_aed_aux(ctc_config: CtcModelConfig, aed_config: AedModelConfig) -> Dict[str, str]:
    """Parameter names of the AED's aux CTC layer on the last encoder layer -> the CTC model's output layer (the
    AED on the CTC model's frozen encoder starts its CTC layer there instead of from scratch)."""
    last = aed_config.encoder.num_layers
    if last not in aed_config.aux_ctc_layers:
        return {}
    return {f"aux_outputs.{last}.{p}": f"output.{p}" for p in ("weight", "bias")}


@dataclasses.dataclass(frozen=True)
class TuningGrid:
    """Grids of the scale tuning (refined around the best point by :class:`TuneScalesJob` in ``refine_rounds``
    rounds of halving steps)."""

    lm_scales: Tuple[float, ...] = tuple(x / 10 for x in range(0, 11))
    prior_scales: Tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    length_rewards: Tuple[float, ...] = (0.0, 0.5, 1.0, 1.5)
    refine_rounds: int = 3


def shallow_fusion(prefix: str, data: ExperimentData, am: AcousticModels, llms: Mapping[str, object],
                   results: Results, *, rescoring_llms: Sequence[str], own_units_llm: str, am_units_llm: str,
                   delays: Sequence[Optional[int]] = (1, 5, 10, 20, None), grid: TuningGrid = TuningGrid(),
                   device: str = "cpu", tag: str = "") -> None:
    """N-best rescoring (CTC with prior, AED), label-wise fusion (CTC and AED with the LLM over the AM units)
    and delayed fusion at several delays, with that same LLM (so that the two fusions compare with one LM) and with
    the LLM's own tokenizer; scales tuned on the tuning set's rescored N-best lists and used on every evaluation set;
    the findings the paper reports about them are checked in the report. ``tag`` is appended to the fusion system names
    (e.g. the LLM size when the function is called once per LLM)."""
    suffix = f" [{tag}]" if tag else ""
    prior_labels, prior_all = am.prior.out_log_label_prior, am.prior.out_log_prior

    def tune(am_system: str, llm_name: str, *, am_key: str, use_labels: bool, with_prior: bool) -> TuneScalesJob:
        rescored = RescoreNBestJob(am.nbest[am_system, data.tune_set], llms[llm_name], use_labels=use_labels,
                                   am_key=am_key, log_prior=prior_labels if with_prior else None,
                                   device=device).out_nbest
        job = TuneScalesJob(rescored, data.corpora[data.tune_set], lm_scales=grid.lm_scales,
                            prior_scales=grid.prior_scales if with_prior else (0.0,),
                            length_rewards=grid.length_rewards, refine_rounds=grid.refine_rounds, am_key=am_key)
        job.add_alias(f"{prefix}/tuning/{am_system}/{llm_name}")
        tk.register_output(f"{prefix}/tuning/{am_system}/{llm_name}/scales.json", job.out_scales)
        return job

    def scales(job: TuneScalesJob) -> Dict[str, object]:
        return {"lm_scale": job.out_lm_scale, "prior_scale": job.out_prior_scale,
                "length_reward": job.out_length_reward}

    for am_system, am_key, with_prior in (("ctc-beam", "ctc", True), ("aed-beam", "am", False)):
        for llm_name in rescoring_llms:
            t = tune(am_system, llm_name, am_key=am_key, use_labels=False, with_prior=with_prior)
            name = f"{am_system} + rescoring ({llm_name})"
            results.info[name] = scales(t)
            for s in data.eval_sets:  # rescoring systems are named by their LLM already
                job = RescoreNBestJob(am.nbest[am_system, s], llms[llm_name], am_key=am_key, **scales(t),
                                      log_prior=prior_labels if with_prior else None, device=device)
                results.score(name, s, data, job.out_nbest)

    t = tune("ctc-beam", am_units_llm, am_key="ctc", use_labels=True, with_prior=True)
    results.info["ctc + label-wise fusion" + suffix] = scales(t)
    for s in data.eval_sets:
        job = CTCFusionSearchJob(am.ctc_logprobs[s], data.spm_model, llms[am_units_llm], mode=FusionMode.LABELWISE,
                                 **scales(t), log_prior=prior_all, corpus=data.corpora[s], device=device)
        results.score("ctc + label-wise fusion" + suffix, s, data, job.out_nbest, job.out_search_stats,
                      llm_calls=True)
    t = tune("aed-beam", am_units_llm, am_key="am", use_labels=True, with_prior=False)
    results.info["aed + label-wise fusion" + suffix] = scales(t)
    for s in data.eval_sets:
        job = AedFusionSearchJob(am.aed_checkpoint, am.aed.out_model_config, data.corpora[s], data.spm_model,
                                 llms[am_units_llm], lm_scale=t.out_lm_scale, length_reward=t.out_length_reward,
                                 device=device)
        results.score("aed + label-wise fusion" + suffix, s, data, job.out_nbest, job.out_search_stats,
                      llm_calls=True)

    # delayed fusion with the LLM of label-wise fusion (same units and scales: k=1 can be checked against label-wise)
    # and with the LLM's own tokenizer (the cross-tokenizer case)
    labelwise_scales = t
    own_scales = tune("ctc-beam", own_units_llm, am_key="ctc", use_labels=False, with_prior=True)
    for llm_name, t, kind in ((am_units_llm, labelwise_scales, "am-units"), (own_units_llm, own_scales, "own-units")):
        for delay in delays:
            name = delayed_name(kind, delay) + suffix
            results.info[name] = scales(t)
            for s in data.eval_sets:
                job = CTCFusionSearchJob(am.ctc_logprobs[s], data.spm_model, llms[llm_name],
                                         mode=FusionMode.DELAYED, delay=delay, **scales(t), log_prior=prior_all,
                                         corpus=data.corpora[s], device=device)
                results.score(name, s, data, job.out_nbest, job.out_search_stats, llm_calls=True)
    ks = [k for k in delays if k is not None] + ([None] if None in delays else [])
    results.findings.extend([
        Finding("LLM fusion below the AM alone", (("ctc + label-wise fusion" + suffix, "<", "ctc-beam"),
                                                  ("aed + label-wise fusion" + suffix, "<", "aed-beam"))),
        Finding("delayed fusion WER rises with k (same LLM as label-wise)",
                tuple((delayed_name("am-units", a) + suffix, "<=", delayed_name("am-units", b) + suffix)
                      for a, b in zip(ks, ks[1:]))),
        Finding("delayed fusion WER rises with k (LLM's own tokenizer)",
                tuple((delayed_name("own-units", a) + suffix, "<=", delayed_name("own-units", b) + suffix)
                      for a, b in zip(ks, ks[1:]))),
        Finding("delayed fusion at k=1 close to label-wise fusion (same LLM, within 10 % relative)",
                ((delayed_name("am-units", 1) + suffix, "~", "ctc + label-wise fusion" + suffix),)),
        Finding(f"N-best rescoring no better than delayed fusion at the end ({own_units_llm})",
                ((delayed_name("own-units", None) + suffix, "<=", f"ctc-beam + rescoring ({own_units_llm})"),)),
    ])
    if 5 in delays:  # LLM calls (k=5 / label-wise <= 1/3) and relative WER change (k=5 / label-wise <= 1.01)
        k5, lw = delayed_name("am-units", 5) + suffix, "ctc + label-wise fusion" + suffix
        results.findings.append(Finding(
            "delayed fusion at k=5 makes >= 3x fewer LLM calls than label-wise fusion at <= 1 % relative WER loss "
            "(same LLM)", ((f"{k5}:{LLM_CALLS}", "<=", f"{lw}:{LLM_CALLS}", 1 / 3), (k5, "<=", lw, 1.01)),
            sets=(data.tune_set,)))


def delayed_name(units: str, delay: Optional[int]) -> str:
    """Table row of CTC + delayed fusion with the LLM over ``units`` ("am-units" or "own-units") every k frames."""
    return f"ctc + delayed fusion {units} (k={delay or 'end'})"


def speech_llms(prefix: str, data: ExperimentData, am: AcousticModels, llm: object, results: Results, *,
                base: Mapping[str, object], variants: Mapping[str, Mapping[str, object]], options: TrainingOptions,
                prompt: Tuple[str, str], joint_ctc_scale: float = 0.3, cpu: int = 2, gpu: int = 0, mem: int = 16,
                device: str = "cpu") -> Dict[str, SpeechLLMTrainingJob]:
    """Speech LLMs (the AED's encoder -> adapter -> ``llm``), one per variant; each variant is a dict of
    :class:`SpeechLLMConfig` changes to ``base`` plus optional ``am_units`` (default True) and ``prompt``
    (default False). The first variant is also recognised with alpha = 0 and jointly with the CTC model; the
    attention weights of the first and last LLM layer are plotted for two utterances of the last evaluation set."""
    trained = {}
    for name, changes in variants.items():
        changes = dict(changes)
        am_units = bool(changes.pop("am_units", True))
        with_prompt = bool(changes.pop("prompt", False))
        setup = SpeechLLMSetup(
            config=SpeechLLMConfig(encoder_dim=0, **{**base, **changes}), llm=llm,
            aed_checkpoint=am.aed_checkpoint, aed_model_config=am.aed.out_model_config,
            am_spm_model=data.spm_model if am_units else None,
            prompt_pre_text=prompt[0] if with_prompt else "", prompt_post_text=prompt[1] if with_prompt else "")
        on_frames = setup.config.freeze_encoder and am.encoder_frames is not None  # the AED's frozen encoder
        job = SpeechLLMTrainingJob(setup, am.encoder_frames["train"] if on_frames else data.train_zips,
                                   am.encoder_frames["dev"] if on_frames else data.dev_zips, data.spm_model,
                                   options=options, cpu=cpu, gpu=gpu, mem=mem)
        job.add_alias(f"{prefix}/speech_llm/{name}/train")
        trained[name] = job

    def recognise(system: str, job: SpeechLLMTrainingJob, with_ctc: bool = False, **kwargs) -> None:
        for s in data.eval_sets:
            if with_ctc:
                kwargs["ctc_logprobs"] = am.ctc_logprobs[s]
            rec = SpeechLLMRecogJob(job.out_last_checkpoint, job.out_setup, data.corpora[s], device=device, **kwargs)
            results.score(system, s, data, rec.out_nbest, rec.out_search_stats)

    for name, job in trained.items():
        recognise(f"speech-llm {name}", job)
        plot = PlotAttentionJob(job.out_last_checkpoint, job.out_setup, data.corpora[data.eval_sets[-1]],
                                utterances=2, layers=(0, -1))
        tk.register_output(f"{prefix}/speech_llm/{name}/attention", plot.out_dir)
    first, job = next(iter(trained.items()))
    recognise(f"speech-llm {first} (alpha=0)", job, length_norm_exponent=0.0)
    recognise(f"speech-llm {first} + ctc (label-sync)", job, with_ctc=True,
              mode=SpeechLLMSearchMode.JOINT_LABEL_SYNC, ctc_scale=joint_ctc_scale)
    recognise(f"speech-llm {first} + ctc (time-sync)", job, with_ctc=True,
              mode=SpeechLLMSearchMode.JOINT_TIME_SYNC, ctc_scale=joint_ctc_scale)
    base, joint = f"speech-llm {first}", [f"speech-llm {first} + ctc ({m})" for m in ("label-sync", "time-sync")]
    results.findings.append(Finding("joint speech LLM + CTC (label-sync) below both the speech LLM and the CTC model",
                                    ((joint[0], "<", base), (joint[0], "<", "ctc-beam"))))
    results.findings.extend(Finding(f"ablation: {name} against {first}", ((f"speech-llm {name}", "vs", base),))
                            for name in list(trained)[1:])
    results.findings.append(Finding(f"ablation: length normalisation alpha=0 against alpha=1 ({first})",
                                    ((f"{base} (alpha=0)", "vs", base),)))
    results.hallucination_findings.extend(
        Finding(f"{j[len(base) + 3:]} removes insertions and overlong outputs of the speech LLM",
                ((f"{j}:insertions", "<", f"{base}:insertions"), (f"{j}:overlong", "<=", f"{base}:overlong")))
        for j in joint)
    return trained
