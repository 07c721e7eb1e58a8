"""Delayed fusion: a CTC acoustic model and an LLM with different units in one time-synchronous search.

A :class:`DelayedLLMScorer` on the project's one CTC prefix search (:func:`llmasr.search.ctc.ctc_beam_search`).
Every ``delay`` frames (or only at the end) the completed words of every hypothesis are converted to
LLM tokens and all pending tokens of all hypotheses are scored in one KV-cached LLM call; the label prior is
subtracted for the labels of those consumed words only, so LM and prior enter together. An utterance's beam is
final after its last frame; all its words and EOS are scored in the next of these calls (at the latest when
the last utterance searched together ends), so utterances ending at different frames add no calls: delay None
makes one call for the final hypotheses of all utterances. Label-wise fusion (shared units) is the same search
with the LLM as a label scorer (:mod:`llmasr.search.labelwise_fusion`).
"""
from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.search.ctc import FrameScorer, Hypothesis, best_hypotheses
from llmasr.search.ctc_fusion import SearchStats, ctc_search_without_llm, run_ctc_fusion
from llmasr.search.ctc_logprobs import read_ctc_logprobs
from llmasr.search.llm_scorer import LLMScorer, LLMState
from llmasr.search.options import CtcBeam, CtcOutputs, FusionScales, hashed_arguments

NEG_INF = float("-inf")
DEFAULT_DELAY = 5  # frames between LLM calls of delayed fusion (the function's and the job's default)


class SameUnitsConverter:
    """AM labels are LLM tokens (possibly through a map): every label is consumed at once."""

    def __init__(self, label_to_token: Optional[Sequence[int]] = None):
        self.label_to_token = None if label_to_token is None else [int(x) for x in label_to_token]

    def __call__(self, labels: Tuple[int, ...], final: bool) -> Tuple[List[int], int]:
        """Returns (LLM tokens of the consumable labels, number of consumed labels)."""
        if self.label_to_token is None:
            return list(labels), len(labels)
        return [self.label_to_token[x] for x in labels], len(labels)

    def token(self, label: int) -> int:
        """The LLM token of one label."""
        return int(label) if self.label_to_token is None else self.label_to_token[label]


class WordConverter:
    """AM labels -> completed words -> LLM tokens, through :class:`llmasr.text.units.AmUnits`.

    A word is completed once a later label starts a new word (or at the end, ``final``). ``encoder``
    encodes words one at a time (``encode_words(words, first_index=...)``, e.g.
    :class:`llmasr.text.units.LlmWordEncoder` or :class:`llmasr.models.llm.LLMTokenizer`), so the tokens
    of a hypothesis only grow as its labels grow.
    """

    def __init__(self, am_units, encoder):
        self.am_units = am_units
        self.encoder = encoder
        self._cache: Dict[Tuple[int, ...], Tuple[List[int], int]] = {}

    def __call__(self, labels: Tuple[int, ...], final: bool) -> Tuple[List[int], int]:
        """(LLM tokens of the completed words, number of labels belonging to them)."""
        key = (int(final),) + tuple(labels)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        words, tail = self.am_units.split_completed(labels, final=final)
        n_labels = len(labels)
        if tail:  # the unfinished word starts at its first non-special label
            seen = 0
            for pos in range(len(labels) - 1, -1, -1):
                if int(labels[pos]) not in self.am_units.special_ids:
                    seen += 1
                    if seen == len(tail):
                        n_labels = pos
                        break
        out = (list(self.encoder.encode_words(words, first_index=0)), n_labels)
        if len(self._cache) > 200000:
            self._cache.clear()
        self._cache[key] = out
        return out

    def text(self, labels: Sequence[int]) -> str:
        return self.am_units.ids_to_text(labels)


@dataclasses.dataclass(frozen=True)
class _Consumed:
    """What a hypothesis has fed to the LLM: its row in an LLM state, labels and tokens consumed."""

    state: LLMState
    row: int
    n_lab: int = 0
    n_tok: int = 0


class DelayedLLMScorer(FrameScorer):
    """Scores the completed words of all hypotheses every ``delay`` frames in one cached LLM call, and all words +
    EOS of the final beams of utterances that ended since the last call in the same call (or, after the last
    frame of all utterances, in one last call); records "lm" and "prior" (of the consumed labels).

    :param llm_scorer: the LLM
    :param converter: ``(labels, final) -> (LLM tokens of consumable words, consumed labels)``
    :param delay: frames between LLM calls (None: only at the end)
    :param log_prior: [V] label log-prior (None: zero)
    :param prune_to: after each call, keep this many hypotheses of each running beam (ranked by the search's total
        with ``prior_scale`` and ``length_reward``); None: keep the beam as the search pruned it

    With a :class:`SameUnitsConverter` the first label a hypothesis emits after a call is scored at once, from the
    next-token distribution that call already computed (no extra call; the next call adds the same score exactly
    once), so that the pruning between calls sees it.
    """

    def __init__(self, llm_scorer: LLMScorer, converter, *, lm_scale: float, delay: Optional[int],
                 log_prior: Optional[torch.Tensor], prune_to: Optional[int] = None, prior_scale: float = 0.0,
                 length_reward: float = 0.0):
        if delay is not None and delay < 1:
            raise ValueError(f"delay must be >= 1 frame or None (only at the end), got {delay}")
        self.llm, self.converter, self.lm_scale, self.delay = llm_scorer, converter, lm_scale, delay
        self.prune_to, self.prior_scale, self.length_reward = prune_to, prior_scale, length_reward
        self.lookahead = isinstance(converter, SameUnitsConverter)  # labels are tokens: the next one is known
        self.prior = None if log_prior is None else log_prior.detach().double().cpu().tolist()
        self._ended: List[Hypothesis] = []  # final beams whose words and EOS are still to be scored

    def start(self, utt_ids: torch.Tensor, roots: List[Hypothesis]) -> None:
        state = self.llm.start(torch.arange(len(roots)))
        self._ended = []
        for r, h in enumerate(roots):
            h.user_state = _Consumed(state, r)
            h.scores["lm"] = 0.0

    def _first_label_lookahead(self, hyps: List[Hypothesis]) -> None:
        """``extra`` of each hypothesis: its LLM score so far plus that of its first label not yet consumed."""
        for h in hyps:
            consumed = h.user_state
            lm = h.scores["lm"]
            next_lp = consumed.state.next_logprobs
            if len(h.labels) > consumed.n_lab and next_lp is not None:
                lm += float(next_lp[consumed.row, self.converter.token(h.labels[consumed.n_lab])])
            h.extra = self.lm_scale * lm

    def _prior(self, labels: Sequence[int]) -> float:
        return 0.0 if self.prior is None else sum(self.prior[x] for x in labels)

    def update(self, t: int, beams: List[List[Hypothesis]], final: List[bool]) -> None:
        # a final beam no longer changes: it waits for the next call (at the latest the one after the last frame)
        self._ended += [h for beam, last in zip(beams, final) if last for h in beam]
        if not (self.delay is not None and (t + 1) % self.delay == 0 or all(final)):
            if self.lookahead:
                self._first_label_lookahead([h for beam, last in zip(beams, final) if not last for h in beam])
            return
        hyps = [(h, False) for beam, last in zip(beams, final) if not last for h in beam]
        hyps += [(h, True) for h in self._ended]
        self._ended = []
        groups: Dict[int, List[Tuple[Hypothesis, bool]]] = {}
        for h, last in hyps:  # hypotheses of one flush share one LLM state (one call)
            groups.setdefault(id(h.user_state.state), []).append((h, last))
        for group in groups.values():
            pending, consumed = [], []
            for h, last in group:
                toks, n_lab = self.converter(h.labels, last)
                pending.append(toks[h.user_state.n_tok:] + ([self.llm.eos_id] if last else []))
                consumed.append((n_lab, len(toks)))
            rows = torch.tensor([h.user_state.row for h, _ in group], dtype=torch.long)
            sums, state = self.llm.advance(self.llm.select(group[0][0].user_state.state, rows), pending)
            for r, ((h, _), s, (n_lab, n_tok)) in enumerate(zip(group, sums.tolist(), consumed)):
                h.scores["lm"] += s
                h.scores["prior"] += self._prior(h.labels[h.user_state.n_lab:n_lab])
                h.extra = self.lm_scale * h.scores["lm"]
                h.user_state = _Consumed(state, r, n_lab, n_tok)
        if self.prune_to is not None:
            for beam, last in zip(beams, final):
                if not last:
                    beam[:] = best_hypotheses(beam, self.prune_to, {}, self.prior_scale, self.length_reward)


def delayed_fusion_search(
    ctc_logprobs: torch.Tensor,
    lengths: Optional[torch.Tensor] = None,
    *,
    llm_scorer: Optional[LLMScorer],
    converter: Callable[[Tuple[int, ...], bool], Tuple[List[int], int]],
    blank: int,
    beam_size: int = 8,
    label_topk: Optional[int] = None,
    lm_scale: float = 0.5,
    log_prior: Optional[torch.Tensor] = None,
    prior_scale: float = 0.0,
    length_reward: float = 0.0,
    delay: Optional[int] = DEFAULT_DELAY,
    delayed_beam_size: Optional[int] = None,
    labels_to_text: Optional[Callable[[Sequence[int]], str]] = None,
    nbest: int = 1,
    stats: Optional[SearchStats] = None,
) -> List[List[dict]]:
    """Time-synchronous CTC prefix beam search with delayed LLM scoring, batched over utterances.

    :param ctc_logprobs: [B, T, V] (or [T, V]) CTC log-probs. :param lengths: [B] frames (None: all T).
    :param llm_scorer: the LLM (None or ``lm_scale=0``: plain CTC prefix search).
    :param converter: ``(labels, final) -> (LLM tokens of consumable words, consumed labels)``, e.g.
        :class:`WordConverter` or :class:`SameUnitsConverter`; tokens must extend as labels extend.
    :param delay: score pending words every ``delay`` frames (1, 5, 10, 20, ...); None: only at the end.
    :param delayed_beam_size: hypotheses kept between LLM calls (default ``beam_size``); each call prunes to
        ``beam_size``, so the LLM judges hypotheses that CTC alone would have pruned since the last call.
    :param label_topk: labels tried per hypothesis and frame (default ``beam_size``).
    Returns per utterance the N-best list (shared N-best entry format), best first.
    """
    if llm_scorer is None or lm_scale == 0.0:
        return ctc_search_without_llm(ctc_logprobs, lengths, blank=blank, beam_size=beam_size, label_topk=label_topk,
                                      log_prior=log_prior, prior_scale=prior_scale, length_reward=length_reward,
                                      labels_to_text=labels_to_text, nbest=nbest, stats=stats)
    if delayed_beam_size is not None and delayed_beam_size < beam_size:
        raise ValueError(f"delayed_beam_size ({delayed_beam_size}) must be >= beam_size ({beam_size})")
    wide = delayed_beam_size is not None and delayed_beam_size > beam_size
    scorer = DelayedLLMScorer(llm_scorer, converter, lm_scale=lm_scale, delay=delay, log_prior=log_prior,
                              prune_to=beam_size if wide else None, prior_scale=prior_scale,
                              length_reward=length_reward)
    return run_ctc_fusion(ctc_logprobs, lengths, llm_scorer, stats, blank=blank,
                          beam_size=delayed_beam_size if wide else beam_size, label_topk=label_topk or beam_size,
                          labels_to_text=labels_to_text, nbest=nbest, prior_scale=prior_scale,
                          length_reward=length_reward, frame_scorers=[scorer])


# --- job ---------------------------------------------------------------------------------------------

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
