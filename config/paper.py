"""The paper's hyperparameters in one place, read by both paper-scale experiments (LibriSpeech, Loquacious), and the
paper's speech-LLM recipe.

Speech LLM as in the paper: an 18 x 1024 Conformer encoder (pre-trained as a CTC model with aux CTC at layer 16,
then trained together with the LLM, aux CTC kept at layers 16 and 18) -> frame-stacking adapter (k = 2) -> Qwen2 with
rsLoRA (r = 320, alpha = 16) on the attention's q and v; recognised alone (beam search, score / L^alpha with EOS in
L) and jointly with its own CTC output (beam 4, CTC scale tuned on dev, time-synchronous with soft collapse 0.8).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from sisyphus import tk

from config.experiment import (AcousticModels, ExperimentData, Results, TuningGrid, gpu_device,
                               select_scale_on_tune_set, shallow_fusion)
from config.names import alias, output
from llmasr.data.open_asr import OPEN_ASR_TEST_SETS
from llmasr.llm.hub import DownloadHFModelJob
from llmasr.llm.train import CreateTinyLLMJob, PretrainLLMJob, TrainConfig
from llmasr.models.conformer import ConformerEncoderConfig, CtcModelConfig, paper_encoder_config
from llmasr.models.llm import TinyLLMConfig
from llmasr.models.lora import LoraSetup
from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.speech_llm import SpeechLLMSetup, SpeechLLMTrainingJob
from llmasr.returnn.training import GetBestCheckpointJob, ReturnnTrainingJob
from llmasr.scoring.attention_plot import PlotAttentionJob
from llmasr.scoring.report import Finding
from llmasr.search.options import LabelSyncBeam, TimeSyncOptions
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob, SpeechLLMSearchMode

# --- models ------------------------------------------------------------------------------------------------------
AM_VOCAB_SIZE = 10_000  # SentencePiece unigram 10k: the units of the AMs and of the speech LLMs over AM units
# one LoRA set-up for the speech LLM's decoder and for fine-tuning LLMs on text (rank-stabilised: alpha / sqrt(r))
PAPER_LORA = LoraSetup(rank=320, alpha=16.0, targets=("q_proj", "v_proj"), use_rslora=True)
SPEECH_LLM_ENCODER_LAYERS = 18
SPEECH_LLM_AUX_CTC_LAYERS = (16, 18)
SPEECH_LLM_ADAPTER_K = 2  # 6x from the Conformer front end, 2x more by frame stacking: 120 ms per LLM position
SPEECH_LLM_PROMPT = ("USER: ", " Transcribe speech to text. ASSISTANT: ")  # the text-prompt ablation's prompt
# the LM baseline of the fusion experiments: a 32-layer Transformer LM over the AM's units, trained on the LM text
# (a Qwen2-architecture model: RMSNorm, gated FF, RoPE; 1024 wide, 8 heads, gated FF 2816 as the AED decoder's)
TRAFO_LM_NAME = "trafo-lm-32l"  # its name among the LLMs (and "<name>-units" for label-wise fusion)
TRAFO_LM = TinyLLMConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=32, num_attention_heads=8,
                         num_key_value_heads=8, max_position_embeddings=1024, tie_word_embeddings=False)
TRAFO_LM_TRAINING = TrainConfig(epochs=1, batch_size=64, learning_rate=1e-4, warmup_steps=2000, max_length=256)

# the Qwen2 checkpoints (hub ids; the jobs read them from DownloadHFModelJob, see hub_models): base models, their
# instruct versions (same size, more pre-training), and sizes beyond
QWEN2 = {"qwen2-0.5b": "Qwen/Qwen2-0.5B", "qwen2-1.5b": "Qwen/Qwen2-1.5B"}
QWEN2_INSTRUCT = {"qwen2-0.5b-instruct": "Qwen/Qwen2-0.5B-Instruct", "qwen2-1.5b-instruct": "Qwen/Qwen2-1.5B-Instruct"}
QWEN2_LARGER = {"qwen2-7b": "Qwen/Qwen2-7B"}  # Qwen2-72B: LoRA r=320 does not fit a single 80 GB GPU (README)
# their architectures as published on the hub (``config.json``), for parameter counts and the cost estimate
QWEN2_ARCHITECTURES: Dict[str, Dict[str, object]] = {
    "Qwen/Qwen2-0.5B": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                            num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "Qwen/Qwen2-1.5B": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                            num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "Qwen/Qwen2-7B": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}

# the hub revision of each checkpoint, part of every LLM job's id: "main" until the commits of the paper's downloads
# are known (DownloadHFModelJob records the commit it got in out_model/hub_source.json); pinning them then changes the
# LLM jobs' ids once
HUB_REVISIONS: Dict[str, str] = {}
DEFAULT_HUB_REVISION = "main"


def hub_models(models: Mapping[str, str]) -> Dict[str, tk.Path]:
    """``name -> hub id`` to ``name -> downloaded model folder``: each checkpoint downloaded once by a job, so compute
    nodes need no hub access."""
    return {name: DownloadHFModelJob(repo, revision=HUB_REVISIONS.get(repo, DEFAULT_HUB_REVISION)).out_model
            for name, repo in models.items()}


# --- search and tuning ---------------------------------------------------------------------------------------------
JOINT_BEAM = LabelSyncBeam(beam_size=4, nbest=4)
JOINT_TIME_SYNC = TimeSyncOptions(soft_collapse_threshold=0.8)  # and top-8 label pruning, new labels only, batched
RECOG_BEAM = LabelSyncBeam(length_norm_exponent=1.0, length_norm_counts_eos=True)  # score / L^alpha, L counting EOS
JOINT_CTC_SCALES = (0.1, 0.2, 0.3, 0.4, 0.5)  # tried on the tuning set; the best is used on every set
DELAYS = (1, 5, 10, 20, None)  # delayed fusion: frames between LLM calls (None: only at the end)
PAPER_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 21 points in [0, 2]
TUNING = TuningGrid(lm_scales=PAPER_GRID, prior_scales=PAPER_GRID, length_rewards=(0.0, 0.5, 1.0, 1.5),
                    refine_rounds=10)
PRIOR_UTTERANCES = 100_000  # the CTC prior averages the softmax over this many training utterances

# --- evaluation ----------------------------------------------------------------------------------------------------
OPEN_ASR_SETS: Tuple[str, ...] = tuple(OPEN_ASR_TEST_SETS)  # the 8 sets of the Open ASR Leaderboard
OPEN_ASR_MEAN = {"Open ASR mean": OPEN_ASR_SETS}

GPU = dict(cpu=4, gpu=1, mem=32)


def paper_speech_llm_encoder_config() -> ConformerEncoderConfig:
    """The speech LLM's encoder: the AM encoder with 18 layers."""
    return paper_encoder_config(SPEECH_LLM_ENCODER_LAYERS)


def paper_results(prefix: str, hallucination_set: str) -> Results:
    """Results whose tables add the Open ASR mean and RTFx columns."""
    return Results(prefix, hallucination_set=hallucination_set, set_means=dict(OPEN_ASR_MEAN), with_rtfx=True)


def transformer_lm(prefix: str, text: tk.Path, spm_model: tk.Path, *, device: str = "cuda", cpu: int = 4
                   ) -> tk.Path:
    """The 32-layer Transformer LM over the AM's units (random init, trained on ``text``)."""
    init = CreateTinyLLMJob(spm_model, config=TRAFO_LM)
    job = PretrainLLMJob(init.out_model, text, train_config=TRAFO_LM_TRAINING, device=device, cpu=cpu)
    alias(init, f"{prefix}/llm/{TRAFO_LM_NAME}/init")
    return alias(job, f"{prefix}/llm/{TRAFO_LM_NAME}/train").out_model


def paper_fusion(prefix: str, data: ExperimentData, am: AcousticModels, llms: Mapping[str, object],
                 results: Results) -> Dict[str, List[str]]:
    """Shallow fusion as in the paper, once per Qwen2 size (``<size>``, ``<size>-ft``, ``<size>-ft-am-units`` in
    ``llms``) and once with the Transformer LM (``trafo-lm-32l``, ``trafo-lm-32l-units``); returns each LLM's
    systems for :func:`comparison_tables`."""
    systems = {size: shallow_fusion(prefix, data, am, llms, results, rescoring_llms=(size, f"{size}-ft"),
                                    own_units_llm=f"{size}-ft", am_units_llm=f"{size}-ft-am-units", delays=DELAYS,
                                    grid=TUNING, device="cuda", tag=size) for size in QWEN2}
    systems[TRAFO_LM_NAME] = shallow_fusion(
        prefix, data, am, llms, results, rescoring_llms=(TRAFO_LM_NAME,), own_units_llm=TRAFO_LM_NAME,
        am_units_llm=f"{TRAFO_LM_NAME}-units", delays=DELAYS, grid=TUNING, device="cuda", tag=TRAFO_LM_NAME)
    return systems


def speech_llm_encoder(prefix: str, data: ExperimentData, options: TrainingOptions, *, spm_model: tk.Path,
                       vocab_size: int = AM_VOCAB_SIZE, **rqmt) -> Tuple[tk.Path, tk.Path]:
    """Pre-trains the speech LLM's 18-layer encoder as a CTC model (CTC at 18, aux CTC at 16) on ``spm_model``'s
    units; returns its best checkpoint and model config."""
    cfg = CtcModelConfig(encoder=paper_speech_llm_encoder_config(), vocab_size=vocab_size, aux_ctc_layers=(16,),
                         aux_ctc_scales=(0.3,))
    job = ReturnnTrainingJob(cfg, data.train_zips, data.dev_zips, spm_model, options=options, **rqmt)
    alias(job, f"{prefix}/speech_llm/encoder-ctc-18l/train")
    best = alias(GetBestCheckpointJob(job, score_key="dev_loss_ctc"), f"{prefix}/speech_llm/encoder-ctc-18l/best")
    return best.out_checkpoint, job.out_model_config


@dataclasses.dataclass
class SpeechLLMRecipe:
    """Everything a paper speech LLM needs besides its variant choices; the defaults are the paper's, a smaller
    experiment (the toy) passes its own sizes.

    :param encoder_checkpoint: the pre-trained encoder (an AED or CTC checkpoint); :param encoder_model_config: its
        ``model_config.json``
    :param rqmt: the trainings' resources (the searches run on the GPU when the trainings get one)
    :param search_cpu: each search's CPUs
    :param lora: the LoRA set-up of the LLM when it trains with LoRA
    :param aux_ctc_layers: encoder layers with a CTC output trained with the LLM (their highest is the CTC of joint
        recognition); None: no CTC output (joint recognition then needs ``ctc_logprobs``)
    :param adapter_k: the base system's frame stacking by the adapter
    :param freeze_encoder: the base system keeps the encoder fixed
    :param encoder_frames: ``"train"`` / ``"dev"`` -> stored outputs of the frozen encoder
        (``DumpEncoderFramesJob``): speech LLMs with a frozen pre-trained encoder train on them instead of the audio
    :param ctc_logprobs: evaluation set -> CTC log-probs of another model (``DumpCtcLogProbsJob``) that joint
        recognition uses instead of the speech LLM's own CTC output
    :param recog_beam: the beam of recognition alone; :param joint_beam: the beam of joint recognition
    :param joint_time_sync: the time-synchronous joint search's options
    :param joint_modes: system suffix -> joint search (``speech-llm-<name>-<suffix>``); the first is the system of the
        tables (``systems["joint"]``) and the one the CTC scale is tuned with
    :param joint_ctc_scales: the CTC scales tried on the tuning set (one scale: used as it is, nothing tuned)
    :param attention_plots: plot the attention weights of the first and last LLM layer for two utterances of the
        last evaluation set (``<prefix>/speech_llm/<name>/attention``)
    :param cross_attention_gate_init: the start value of the cross-attention interface's gates (0: Flamingo's)
    :param cross_attention_options: the trainings of the cross-attention interface, if not ``options`` (the new
        attention layers may need another learning rate than a prefix)
    :param frozen_llm_options: the trainings of the systems with a frozen LLM, if not ``options`` (only the speech
        side learns then, and may take a larger learning rate)
    :param frozen_llm_adapter_hidden: the hidden size of a 2-layer MLP adapter for the systems with a frozen LLM
        (None: the recipe's linear adapter); where the encoder is frozen too, the adapter is all the speech side
        that can learn
    """

    data: ExperimentData
    results: Results
    options: TrainingOptions
    encoder_checkpoint: Optional[tk.Path]
    encoder_model_config: Optional[tk.Path]
    rqmt: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(GPU))
    search_cpu: int = 2
    lora: LoraSetup = PAPER_LORA
    aux_ctc_layers: Optional[Tuple[int, ...]] = SPEECH_LLM_AUX_CTC_LAYERS
    adapter_k: int = SPEECH_LLM_ADAPTER_K
    freeze_encoder: bool = False
    encoder_frames: Optional[Mapping[str, tk.Path]] = None
    ctc_logprobs: Optional[Mapping[str, tk.Path]] = None
    recog_beam: LabelSyncBeam = RECOG_BEAM
    joint_beam: LabelSyncBeam = JOINT_BEAM
    joint_time_sync: TimeSyncOptions = JOINT_TIME_SYNC
    joint_modes: Mapping[str, SpeechLLMSearchMode] = dataclasses.field(
        default_factory=lambda: {"ctc": SpeechLLMSearchMode.JOINT_TIME_SYNC})
    joint_ctc_scales: Tuple[float, ...] = JOINT_CTC_SCALES
    attention_plots: bool = False
    cross_attention_gate_init: float = 0.0
    cross_attention_options: Optional[TrainingOptions] = None
    frozen_llm_options: Optional[TrainingOptions] = None
    frozen_llm_adapter_hidden: Optional[int] = None

    def __post_init__(self):
        if not self.joint_modes or not self.joint_ctc_scales:
            raise ValueError("SpeechLLMRecipe: joint_modes and joint_ctc_scales need at least one entry")
        bad = [m for m in self.joint_modes.values() if m == SpeechLLMSearchMode.BEAM]
        if bad:
            raise ValueError(f"SpeechLLMRecipe.joint_modes: {bad} is not a joint search")
        if self.encoder_frames is not None and not {"train", "dev"} <= set(self.encoder_frames):
            raise ValueError("SpeechLLMRecipe.encoder_frames needs 'train' and 'dev', got "
                             f"{sorted(self.encoder_frames)}")

    @property
    def device(self) -> str:
        """Where the searches run: on the GPU when the trainings get one."""
        return gpu_device(int(self.rqmt.get("gpu", 0)))

    def config(self, **changes) -> SpeechLLMConfig:
        """The speech LLM config of the base system with ``changes`` (interface, LLM training, adapter k, frozen
        encoder)."""
        ctc = dict(aux_ctc_scale=1.0, aux_ctc_layers=self.aux_ctc_layers) if self.aux_ctc_layers is not None else {}
        fields = {"adapter_k": self.adapter_k, "freeze_encoder": self.freeze_encoder, **changes}
        if fields.get("interface") == SpeechInterface.CROSS_ATTENTION:
            fields.setdefault("cross_attention_gate_init", self.cross_attention_gate_init)
        if fields.get("llm_training") == LLMTraining.FROZEN and self.frozen_llm_adapter_hidden is not None:
            fields.setdefault("adapter_hidden", self.frozen_llm_adapter_hidden)
        return SpeechLLMConfig(**fields, **ctc, **self.lora.speech_llm_fields())


@dataclasses.dataclass
class PaperSpeechLLM:
    """A trained paper speech LLM: its training job, its systems in the results ("alone", "joint": the first joint
    search of the recipe, and each joint search under its suffix) and the CTC scale of joint recognition (None
    without it)."""

    train: SpeechLLMTrainingJob
    systems: Dict[str, str]
    ctc_scale: Optional[object] = None


def paper_speech_llm(prefix: str, name: str, recipe: SpeechLLMRecipe, llm: object, *,
                     units: Optional[tk.Path] = None, own_tokenizer: bool = False, adapter_k: Optional[int] = None,
                     llm_training: LLMTraining = LLMTraining.LORA, freeze_encoder: Optional[bool] = None,
                     encoder: Optional[ConformerEncoderConfig] = None, joint: bool = True,
                     interface: SpeechInterface = SpeechInterface.PREFIX, prompt: Tuple[str, str] = ("", ""),
                     eval_sets: Optional[Sequence[str]] = None) -> PaperSpeechLLM:
    """Trains one paper speech LLM and recognises the evaluation sets alone (system ``speech-llm-<name>``) and, over
    units with a CTC output, jointly with CTC (``speech-llm-<name>-<suffix>`` per joint search of the recipe; the
    paper's: ``-ctc``, time-sync, beam 4, soft collapse 0.8, the CTC scale of :data:`JOINT_CTC_SCALES` with the lowest
    WER on the tuning set).

    :param units: SentencePiece model of the targets (default: the AM's); :param own_tokenizer: the LLM's tokenizer
    :param adapter_k, freeze_encoder: instead of the recipe's base values
    :param encoder: a fresh encoder of this config instead of the pre-trained one (trained from random weights)
    :param interface: how the LLM sees the speech; :param prompt: text before / after the speech
    :param eval_sets: the sets to recognise (default: all of the data's)
    """
    data, results = recipe.data, recipe.results
    units = units or data.spm_model
    cfg = recipe.config(interface=interface, llm_training=llm_training,
                        **({} if adapter_k is None else dict(adapter_k=adapter_k)),
                        **({} if freeze_encoder is None else dict(freeze_encoder=freeze_encoder)))
    setup = SpeechLLMSetup(config=cfg, llm=llm, aed_checkpoint=None if encoder else recipe.encoder_checkpoint,
                           aed_model_config=None if encoder else recipe.encoder_model_config,
                           am_spm_model=None if own_tokenizer else units, encoder=encoder,
                           prompt_pre_text=prompt[0], prompt_post_text=prompt[1])
    on_frames = cfg.freeze_encoder and encoder is None and recipe.encoder_frames is not None
    train_data, dev_data = ((recipe.encoder_frames["train"], recipe.encoder_frames["dev"]) if on_frames
                            else (data.train_zips, data.dev_zips))
    options = recipe.options
    if interface == SpeechInterface.CROSS_ATTENTION and recipe.cross_attention_options is not None:
        options = recipe.cross_attention_options
    if llm_training == LLMTraining.FROZEN and recipe.frozen_llm_options is not None:
        options = recipe.frozen_llm_options
    train = SpeechLLMTrainingJob(setup, train_data, dev_data, units, options=options, **recipe.rqmt)
    alias(train, f"{prefix}/speech_llm/{name}/train")
    ckpt, sets = train.out_last_checkpoint, tuple(eval_sets or data.eval_sets)
    out = PaperSpeechLLM(train, {"alone": f"speech-llm-{name}"})
    for s in sets:
        rec = SpeechLLMRecogJob(ckpt, train.out_setup, data.corpora[s], beam=recipe.recog_beam, device=recipe.device,
                                cpu=recipe.search_cpu)
        results.add_search(out.systems["alone"], s, data, rec)
    if recipe.attention_plots:
        plot = PlotAttentionJob(ckpt, train.out_setup, data.corpora[data.eval_sets[-1]], utterances=2, layers=(0, -1))
        alias(plot, f"{prefix}/speech_llm/{name}/attention")
        output(f"{prefix}/speech_llm/{name}/attention", plot.out_dir)
    if not joint or own_tokenizer or (recipe.aux_ctc_layers is None and recipe.ctc_logprobs is None):
        return out
    out.ctc_scale = tune_joint_ctc_scale(prefix, name, recipe, train)
    for i, (suffix, mode) in enumerate(recipe.joint_modes.items()):
        system = out.systems[suffix] = f"speech-llm-{name}-{suffix}"
        if i == 0:
            out.systems["joint"] = system
        if isinstance(out.ctc_scale, tk.Variable):
            results.info[system] = {"ctc_scale": out.ctc_scale}
        for s in sets:
            results.add_search(system, s, data, joint_recog(recipe, train, s, ctc_scale=out.ctc_scale, mode=mode))
    return out


def tune_joint_ctc_scale(prefix: str, name: str, recipe: SpeechLLMRecipe, train: SpeechLLMTrainingJob) -> object:
    """The scale of the recipe's ``joint_ctc_scales`` whose joint recognition (the recipe's first joint search) has
    the lowest WER on the tuning set (each scored under ``<prefix>/speech_llm/<name>/tuning/ctc_scale=<scale>/``);
    a single scale is returned as it is."""
    data = recipe.data
    if len(recipe.joint_ctc_scales) == 1:
        return recipe.joint_ctc_scales[0]
    mode = next(iter(recipe.joint_modes.values()))
    return select_scale_on_tune_set(f"{prefix}/speech_llm/{name}/tuning/ctc_scale", data, recipe.joint_ctc_scales,
                                    lambda scale: joint_recog(recipe, train, data.tune_set, ctc_scale=scale, mode=mode))


def joint_recog(recipe: SpeechLLMRecipe, train: SpeechLLMTrainingJob, eval_set: str, *, ctc_scale: object,
                time_sync: Optional[TimeSyncOptions] = None,
                mode: SpeechLLMSearchMode = SpeechLLMSearchMode.JOINT_TIME_SYNC) -> SpeechLLMRecogJob:
    """Joint recognition of one set: the speech LLM + its own CTC output (or the recipe's ``ctc_logprobs``) with the
    recipe's joint beam, time-synchronous with the recipe's options (or ``time_sync``, e.g. soft collapse off for
    the optimisation table) or label-synchronous (``mode``)."""
    kwargs: Dict[str, object] = {}
    if mode == SpeechLLMSearchMode.JOINT_TIME_SYNC:
        kwargs["time_sync"] = recipe.joint_time_sync if time_sync is None else time_sync
    if recipe.ctc_logprobs is not None:
        kwargs["ctc_logprobs"] = recipe.ctc_logprobs[eval_set]
    return SpeechLLMRecogJob(train.out_last_checkpoint, train.out_setup, recipe.data.corpora[eval_set], mode=mode,
                             ctc_scale=ctc_scale, beam=recipe.joint_beam, device=recipe.device, cpu=recipe.search_cpu,
                             **kwargs)


def joint_findings(base: PaperSpeechLLM, am_system: str = "ctc-beam") -> Tuple[List[Finding], List[Finding]]:
    """What joint recognition is meant to show, for the findings of the WER table (each joint search below both the
    speech LLM alone and ``am_system``) and of the hallucination table (each joint search has fewer insertions and
    overlong outputs than the speech LLM alone)."""
    alone = base.systems["alone"]
    joint = {suffix: system for suffix, system in base.systems.items()
             if suffix not in ("alone", "joint") and system != alone}
    if "joint" not in base.systems:
        raise ValueError(f"joint_findings: {alone} was not recognised jointly with CTC")
    wer = [Finding(f"joint speech LLM + CTC ({suffix}) below both the speech LLM and {am_system}",
                   ((system, "<", alone), (system, "<", am_system))) for suffix, system in joint.items()]
    hallucination = [Finding(f"joint speech LLM + CTC ({suffix}) removes insertions and overlong outputs of the speech "
                             "LLM", ((f"{system}:insertions", "<", f"{alone}:insertions"),
                                     (f"{system}:overlong", "<=", f"{alone}:overlong")))
                     for suffix, system in joint.items()]
    return wer, hallucination


def comparison_tables(results: Results, fusion_systems: Mapping[str, Sequence[str]]) -> None:
    """The comparison tables: one per LLM for fusion (``fusion_systems[llm]``: its rescoring, label-wise and delayed
    fusion systems, after the AMs alone), the speech LLMs, and the Open ASR table (AMs, delayed fusion k=10, speech
    LLMs)."""
    ams = {"CTC": "ctc-beam", "AED": "aed-beam", "AED + CTC": "aed-ctc"}
    for llm, systems in fusion_systems.items():
        results.table(f"fusion_{llm}", {**ams, **{n: n for n in systems}})
    speech_llms = [n for n in results.wer if n.startswith("speech-llm-")]
    results.table("speech_llms", {n: n for n in speech_llms})
    delayed_k10 = [n for systems in fusion_systems.values() for n in systems if n.endswith("-k=10")]
    results.table("open_asr", {n: n for n in results.wer if n in ams.values() or n in speech_llms or n in delayed_k10})
