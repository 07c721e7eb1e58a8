"""The comparison as graph-building functions shared by the toy and the paper-scale configs.

Stages after data, label units and LLMs: acoustic models and their recognition (:func:`acoustic_models`), the LLM
joined at search time (:func:`shallow_fusion`) and the tables (:meth:`Results.report`); the speech LLMs and their
ablations are built by :mod:`config.paper` and :mod:`config.ablations`. Sizes and variants are arguments; the configs
hold the numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from sisyphus import Job, tk

from config.names import alias, checked_name, output
from llmasr.llm.perplexity import ComputePerplexityJob
from llmasr.llm.train import FineTuneLLMJob, FineTuneMethod, FineTuneUnits, TrainConfig
from llmasr.models.conformer import AedModelConfig, CtcModelConfig
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.forward import (DumpCtcLogProbsJob, DumpEncoderFramesJob, EstimateCtcPriorJob, RecogMode,
                                    ReturnnForwardJob)
from llmasr.returnn.training import AverageCheckpointsJob, GetBestCheckpointJob, ReturnnTrainingJob
from llmasr.scoring.report import LLM_CALLS, Finding, ReportTableJob
from llmasr.scoring.wer import ScoreWERJob
from llmasr.search.aed_fusion import AedFusionSearchJob
from llmasr.search.delayed_fusion import CTCFusionSearchJob, FusionMode
from llmasr.search.options import CtcBeam, FusionScales
from llmasr.search.rescoring import RescoreNBestJob
from llmasr.tuning.scales import SelectBestScaleJob, TuneScalesJob

Zips = Union[tk.Path, List[tk.Path]]

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
    :param frames_train_zips: more training data for the models that train on a frozen encoder's stored outputs (the
        AED decoder, speech LLMs), beside ``train_zips``; the encoder itself never trains on them
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
    frames_train_zips: Optional[Zips] = None


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

    def add_search(self, system: str, eval_set: str, data: ExperimentData, search: Job, *,
                   llm_calls: bool = False) -> ScoreWERJob:
        """Files a search job's output as ``system`` on ``eval_set``: the search is aliased
        ``<prefix>/<system>/<set>/search``, then scored (:meth:`score`, with its statistics where it has them)."""
        alias(search, f"{self.prefix}/{system}/{eval_set}/search")
        return self.score(system, eval_set, data, search.out_nbest, getattr(search, "out_search_stats", None),
                          llm_calls=llm_calls)

    def score(self, system: str, eval_set: str, data: ExperimentData, nbest: tk.Path,
              search_stats: Optional[tk.Path] = None, *, hallucination: bool = True,
              llm_calls: bool = False) -> ScoreWERJob:
        """Scores an N-best output and files the WER (and, if asked, the hallucination figures): the scoring job is
        aliased ``<prefix>/<system>/<set>/score``, its report is the output ``<prefix>/<system>/<set>/wer.json``;
        ``llm_calls``: the search statistics count LLM forward calls (LLM fusion), shown per utterance in the results
        table."""
        checked_name(system)
        job = ScoreWERJob(nbest, data.corpora[eval_set], search_stats=search_stats)
        alias(job, f"{self.prefix}/{system}/{eval_set}/score")
        output(f"{self.prefix}/{system}/{eval_set}/wer.json", job.out_report)
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
        alias(job, f"{self.prefix}/report/{name}")
        output(f"{self.prefix}/report/{name}.md", job.out_table)
        return job

    def report(self) -> None:
        """``<prefix>/report/results.md`` (+ plot) and ``hallucination.md``."""
        hall_set = self.hallucination_set
        report = ReportTableJob(self.wer, info=self.info, findings=self.findings, llm_stats=self.llm_stats or None,
                                **self._table_options({n: n for n in self.wer}))
        alias(report, f"{self.prefix}/report/results")
        output(f"{self.prefix}/report/results.md", report.out_table)
        output(f"{self.prefix}/report/results.png", report.out_plot)
        if self.hallucination:
            hall = ReportTableJob({n: {hall_set: self.wer[n][hall_set]}
                                   for n in self.hallucination}, info=self.hallucination,
                                  metric="WER [%] and hallucination figures [%]",
                                  findings=self.hallucination_findings)
            alias(hall, f"{self.prefix}/report/hallucination")
            output(f"{self.prefix}/report/hallucination.md", hall.out_table)


def hub_llms(prefix: str, hub_models: Mapping[str, object], text: tk.Path, spm_model: tk.Path,
             ppl_corpora: Mapping[str, tk.Path], *, train_config: TrainConfig, device: str = "cuda",
             cpu: int = 4) -> Dict[str, object]:
    """Hub LLMs (``name -> model folder``, e.g. :func:`config.paper.hub_models`, or hub id) as they are (``name``),
    fine-tuned on ``text`` with their own tokenizer lower-cased (``name-ft``), and fine-tuned with the AM's units by
    a vocabulary swap (``name-ft-am-units``); perplexities registered."""
    llms: Dict[str, object] = {}
    for name, hub in hub_models.items():
        llms[name] = hub
        own = FineTuneLLMJob(hub, text, units=FineTuneUnits.LLM, lowercase=True, method=FineTuneMethod.FULL,
                             train_config=train_config, device=device, cpu=cpu)
        am_units = FineTuneLLMJob(hub, text, units=FineTuneUnits.AM, am_spm_model=spm_model,
                                  method=FineTuneMethod.FULL, train_config=train_config, device=device, cpu=cpu)
        llms[f"{name}-ft"] = alias(own, f"{prefix}/llm/{name}-ft/train").out_model
        llms[f"{name}-ft-am-units"] = alias(am_units, f"{prefix}/llm/{name}-ft-am-units/train").out_model
    perplexities(prefix, llms, ppl_corpora, device=device)
    return llms


def perplexities(prefix: str, llms: Mapping[str, object], corpora: Mapping[str, tk.Path], *,
                 device: str = "cpu") -> None:
    """Per-word and per-subword perplexity of every LLM on every corpus: ``<prefix>/llm/<name>/<set>/ppl.json``."""
    for name, model in llms.items():
        for eval_set, corpus in corpora.items():
            ppl = alias(ComputePerplexityJob(model, corpus, device=device), f"{prefix}/llm/{name}/{eval_set}/ppl")
            output(f"{prefix}/llm/{name}/{eval_set}/ppl.json", ppl.out_ppl)


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
    # stored outputs of the frozen encoder shared by the AED and the speech LLMs ("train", "dev"), if it is frozen;
    # "train" lists one file per training OggZip (those of ``train_zips``, then ``frames_train_zips``) if several
    encoder_frames: Optional[Dict[str, Union[tk.Path, List[tk.Path]]]] = None


def select_scale_on_tune_set(where: str, data: ExperimentData, scales: Sequence[float],
                             search: Callable[[float], Job]) -> tk.Variable:
    """Runs ``search(scale)`` (a job with ``out_nbest`` and ``out_search_stats``) on the tuning set for each scale,
    scored under ``<where>=<scale>/<tune set>/``, and returns the scale with the lowest WER (output ``<where>``):
    for weights that change the search itself, which cannot be tuned on N-best lists."""
    dev_wers = {}
    for scale in scales:
        here = f"{where}={scale}/{data.tune_set}"
        rec = alias(search(scale), f"{here}/search")
        wer = ScoreWERJob(rec.out_nbest, data.corpora[data.tune_set], search_stats=rec.out_search_stats)
        output(f"{here}/wer.json", alias(wer, f"{here}/score").out_report)
        dev_wers[scale] = wer.out_wer
    best = alias(SelectBestScaleJob(dev_wers), where)
    output(where, best.out_scale)
    return best.out_scale


@dataclasses.dataclass(frozen=True)
class LexiconSearch:
    """The AMs' beam searches restricted to the words of ``word_list`` (:class:`llmasr.text.lexicon.WordListJob` over
    training text): the CTC search with beam and label top-k ``ctc_beam`` (the lexicon ends hypotheses whose word
    cannot be finished, so it may need a wider beam than the CTC search alone) and a reward per label chosen on the
    tuning set among ``ctc_length_rewards`` (a lexicon search deletes rather than spell a non-word)."""

    word_list: tk.Path
    ctc_beam: int = 8
    ctc_length_rewards: Sequence[float] = (0.0,)


def acoustic_models(prefix: str, data: ExperimentData, results: Results, *, ctc_config: CtcModelConfig,
                    aed_config: AedModelConfig, options: TrainingOptions, aed_options: Optional[TrainingOptions] = None,
                    aed_average: int = 2, aed_encoder_from_ctc: bool = False, freeze_aed_encoder: bool = False,
                    cpu: int = 2, gpu: int = 0, mem: int = 8, search_cpu: int = 2, search_gpu: Optional[int] = None,
                    aed_ctc_scales: Sequence[float] = (0.3,), lexicon: Optional[LexiconSearch] = None
                    ) -> AcousticModels:
    """CTC (best checkpoint by dev CTC loss) and AED (average of the best by dev CE), trained through RETURNN;
    CTC greedy/beam, AED beam and AED+CTC recognition of every evaluation set; CTC prior and log-prob dumps.
    ``aed_options`` (default: ``options``) trains the AED; ``aed_encoder_from_ctc`` starts the AED's encoder from
    the CTC model (same encoder config needed), so that it can train for fewer epochs; ``freeze_aed_encoder`` also
    keeps it fixed: its outputs are then stored once (``encoder_frames``) and the AED's decoder and aux CTC layer
    train on them, at a small share of the cost of an encoder training. ``cpu``, ``gpu``, ``mem``: each training's
    resources; ``search_cpu``, ``search_gpu`` (default: ``gpu``): each search's, which runs on the GPU if it gets one.
    ``aed_ctc_scales``: the CTC weight of AED+CTC recognition; with several, each is tried on the tuning set and the
    one with the lowest WER is used on every set (searched under ``<prefix>/am/aed/tuning/ctc_scale=<scale>/``).
    ``lexicon``: the three beam searches also run restricted to its words (``ctc-beam-lexicon``, ``aed-beam-lexicon``,
    ``aed-ctc-lexicon``; the length reward tried under ``<prefix>/am/ctc/tuning/lexicon_length_reward=<reward>/``)."""
    if (aed_encoder_from_ctc or freeze_aed_encoder) and aed_config.encoder != ctc_config.encoder:
        raise ValueError("aed_encoder_from_ctc / freeze_aed_encoder need the same encoder config in ctc_config and "
                         "aed_config")
    if data.frames_train_zips is not None and not freeze_aed_encoder:
        raise ValueError("ExperimentData.frames_train_zips trains only models on a frozen encoder's stored outputs: "
                         "it needs freeze_aed_encoder=True")
    if not aed_ctc_scales:
        raise ValueError("acoustic_models: aed_ctc_scales needs at least one scale")
    device = gpu_device(gpu if search_gpu is None else search_gpu)
    search = dict(cpu=search_cpu, device=device)
    ctc = ReturnnTrainingJob(ctc_config, data.train_zips, data.dev_zips, data.spm_model, options=options,
                             cpu=cpu, gpu=gpu, mem=mem)
    alias(ctc, f"{prefix}/am/ctc/train")
    ctc_ckpt = alias(GetBestCheckpointJob(ctc, score_key="dev_loss_ctc"), f"{prefix}/am/ctc/best").out_checkpoint
    frames = None
    if freeze_aed_encoder:
        def dump(name: str, zips: Zips) -> tk.Path:
            return alias(DumpEncoderFramesJob(ctc_ckpt, ctc.out_model_config, zips, data.spm_model, cpu=search_cpu,
                                              device=device), f"{prefix}/am/ctc/encoder_frames/{name}").out_frames

        # one dump per training OggZip, so that they run side by side
        zips = list(data.train_zips) if isinstance(data.train_zips, (list, tuple)) else [data.train_zips]
        train = [dump("train" if i == 0 else f"train-{i}", z) for i, z in enumerate(zips)]
        if data.frames_train_zips is not None:
            train.append(dump("train-extra", data.frames_train_zips))
        frames = {"train": train if len(train) > 1 else train[0], "dev": dump("dev", data.dev_zips)}
    aed = ReturnnTrainingJob(aed_config, frames["train"] if frames else data.train_zips,
                             frames["dev"] if frames else data.dev_zips, data.spm_model,
                             options=aed_options or options, cpu=cpu, gpu=gpu, mem=mem,
                             init_checkpoint=ctc_ckpt if (aed_encoder_from_ctc or freeze_aed_encoder) else None,
                             init_mapping=ctc_output_to_aed_aux(ctc_config, aed_config) if freeze_aed_encoder else None)
    alias(aed, f"{prefix}/am/aed/train")
    aed_ckpt = alias(AverageCheckpointsJob(aed, num_best=aed_average, score_key="dev_loss_ce"),
                     f"{prefix}/am/aed/average").out_checkpoint
    systems = {
        "ctc-greedy": ((ctc_ckpt, ctc.out_model_config, RecogMode.CTC_GREEDY), {}),
        "ctc-beam": ((ctc_ckpt, ctc.out_model_config, RecogMode.CTC_BEAM), {}),
        "aed-beam": ((aed_ckpt, aed.out_model_config, RecogMode.AED_BEAM), {}),
        "aed-ctc": ((aed_ckpt, aed.out_model_config, RecogMode.AED_CTC), {}),
    }
    aed_ctc_scale = aed_ctc_scales[0]
    if len(aed_ctc_scales) > 1:
        aed_ctc_scale = select_scale_on_tune_set(
            f"{prefix}/am/aed/tuning/ctc_scale", data, aed_ctc_scales,
            lambda scale: ReturnnForwardJob(aed_ckpt, aed.out_model_config, data.zips[data.tune_set], data.spm_model,
                                            mode=RecogMode.AED_CTC, ctc_scale=scale, **search))
        results.info["aed-ctc"] = {"ctc_scale": aed_ctc_scale}
    systems["aed-ctc"] = (systems["aed-ctc"][0], dict(ctc_scale=aed_ctc_scale))
    results.findings.append(Finding("AED+CTC below both the AED and the CTC model",
                                    (("aed-ctc", "<", "aed-beam"), ("aed-ctc", "<", "ctc-beam"))))
    if lexicon is not None:
        systems.update(lexicon_searches(prefix, data, results, systems, lexicon, search))
    nbest = {}
    for name, ((ckpt, model_config, mode), extra) in systems.items():
        for eval_set in data.eval_sets:
            rec = ReturnnForwardJob(ckpt, model_config, data.zips[eval_set], data.spm_model, mode=mode, **search,
                                    **extra)
            nbest[name, eval_set] = rec.out_nbest
            results.add_search(name, eval_set, data, rec)
    prior = alias(EstimateCtcPriorJob(ctc_ckpt, ctc.out_model_config, data.prior_zips or data.train_zips,
                                      data.spm_model, max_utterances=data.prior_utterances, **search),
                  f"{prefix}/am/ctc/prior")
    logprobs = {s: alias(DumpCtcLogProbsJob(ctc_ckpt, ctc.out_model_config, data.zips[s], data.spm_model, **search),
                         f"{prefix}/am/ctc/{s}/logprobs").out_ctc_logprobs for s in data.eval_sets}
    return AcousticModels(ctc, ctc_ckpt, aed, aed_ckpt, nbest, logprobs, prior, encoder_frames=frames)


def lexicon_searches(prefix: str, data: ExperimentData, results: Results, systems: Dict[str, Tuple[tuple, dict]],
                     lexicon: LexiconSearch, search: Dict[str, object]) -> Dict[str, Tuple[tuple, dict]]:
    """``ctc-beam``, ``aed-beam`` and ``aed-ctc`` of ``systems`` (name -> ((checkpoint, model config, mode), search
    options)) restricted to the lexicon's words, as systems ``<name>-lexicon``; the CTC search's length reward is
    chosen on the tuning set, and the report's finding compares each with its search without the lexicon."""
    out = {f"{name}-lexicon": (systems[name][0], dict(systems[name][1], lexicon=lexicon.word_list))
           for name in ("aed-beam", "aed-ctc")}
    (ctc_ckpt, ctc_model_config, _), _ = systems["ctc-beam"]
    ctc = dict(lexicon=lexicon.word_list, beam_size=lexicon.ctc_beam, label_topk=lexicon.ctc_beam)
    reward = lexicon.ctc_length_rewards[0] if lexicon.ctc_length_rewards else 0.0
    if len(lexicon.ctc_length_rewards) > 1:
        reward = select_scale_on_tune_set(
            f"{prefix}/am/ctc/tuning/lexicon_length_reward", data, lexicon.ctc_length_rewards,
            lambda r: ReturnnForwardJob(ctc_ckpt, ctc_model_config, data.zips[data.tune_set], data.spm_model,
                                        mode=RecogMode.CTC_BEAM, length_reward=r, **search, **ctc))
        results.info["ctc-beam-lexicon"] = {"length_reward": reward}
    out["ctc-beam-lexicon"] = (systems["ctc-beam"][0], dict(ctc, length_reward=reward))
    names = ("ctc-beam", "aed-beam", "aed-ctc")
    results.findings.append(Finding("A lexicon lowers the WER of every AM search",
                                    tuple((f"{name}-lexicon", "<", name) for name in names)))
    return out


def gpu_device(gpu: int) -> str:
    """The torch device of a search job given the GPUs it gets (one switch for both, so that they cannot disagree)."""
    return "cuda" if gpu else "cpu"


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
                   device: str = "cpu", search_cpu: int = 2, tag: str = "",
                   delayed_beam: CtcBeam = CtcBeam(delayed_beam_size=64)) -> List[str]:
    """N-best rescoring (CTC with prior, AED), label-wise fusion (CTC and AED with the LLM over the AM units)
    and delayed fusion at several delays, with that same LLM (so that the two fusions compare with one LM) and with
    the LLM's own tokenizer; scales tuned on the tuning set's rescored N-best lists and used on every evaluation set;
    the findings the paper reports about them are checked in the report. ``tag`` (e.g. the LLM size when the function
    is called once per LLM) goes into the names of the fusion systems (:func:`fusion_name`); ``search_cpu``: threads of
    the AED fusion searches; ``delayed_beam``: the beam of delayed fusion over the AM units. Returns the systems."""
    prior_labels, prior_all = am.prior.out_log_label_prior, am.prior.out_log_prior
    systems: List[str] = []

    def tune(am_system: str, llm_name: str, *, use_labels: bool) -> TuneScalesJob:
        """Scales of ``llm_name`` on the N-best lists of ``am_system``: LM scale, length reward and, for CTC, the prior
        scale (the labels or the words of the hypotheses scored by the LLM)."""
        am_key, with_prior = AM_SCORE_KEYS[am_system], am_system.startswith("ctc")
        where = f"{prefix}/tuning/{am_system}/{llm_name}"
        rescored = RescoreNBestJob(am.nbest[am_system, data.tune_set], llms[llm_name], use_labels=use_labels,
                                   am_key=am_key, log_prior=prior_labels if with_prior else None, device=device)
        alias(rescored, f"{where}/{data.tune_set}/rescore")
        job = TuneScalesJob(rescored.out_nbest, data.corpora[data.tune_set], lm_scales=grid.lm_scales,
                            prior_scales=grid.prior_scales if with_prior else (0.0,),
                            length_rewards=grid.length_rewards, refine_rounds=grid.refine_rounds, am_key=am_key)
        alias(job, f"{where}/{data.tune_set}/tune")
        output(f"{where}/{data.tune_set}/scales.json", job.out_scales)
        return job

    def add(system: str, tuned: TuneScalesJob, searches: Mapping[str, Job], *, llm_calls: bool = False) -> None:
        results.info[system] = tuned_scales(tuned)
        for s, job in searches.items():
            results.add_search(system, s, data, job, llm_calls=llm_calls)
        systems.append(system)

    for am_system in ("ctc-beam", "aed-beam"):
        with_prior = am_system.startswith("ctc")
        for llm_name in rescoring_llms:
            tuned = tune(am_system, llm_name, use_labels=False)
            add(f"{am_system}-rescore-{llm_name}", tuned, {
                s: RescoreNBestJob(am.nbest[am_system, s], llms[llm_name], am_key=AM_SCORE_KEYS[am_system],
                                   **tuned_scales(tuned), log_prior=prior_labels if with_prior else None,
                                   device=device) for s in data.eval_sets})

    ctc_labelwise = tune("ctc-beam", am_units_llm, use_labels=True)
    add(fusion_name("ctc-labelwise", tag), ctc_labelwise, {
        s: CTCFusionSearchJob(am.ctc_logprobs[s], data.spm_model, llms[am_units_llm], mode=FusionMode.LABELWISE,
                              scales=FusionScales(**tuned_scales(ctc_labelwise)), log_prior=prior_all,
                              corpus=data.corpora[s], device=device) for s in data.eval_sets}, llm_calls=True)
    aed_labelwise = tune("aed-beam", am_units_llm, use_labels=True)
    add(fusion_name("aed-labelwise", tag), aed_labelwise, {
        s: AedFusionSearchJob(am.aed_checkpoint, am.aed.out_model_config, data.corpora[s], data.spm_model,
                              llms[am_units_llm], lm_scale=aed_labelwise.out_lm_scale,
                              length_reward=aed_labelwise.out_length_reward, device=device, cpu=search_cpu)
        for s in data.eval_sets},
        llm_calls=True)

    # delayed fusion with the LLM of label-wise fusion, its units and its scales (the two fusions then differ only in
    # when the LLM is called; k=1 can be checked against label-wise), and with the LLM's own tokenizer (the
    # cross-tokenizer case: completed words re-tokenised). Over the AM units, CTC keeps ``delayed_beam`` hypotheses
    # between calls and each call prunes to the beam; with re-tokenised words the word still being spelled has no LLM
    # score yet, so such a prune favours hypotheses that do not finish words (toy dev, k=1: 26.6 % WER against 21.9
    # with the plain beam), and those rows keep the plain beam
    own_units = tune("ctc-beam", own_units_llm, use_labels=False)
    for llm_name, tuned, units, same_units in ((am_units_llm, ctc_labelwise, "am-units", True),
                                               (own_units_llm, own_units, "own-units", False)):
        for delay in delays:
            add(delayed_name(units, delay, tag), tuned, {
                s: CTCFusionSearchJob(am.ctc_logprobs[s], data.spm_model, llms[llm_name], mode=FusionMode.DELAYED,
                                      delay=delay, scales=FusionScales(**tuned_scales(tuned)), log_prior=prior_all,
                                      beam=delayed_beam if same_units else CtcBeam(), same_units=same_units,
                                      corpus=data.corpora[s], device=device) for s in data.eval_sets},
                llm_calls=True)
    results.findings.extend(fusion_findings(tag, delays, own_units_llm, data.tune_set))
    return systems


# which score of an AM's N-best list is the AM's score
AM_SCORE_KEYS = {"ctc-beam": "ctc", "aed-beam": "am"}


def tuned_scales(job: TuneScalesJob) -> Dict[str, tk.Variable]:
    """The tuned LM scale, prior scale and length reward as keyword arguments of the fusion jobs."""
    return {"lm_scale": job.out_lm_scale, "prior_scale": job.out_prior_scale, "length_reward": job.out_length_reward}


def fusion_name(system: str, tag: str = "") -> str:
    """``system`` followed by the LLM's tag where the fusion systems of several LLMs share a table."""
    return f"{system}-{tag}" if tag else system


def delayed_name(units: str, delay: Optional[int], tag: str = "") -> str:
    """The system of CTC + delayed fusion with the LLM over ``units`` ("am-units" or "own-units") every k frames,
    e.g. ``ctc-delayed-own-units-k=5`` (``...-<tag>-k=5`` with a tag)."""
    return f"{fusion_name(f'ctc-delayed-{units}', tag)}-k={delay or 'end'}"


def fusion_findings(tag: str, delays: Sequence[Optional[int]], own_units_llm: str, tune_set: str) -> List[Finding]:
    """What the paper reports about shallow fusion, as findings on the systems of :func:`shallow_fusion` (the
    LLM-call finding on the tuning set)."""
    ks = [k for k in delays if k is not None] + ([None] if None in delays else [])
    ctc_labelwise, aed_labelwise = fusion_name("ctc-labelwise", tag), fusion_name("aed-labelwise", tag)
    findings = [
        Finding("LLM fusion below the AM alone", ((ctc_labelwise, "<", "ctc-beam"), (aed_labelwise, "<", "aed-beam"))),
        Finding("delayed fusion WER rises with k (same LLM as label-wise)",
                tuple((delayed_name("am-units", a, tag), "<=", delayed_name("am-units", b, tag))
                      for a, b in zip(ks, ks[1:]))),
        Finding("delayed fusion WER rises with k (LLM's own tokenizer)",
                tuple((delayed_name("own-units", a, tag), "<=", delayed_name("own-units", b, tag))
                      for a, b in zip(ks, ks[1:]))),
        Finding("delayed fusion at k=1 close to label-wise fusion (same LLM, within 10 % relative)",
                ((delayed_name("am-units", 1, tag), "~", ctc_labelwise),)),
        Finding(f"N-best rescoring no better than delayed fusion at the end ({own_units_llm})",
                ((delayed_name("own-units", None, tag), "<=", f"ctc-beam-rescore-{own_units_llm}"),)),
    ]
    if 5 in delays:  # LLM calls (k=5 / label-wise <= 1/3) and relative WER change (k=5 / label-wise <= 1.01)
        k5 = delayed_name("am-units", 5, tag)
        findings.append(Finding(
            "delayed fusion at k=5 makes >= 3x fewer LLM calls than label-wise fusion at <= 1 % relative WER loss "
            "(same LLM)", ((f"{k5}:{LLM_CALLS}", "<=", f"{ctc_labelwise}:{LLM_CALLS}", 1 / 3),
                           (k5, "<=", ctc_labelwise, 1.01)), sets=(tune_set,)))
    return findings
