"""AED beam search with label-wise LLM fusion (AM and LLM share the SentencePiece units) as a job.

Each new label adds ``lm_scale * log p_LLM(label | prefix)`` (KV-cached LLM state, advanced only for the chosen
labels); hypotheses end at the decoder's EOS, which also adds the LLM's EOS score. Ranking uses score / L^alpha.
"""
from __future__ import annotations

import logging
import time
from typing import List, Optional, Union

from sisyphus import tk

from llmasr.search.corpus_search import CorpusSearchJob

from llmasr.search.rescoring import Scale, resolve_scale


class AedFusionSearchJob(CorpusSearchJob):
    """Label-synchronous AED beam search, alone (``llm=None``) or fused label-wise with an LLM over the AM units.

    Writes the N-best lists (scores "am" = decoder, "lm", "length") and search statistics.
    """

    def __init__(
        self,
        checkpoint: tk.Path,
        model_config: tk.Path,
        corpus: tk.Path,
        spm_model: tk.Path,
        llm: Optional[Union[tk.Path, str]] = None,
        *,
        lm_scale: Scale = 0.3,
        length_reward: Scale = 0.0,
        length_norm_exponent: float = 1.0,
        beam_size: int = 8,
        nbest: int = 8,
        max_len_ratio: float = 1.0,
        utterances_per_batch: int = 8,
        device: str = "cpu",
        cpu: int = 2,
    ):
        """
        :param checkpoint: AED checkpoint; :param model_config: its ``model_config.json``
        :param corpus: corpus manifest (audio paths, durations)
        :param spm_model: the AM's SentencePiece model (hypothesis text)
        :param llm: LLM over the AM units (``FineTuneLLMJob(units=AM)``); None: AED alone
        :param lm_scale: LLM weight (float or Variable, e.g. ``TuneScalesJob.out_lm_scale``)
        :param length_reward: reward per label (float or Variable)
        :param length_norm_exponent: alpha of score / L^alpha for ending hypotheses (0: off)
        :param beam_size: hypotheses per utterance; :param nbest: hypotheses written per utterance
        :param max_len_ratio: maximum labels per encoder frame
        :param utterances_per_batch: utterances searched together
        :param device: "cpu" or "cuda"; :param cpu: threads
        """
        self.checkpoint = checkpoint
        self.model_config = model_config
        self.corpus = corpus
        self.spm_model = spm_model
        self.llm = llm
        self.lm_scale = lm_scale
        self.length_reward = length_reward
        self.length_norm_exponent = length_norm_exponent
        self.beam_size = beam_size
        self.nbest = nbest
        self.max_len_ratio = max_len_ratio
        self.utterances_per_batch = utterances_per_batch
        self.device = device
        self._init_search_outputs(cpu=cpu, device=device)

    def run(self):
        import torch

        from llmasr.data.corpus import read_corpus
        from llmasr.models.conformer_modules import ConformerAedModel, load_model_checkpoint
        from llmasr.search.aed_scorer import AedDecoderScorer
        from llmasr.search.beam_search import beam_search
        from llmasr.search.corpus_search import audio_batches, write_search_outputs
        from llmasr.search.llm_scorer import LLMScorer
        from llmasr.search.scorers import LengthRewardScorer
        from llmasr.text.units import AmUnits

        torch.set_num_threads(self.run_threads())
        device = self.run_device()
        lm_scale = resolve_scale(self.lm_scale, "lm_scale") if self.llm is not None else 0.0
        length_reward = resolve_scale(self.length_reward, "length_reward")
        model = load_model_checkpoint(self.checkpoint.get_path(), self.model_config.get_path()).to(device)
        if not isinstance(model, ConformerAedModel):
            raise ValueError(f"{self.model_config.get_path()} is not an AED model config")
        cfg = model.cfg
        units = AmUnits.from_sentencepiece_model(self.spm_model.get_path())
        llm_scorer = None
        if self.llm is not None:
            from llmasr.models.llm import load_llm, load_llm_tokenizer

            loc = self.llm.get_path() if hasattr(self.llm, "get_path") else str(self.llm)
            tok = load_llm_tokenizer(loc)
            if tok.vocab_size < cfg.vocab_size:
                raise ValueError(f"label-wise fusion needs an LLM over the AM units: {loc} has {tok.vocab_size} "
                                 f"tokens, the AED {cfg.vocab_size} labels")
            l2t = torch.arange(cfg.vocab_size)
            l2t[cfg.eos_idx] = tok.eos_id
            llm_scorer = LLMScorer(load_llm(loc, device=device), bos_id=tok.bos_id, eos_id=tok.eos_id,
                                   label_to_token=l2t)
        results, audio_s, t0 = {}, 0.0, time.perf_counter()
        entries = read_corpus(self.corpus.get_path())
        if not entries:
            raise ValueError(f"{self.corpus.get_path()}: no utterances")
        for batch, audio, lens in audio_batches(entries, self.utterances_per_batch):
            with torch.no_grad():
                enc, enc_lens, _ = model.encode(audio.to(device), lens.to(device))
                scorers = {"decoder": (AedDecoderScorer(model, enc, enc_lens), 1.0)}
                if llm_scorer is not None:
                    scorers["lm"] = (llm_scorer, lm_scale)
                if length_reward:
                    scorers["length_reward"] = (LengthRewardScorer(cfg.vocab_size, eos=cfg.eos_idx), length_reward)
                max_len = max(1, int(self.max_len_ratio * int(enc_lens.max())))
                out = beam_search(scorers, len(batch), self.beam_size, cfg.bos_idx, cfg.eos_idx, max_len,
                                  self.length_norm_exponent, nbest=self.nbest)
            for e, hyps in zip(batch, out):
                results[e.id] = [_to_entry(h, units) for h in hyps]
                audio_s += e.duration
        decode_s = time.perf_counter() - t0
        stats = {"audio_seconds": audio_s, "decode_seconds": decode_s, "utterances": len(results)}
        if llm_scorer is not None:
            stats["llm_forward_calls"] = llm_scorer.num_forward_calls
            stats["llm_forward_tokens"] = llm_scorer.num_forward_tokens
        write_search_outputs(results, stats, self.out_nbest.get_path(), self.out_search_stats.get_path())
        logging.info("searched %d utterances, RTFx %.1f", len(results), audio_s / max(decode_s, 1e-9))


def _to_entry(hyp: dict, units) -> dict:
    """Beam-search hypothesis -> N-best entry of the shared format (decoder score as "am")."""
    scores = dict(hyp["scores"])
    scores["am"] = scores.pop("decoder")
    labels: List[int] = [int(x) for x in hyp["labels"]]
    return {"text": units.ids_to_text([x for x in labels if x < len(units)]), "labels": labels,
            "score": float(hyp["score"]), "scores": scores}
