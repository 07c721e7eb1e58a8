"""Recognition with a trained speech LLM: label-synchronous beam search over the LLM (KV cache, EOS, score/L^alpha),
alone or jointly with a CTC model (label-synchronous with CTC prefix scores, or time-synchronous over the CTC frames).
"""
from __future__ import annotations

import enum
import json
import logging
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from sisyphus import tk

from llmasr.search.corpus_search import CorpusSearchJob
from llmasr.search.options import LabelSyncBeam, TimeSyncOptions, hashed_arguments

if TYPE_CHECKING:  # read where the search runs
    from llmasr.search.ctc_logprobs import CtcLogProbsFile


class SpeechLLMSearchMode(enum.Enum):
    """How hypotheses are searched."""

    BEAM = "beam"  # the speech LLM alone
    JOINT_LABEL_SYNC = "joint_label_sync"  # + ctc_scale * CTC prefix score, label by label
    JOINT_TIME_SYNC = "joint_time_sync"  # CTC prefix beam search over frames + model_scale * speech LLM per new label


def check_ctc_scale(ctc_scale: float, mode: SpeechLLMSearchMode) -> None:
    """The joint modes' CTC weight lambda is in [0, 1); the time-synchronous search, which follows the CTC frames,
    needs lambda > 0."""
    low_ok = ctc_scale > 0.0 if mode == SpeechLLMSearchMode.JOINT_TIME_SYNC else ctc_scale >= 0.0
    if not (low_ok and ctc_scale < 1.0):
        interval = "(0, 1)" if mode == SpeechLLMSearchMode.JOINT_TIME_SYNC else "[0, 1)"
        raise ValueError(f"ctc_scale of {mode.name} must be in {interval}, got {ctc_scale}")


class SpeechLLMRecogJob(CorpusSearchJob):
    """Recognises a corpus with a speech LLM checkpoint; writes N-best lists and search statistics.

    Joint recognition needs a CTC model over the speech LLM's labels, i.e. a speech LLM with the AM's units
    (``SpeechLLMSetup.am_spm_model``) and the CTC log-probs of that AM (``DumpCtcLogProbsJob``) or of the speech
    LLM's own aux CTC head.
    """

    __sis_hash_exclude__ = {"length_norm_counts_eos": False, "score_new_labels_only": True, "batch_hyps": True}

    def __init__(
        self,
        checkpoint: tk.Path,
        setup: tk.Path,
        corpus: tk.Path,
        *,
        mode: SpeechLLMSearchMode = SpeechLLMSearchMode.BEAM,
        ctc_logprobs: Optional[tk.Path] = None,
        ctc_scale: Union[float, tk.Variable] = 0.3,
        beam: LabelSyncBeam = LabelSyncBeam(),
        time_sync: TimeSyncOptions = TimeSyncOptions(),
        utterances_per_batch: int = 8,
        device: str = "cpu",
        cpu: int = 2,
    ):
        """
        :param checkpoint: speech LLM checkpoint (``SpeechLLMTrainingJob.out_checkpoints[e]``)
        :param setup: the setup it was trained with (``SpeechLLMTrainingJob.out_setup``)
        :param corpus: corpus manifest to recognise
        :param mode: BEAM, JOINT_LABEL_SYNC or JOINT_TIME_SYNC
        :param ctc_logprobs: per-utterance CTC log-probs (blank last), for the joint modes; None: the speech LLM's
            own aux CTC output (``SpeechLLMConfig.ctc_vocab_size``)
        :param ctc_scale: the joint modes' interpolation weight lambda: a hypothesis scores
            ``(1 - lambda) * log p_LLM + lambda * log p_CTC`` in both (the time-synchronous search ranks by the same
            score divided by lambda, so it needs lambda > 0); a tk.Variable (a scale tuned on dev,
            :class:`llmasr.tuning.scales.SelectBestScaleJob`) is read when the job runs
        :param beam: beam size, hypotheses written, length normalisation (label-sync) and maximum output length
        :param time_sync: the time-synchronous search's optimisations (JOINT_TIME_SYNC only)
        :param utterances_per_batch: utterances searched together
        """
        if not isinstance(mode, SpeechLLMSearchMode):
            raise ValueError(f"mode must be a SpeechLLMSearchMode, got {mode!r}")
        if mode != SpeechLLMSearchMode.BEAM and not isinstance(ctc_scale, tk.Variable):
            check_ctc_scale(float(ctc_scale), mode)
        self.checkpoint = checkpoint
        self.setup = setup
        self.corpus = corpus
        self.mode = mode
        self.ctc_logprobs = ctc_logprobs
        self.ctc_scale = ctc_scale
        self.beam = beam
        self.time_sync = time_sync
        self.utterances_per_batch = utterances_per_batch
        self.device = device
        self._init_search_outputs(cpu=cpu, device=device)

    @classmethod
    def hash(cls, parsed_args):
        """The option groups are hashed as the separate arguments they stand for (job ids as before the grouping)."""
        return super().hash(hashed_arguments(parsed_args))

    def run(self):
        import torch

        from llmasr.data.corpus import read_corpus
        from llmasr.models.speech_llm_modules import load_speech_llm
        from llmasr.search.beam_search import beam_search
        from llmasr.search.corpus_search import audio_batches, write_search_outputs
        from llmasr.search.joint_ctc import joint_label_sync_search, joint_time_sync_search
        from llmasr.search.speech_llm_scorer import SpeechLLMScorer

        torch.set_num_threads(self.run_threads())
        device = self.run_device()
        with open(self.setup.get_path()) as f:
            setup = json.load(f)
        if self.mode != SpeechLLMSearchMode.BEAM and not setup.get("am_spm_model"):
            raise ValueError(f"mode {self.mode.name} needs a speech LLM over the CTC model's units, but "
                             f"{self.setup.get_path()} has no am_spm_model (the LLM keeps its own tokenizer)")
        model, tokenizer = load_speech_llm(self.checkpoint.get_path(), setup, device=device)
        bos, eos = model.cfg.bos_id, model.cfg.eos_id
        entries = read_corpus(self.corpus.get_path())
        if not entries:
            raise ValueError(f"{self.corpus.get_path()}: no utterances")
        own_ctc = self.mode != SpeechLLMSearchMode.BEAM and self.ctc_logprobs is None
        ctc = self._ctc_file(model, entries)
        scorer = SpeechLLMScorer(model)
        ctc_scale = float(self.ctc_scale.get() if isinstance(self.ctc_scale, tk.Variable) else self.ctc_scale)
        if self.mode != SpeechLLMSearchMode.BEAM:
            check_ctc_scale(ctc_scale, self.mode)
        beam, opts = self.beam, self.time_sync
        results: Dict[str, List[dict]] = {}
        audio_s, t0 = 0.0, time.perf_counter()
        for batch, audio, lens in audio_batches(entries, self.utterances_per_batch):
            scorer.set_audio(audio.to(device), lens.to(device))
            max_len = max(1, int(beam.max_labels_per_second * max(e.duration for e in batch)))
            if self.mode == SpeechLLMSearchMode.BEAM:
                out = beam_search({"am": (scorer, 1.0)}, len(batch), beam.beam_size, bos, eos, max_len,
                                  beam.length_norm_exponent, nbest=beam.nbest,
                                  length_norm_counts_eos=beam.length_norm_counts_eos)
            else:
                if own_ctc:
                    with torch.no_grad():
                        ctc_lp, ctc_lens = model.ctc_log_probs(audio.to(device), lens.to(device))
                    ctc_lp, ctc_lens = ctc_lp.float().cpu(), ctc_lens.cpu()
                else:
                    lp = [ctc[e.id].float() for e in batch]
                    ctc_lens = torch.tensor([x.shape[0] for x in lp])
                    ctc_lp = torch.zeros(len(lp), int(ctc_lens.max()), lp[0].shape[1])  # padding masked by ctc_lens
                    for i, x in enumerate(lp):
                        ctc_lp[i, : x.shape[0]] = x
                blank = ctc_lp.shape[-1] - 1
                if self.mode == SpeechLLMSearchMode.JOINT_LABEL_SYNC:
                    out = joint_label_sync_search(
                        {"am": (scorer, 1.0 - ctc_scale)}, ctc_lp, ctc_lens, ctc_scale=ctc_scale,
                        blank=blank, bos=bos, eos=eos, beam_size=beam.beam_size, max_len=max_len,
                        length_norm_exponent=beam.length_norm_exponent,
                        length_norm_counts_eos=beam.length_norm_counts_eos)
                else:  # ranks by log p_CTC + (1 - lambda) / lambda * log p_LLM, reported as lambda times that
                    out = joint_time_sync_search(
                        scorer, ctc_lp, ctc_lens, model_scale=(1.0 - ctc_scale) / ctc_scale, blank=blank, bos=bos,
                        eos=eos, beam_size=beam.beam_size, label_topk=opts.label_topk,
                        soft_collapse_threshold=opts.soft_collapse_threshold, nbest=beam.nbest,
                        score_new_labels_only=opts.score_new_labels_only, batch_hyps=opts.batch_hyps)
                    out = [[dict(h, score=ctc_scale * h["score"]) for h in hyps] for hyps in out]
            for e, hyps in zip(batch, out):
                results[e.id] = [_entry(h, tokenizer) for h in hyps[: beam.nbest]]
                audio_s += e.duration
        decode_s = time.perf_counter() - t0
        write_search_outputs(results, {"audio_seconds": audio_s, "decode_seconds": decode_s,
                                       "utterances": len(results), "mode": self.mode.value},
                             self.out_nbest.get_path(), self.out_search_stats.get_path())
        logging.info("recognised %d utterances, RTFx %.1f", len(results), audio_s / max(decode_s, 1e-9))


    def _ctc_file(self, model, entries: List) -> Optional["CtcLogProbsFile"]:
        """The CTC log-probs of the joint modes, read one batch at a time (the whole set does not fit in memory at
        paper scale); None without a file (BEAM, or the speech LLM's own aux CTC output, which it must have)."""
        from llmasr.search.ctc_logprobs import CtcLogProbsFile

        if self.mode == SpeechLLMSearchMode.BEAM:
            return None
        if self.ctc_logprobs is None:
            if model.ctc_head is None and model.ctc_heads is None:
                raise ValueError(f"mode {self.mode.name} without ctc_logprobs needs a speech LLM with an aux CTC "
                                 f"output, but {self.setup.get_path()} has ctc_vocab_size 0")
            return None
        ctc = CtcLogProbsFile(self.ctc_logprobs.get_path())
        missing = [e.id for e in entries if e.id not in ctc]
        if missing:
            raise ValueError(f"{self.ctc_logprobs.get_path()} has no CTC outputs for {len(missing)} utterances "
                             f"of {self.corpus.get_path()}, e.g. {missing[:3]}")
        return ctc


def _entry(hyp: dict, tokenizer) -> dict:
    """Search hypothesis -> N-best entry (speech LLM score as "am")."""
    labels = [int(x) for x in hyp["labels"]]
    return {"text": tokenizer.decode(labels).strip(), "labels": labels, "score": float(hyp["score"]),
            "scores": {k: float(v) for k, v in hyp["scores"].items()}}
