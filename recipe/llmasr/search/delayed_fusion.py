"""The time-synchronous CTC search job with an LLM: none (N-best for rescoring), label-wise or delayed fusion.

It holds only paths and options, so a worker unpickles it (and what comes after it) without torch; the searches are
:mod:`llmasr.search.labelwise_fusion` and :mod:`llmasr.search.delayed_scorer`, imported when the job runs.
"""
from __future__ import annotations

import dataclasses
import enum
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.search.options import DEFAULT_DELAY, CtcBeam, CtcOutputs, FusionScales, hashed_arguments

if TYPE_CHECKING:
    import torch

    from llmasr.search.ctc_fusion import SearchStats
    from llmasr.search.llm_scorer import LLMScorer


class FusionMode(enum.Enum):
    """How the LLM enters the time-synchronous CTC search."""

    NONE = "none"  # CTC prefix search only (N-best for rescoring)
    LABELWISE = "labelwise"  # AM and LLM share units: every new label is scored at once
    DELAYED = "delayed"  # completed words re-tokenised and scored every ``delay`` frames


class CTCFusionSearchJob(ResourceJob):
    """Time-synchronous CTC search with an LLM: none, label-wise (shared units) or delayed fusion.

    Writes the N-best lists (shared format) and search statistics (audio and decoding seconds, utterances, LLM
    forward calls and the tokens they scored, counted by the LLM scorer).
    """

    __sis_hash_exclude__ = {"same_units": False}

    def __init__(
        self,
        ctc_logprobs: tk.Path,
        am_spm_model: tk.Path,
        llm: Optional[Union[tk.Path, str]] = None,
        *,
        mode: FusionMode = FusionMode.DELAYED,
        delay: Optional[int] = DEFAULT_DELAY,
        scales: FusionScales = FusionScales(),
        log_prior: Optional[tk.Path] = None,
        beam: CtcBeam = CtcBeam(),
        ctc_outputs: CtcOutputs = CtcOutputs(),
        corpus: Optional[tk.Path] = None,
        lowercase: Optional[bool] = None,
        utterances_per_batch: int = 8,
        device: str = "cpu",
        same_units: bool = False,
    ):
        """
        :param ctc_logprobs: per-utterance CTC outputs (RETURNN HDF or torch dict, see :func:`read_ctc_logprobs`)
        :param am_spm_model: the AM's SentencePiece model (labels = piece ids, blank after them by default)
        :param llm: LLM dir or hub name (None only with ``mode=NONE``); LABELWISE needs an LLM over the AM
            pieces (``FineTuneLLMJob(units=AM)``)
        :param mode: NONE, LABELWISE or DELAYED
        :param delay: frames between delayed LLM calls (None: only at the end)
        :param scales: LLM weight, prior weight (needs ``log_prior``) and length reward, floats or Variables
            (e.g. ``TuneScalesJob.out_lm_scale``)
        :param log_prior: label log-prior over the CTC outputs (.npy or text)
        :param beam: beam size, labels tried per hypothesis and frame, hypotheses written per utterance
        :param ctc_outputs: blank index, logits or log-probs, frame shift of ``ctc_logprobs``
        :param corpus: manifest for the audio duration in the stats (else frames * frame shift)
        :param lowercase: lower-case words before LLM tokenisation (None: as saved with the LLM)
        :param utterances_per_batch: utterances searched together (one LLM call per frame serves all)
        :param device: "cpu" or "cuda"
        :param same_units: DELAYED with an LLM over the AM's units (as LABELWISE needs): labels are scored as they are
            emitted, as in label-wise fusion, instead of re-tokenised per completed word; delayed and label-wise
            fusion then differ only in when the LLM is called
        """
        if not isinstance(mode, FusionMode):
            raise ValueError(f"mode must be a FusionMode, got {mode!r}")
        if mode != FusionMode.NONE and llm is None:
            raise ValueError(f"mode {mode.name} needs an llm")
        if delay is not None and delay < 1:
            raise ValueError(f"delay must be >= 1 frame or None, got {delay}")
        if same_units and mode != FusionMode.DELAYED:
            raise ValueError(f"same_units is an option of delayed fusion, not of mode {mode.name}")
        self.ctc_logprobs = ctc_logprobs
        self.am_spm_model = am_spm_model
        self.llm = llm
        self.mode = mode
        self.delay = delay
        self.scales = scales
        self.log_prior = log_prior
        self.beam = beam
        self.ctc_outputs = ctc_outputs
        self.corpus = corpus
        self.lowercase = lowercase
        self.utterances_per_batch = utterances_per_batch
        self.device = device
        self.same_units = same_units
        self.out_nbest = self.output_path("nbest.json.gz")
        self.out_search_stats = self.output_path("search_stats.json")
        self.rqmt = {"cpu": 1, "mem": 8, "time": 8, "gpu": 1 if device == "cuda" else 0}

    @classmethod
    def hash(cls, parsed_args):
        """The option groups are hashed as the separate arguments they stand for (job ids as before the grouping)."""
        return super().hash(hashed_arguments(parsed_args))

    def tasks(self):
        yield Task("run", rqmt=self.rqmt)

    def run(self):
        import torch

        from llmasr.search.ctc_fusion import SearchStats

        torch.set_num_threads(1)
        fusion = self._prepare()
        durations = self._durations()
        results: Dict[str, List[dict]] = {}
        audio_s, stats, t0 = 0.0, SearchStats(), time.perf_counter()
        batch: List[Tuple[str, torch.Tensor]] = []
        for seq_id, lp in self._utterances(fusion):
            audio_s += durations.get(seq_id, lp.shape[0] * self.ctc_outputs.frame_shift)
            batch.append((seq_id, lp))
            if len(batch) >= self.utterances_per_batch:
                self._search(fusion, batch, results, stats)
                batch = []
        if batch:
            self._search(fusion, batch, results, stats)
        decode_s = time.perf_counter() - t0
        if not results:
            raise ValueError(f"{self.ctc_logprobs.get_path()}: no utterances")
        from llmasr.search.corpus_search import write_search_outputs

        write_search_outputs(results, {"audio_seconds": audio_s, "decode_seconds": decode_s,
                                       "llm_forward_calls": stats.llm_forward_calls,
                                       "llm_forward_tokens": stats.llm_forward_tokens, "utterances": len(results)},
                             self.out_nbest.get_path(), self.out_search_stats.get_path())

    def _prepare(self) -> "_FusionRun":
        """The scales, the prior, the AM's units and the LLM (with its tokenizer) the search runs with."""
        import torch

        from llmasr.models.llm import load_llm, load_llm_tokenizer
        from llmasr.search.rescoring import read_log_prior, resolve_scale
        from llmasr.text.units import AmUnits

        fusion = _FusionRun(
            lm_scale=resolve_scale(self.scales.lm_scale, "lm_scale") if self.mode != FusionMode.NONE else 0.0,
            prior_scale=resolve_scale(self.scales.prior_scale, "prior_scale"),
            length_reward=resolve_scale(self.scales.length_reward, "length_reward"),
            units=AmUnits.from_sentencepiece_model(self.am_spm_model.get_path()))
        if self.log_prior is not None:
            fusion.log_prior = torch.tensor(read_log_prior(self.log_prior.get_path()), dtype=torch.float32)
        elif fusion.prior_scale:
            raise ValueError(f"prior_scale={fusion.prior_scale} but no log_prior file given")
        if self.mode != FusionMode.NONE:
            loc = self.llm.get_path() if hasattr(self.llm, "get_path") else str(self.llm)
            fusion.model = load_llm(loc, device=self.run_device())
            fusion.tokenizer = load_llm_tokenizer(loc, lowercase=self.lowercase)
        return fusion

    def _durations(self) -> Dict[str, float]:
        """Audio seconds per utterance from the corpus (empty without one: frames times the frame shift)."""
        if self.corpus is None:
            return {}
        from llmasr.data.corpus import iter_corpus

        return {e.id: e.duration for e in iter_corpus(self.corpus.get_path())}

    def _utterances(self, fusion: "_FusionRun") -> Iterator[Tuple[str, torch.Tensor]]:
        """(seq_id, [T, V] log-probs) of the file, checked: one vocabulary (fixed by the first utterance, which also
        sets up the LLM scorer), each utterance once."""
        from llmasr.search.ctc_logprobs import read_ctc_logprobs

        seen = set()
        for seq_id, lp in read_ctc_logprobs(self.ctc_logprobs.get_path()):
            lp = lp.float()
            if self.ctc_outputs.logprobs_are_logits:
                lp = lp.log_softmax(-1)
            if fusion.vocab is None:
                self._set_vocabulary(fusion, lp.shape[1], seq_id)
            elif lp.shape[1] != fusion.vocab:
                raise ValueError(f"{self.ctc_logprobs.get_path()}: {seq_id} has {lp.shape[1]} CTC outputs, "
                                 f"earlier utterances {fusion.vocab}")
            if seq_id in seen:
                raise ValueError(f"{self.ctc_logprobs.get_path()}: duplicate utterance {seq_id!r}")
            seen.add(seq_id)
            yield seq_id, lp

    def _set_vocabulary(self, fusion: "_FusionRun", vocab: int, seq_id: str) -> None:
        """The CTC outputs' size, the blank, and the LLM scorer over them (label-wise: the AM labels as LLM tokens)."""
        import torch

        from llmasr.search.llm_scorer import LLMScorer

        blank = vocab - 1 if self.ctc_outputs.blank is None else self.ctc_outputs.blank
        if not 0 <= blank < vocab:
            raise ValueError(f"blank index {blank} outside the {vocab} CTC outputs of {seq_id}")
        if fusion.log_prior is not None and fusion.log_prior.shape[0] != vocab:
            raise ValueError(f"log_prior has {fusion.log_prior.shape[0]} entries, CTC outputs have {vocab}")
        fusion.vocab, fusion.blank = vocab, blank
        tok = fusion.tokenizer
        if self.mode == FusionMode.LABELWISE or self.same_units:
            if tok.vocab_size < len(fusion.units):
                raise ValueError(f"{self.mode.value} fusion over the AM units needs an LLM over them: LLM vocab "
                                 f"{tok.vocab_size} < {len(fusion.units)} pieces of {self.am_spm_model.get_path()}")
        if self.mode == FusionMode.LABELWISE:
            l2t = torch.arange(vocab)
            l2t[blank] = -1
            l2t[l2t >= tok.vocab_size] = -1
            fusion.scorer = LLMScorer(fusion.model, bos_id=tok.bos_id, eos_id=tok.eos_id, label_to_token=l2t)
        elif self.mode == FusionMode.DELAYED:
            fusion.scorer = LLMScorer(fusion.model, bos_id=tok.bos_id, eos_id=tok.eos_id)

    def _search(self, fusion: "_FusionRun", batch: List[Tuple[str, torch.Tensor]], results: Dict[str, List[dict]],
                stats: SearchStats) -> None:
        """Searches a batch of utterances together, files their N-best lists in ``results`` and adds the LLM's work
        to ``stats``."""
        import torch

        from llmasr.search.delayed_scorer import SameUnitsConverter, WordConverter, delayed_fusion_search
        from llmasr.search.labelwise_fusion import ctc_labelwise_fusion_search

        lens = torch.tensor([lp.shape[0] for _, lp in batch])
        padded = torch.zeros(len(batch), int(lens.max()), fusion.vocab)  # [B, T, V], padding masked by lens
        for i, (_, lp) in enumerate(batch):
            padded[i, : lp.shape[0]] = lp
        common = dict(blank=fusion.blank, beam_size=self.beam.beam_size, label_topk=self.beam.label_topk,
                      lm_scale=fusion.lm_scale, log_prior=fusion.log_prior, prior_scale=fusion.prior_scale,
                      length_reward=fusion.length_reward, labels_to_text=fusion.labels_to_text, nbest=self.beam.nbest,
                      stats=stats)
        if self.mode == FusionMode.LABELWISE:
            out = ctc_labelwise_fusion_search(padded, lens, llm_scorer=fusion.scorer, **common)
        else:
            converter = (SameUnitsConverter() if self.same_units else
                         WordConverter(fusion.units, fusion.tokenizer) if fusion.tokenizer is not None else None)
            out = delayed_fusion_search(padded, lens, llm_scorer=fusion.scorer, converter=converter,
                                        delay=self.delay, delayed_beam_size=self.beam.delayed_beam_size, **common)
        for (seq_id, _), hyps in zip(batch, out):
            results[seq_id] = hyps


@dataclasses.dataclass
class _FusionRun:
    """What a :class:`CTCFusionSearchJob` run searches with: the scales, the prior, the AM's units and the LLM; the
    CTC outputs' size, blank and the LLM scorer over them once the first utterance is read."""

    lm_scale: float
    prior_scale: float
    length_reward: float
    units: Any  # llmasr.text.units.AmUnits
    log_prior: Optional[torch.Tensor] = None
    model: Any = None  # the LLM (None with FusionMode.NONE)
    tokenizer: Any = None
    vocab: Optional[int] = None
    blank: Optional[int] = None
    scorer: Optional[LLMScorer] = None

    def labels_to_text(self, labels: Sequence[int]) -> str:
        return self.units.ids_to_text([x for x in labels if x < len(self.units)])
