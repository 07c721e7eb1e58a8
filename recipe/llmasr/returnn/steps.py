"""Functions a RETURNN (torch backend) config imports: ``get_model``, ``train_step``, ``forward_step`` and the forward
callbacks that write N-best lists, search statistics, CTC log-probs and the CTC label prior.

They read their settings from the RETURNN config: ``model_config`` (dict, see
:func:`llmasr.models.conformer.model_config_to_dict`), ``recog_mode``/``recog_opts`` and the output file names.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

import torch

from llmasr.models.conformer import model_config_from_dict
from llmasr.models.conformer_modules import ConformerAedModel, ConformerEncoder, build_model

NEG_INF = float("-inf")


def _config():
    from returnn.config import get_global_config

    return get_global_config()


def get_model(*, epoch: int = 0, step: int = 0, **_kwargs) -> torch.nn.Module:
    """Builds the AM from the config's ``model_config`` dict."""
    torch.manual_seed(int(_config().int("random_seed", 42)))
    return build_model(model_config_from_dict(_config().typed_value("model_config")))


def audio_from_extern_data(extern_data) -> Tuple[torch.Tensor, torch.Tensor]:
    data = extern_data["data"]
    audio = data.raw_tensor
    if audio.dim() == 3:
        audio = audio.squeeze(-1)
    lengths = data.dims[1].dyn_size_ext.raw_tensor.to(audio.device)
    return audio.float(), lengths.long()


def frames_from_extern_data(extern_data) -> Tuple[torch.Tensor, torch.Tensor]:
    """Stored encoder outputs [B, T, D] and their lengths [B] (datasets of :class:`DumpEncoderFramesJob`)."""
    data = extern_data["data"]
    return data.raw_tensor.float(), data.dims[1].dyn_size_ext.raw_tensor.to(data.raw_tensor.device).long()


def trains_on_frames() -> bool:
    """Whether the config's data are stored encoder outputs (frozen encoder) rather than raw audio."""
    return bool(_config().bool("train_on_encoder_frames", False))


def set_train_step(model: torch.nn.Module, step: int) -> None:
    """Tells every Conformer encoder in ``model`` the global training step (SpecAugment's ``start_step``)."""
    for module in model.modules():
        if isinstance(module, ConformerEncoder):
            module.train_step = step


def train_step(*, model: torch.nn.Module, extern_data, **_kwargs) -> None:
    """Marks the model's losses (summed over the batch, normalised by the number of target labels)."""
    import returnn.frontend as rf

    ctx = rf.get_run_ctx()
    set_train_step(model, int(ctx.step))
    targets = extern_data["classes"]
    target_lengths = targets.dims[1].dyn_size_ext
    labels = targets.raw_tensor.long()
    label_lengths = target_lengths.raw_tensor.to(labels.device).long()
    if trains_on_frames():
        losses = model.compute_losses_from_frames(*frames_from_extern_data(extern_data), labels, label_lengths)
    else:
        losses = model.compute_losses(*audio_from_extern_data(extern_data), labels, label_lengths)
    for name, (loss, scale) in losses.items():
        ctx.mark_as_loss(loss, name, dims=(), scale=scale, custom_inv_norm_factor=target_lengths,
                         use_normalized_loss=True)


# ---------------------------------------------------------------------------------------------------------------
# searches (used inside forward_step; the search code itself lives in llmasr.search)

Hyps = List[List[Tuple[List[int], float, dict]]]  # per utterance: (labels, score, component scores), best first


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int) -> Hyps:
    """Best path per utterance; score = sum of the frame maxima."""
    from llmasr.search.ctc import ctc_greedy_search

    best = log_probs.max(dim=-1).values
    seqs = ctc_greedy_search(log_probs, lengths, blank)
    return [[(seq, float(best[b, : int(lengths[b])].sum()), {"ctc": float(best[b, : int(lengths[b])].sum())})]
            for b, seq in enumerate(seqs)]


def lexicon_scorers(num_labels: int, bos: Optional[int] = None, eos: Optional[int] = None) -> dict:
    """``{"lexicon": (scorer, 1.0)}`` when the config's ``recog_opts`` name a word list, else ``{}``: the search may
    then output only its words (:class:`llmasr.search.lexicon_scorer.LexiconScorer` over the AM's pieces; ``bos``,
    ``eos``: the search's, default the SentencePiece model's)."""
    path = (_config().typed_value("recog_opts") or {}).get("lexicon")
    if not path:
        return {}
    return {"lexicon": (_lexicon_scorer(path, _config().typed_value("spm_model"), num_labels, bos, eos), 1.0)}


@functools.lru_cache(maxsize=4)
def _lexicon_scorer(path: str, spm_model: str, num_labels: int, bos: Optional[int], eos: Optional[int]):
    """One lexicon scorer per forward run (it is stateless apart from its cache of visited nodes), not one per
    batch: the word list is read and the prefix tree built once."""
    from llmasr.search.lexicon_scorer import FALLBACK_END_PENALTY, sentencepiece_lexicon_scorer
    from llmasr.text.lexicon import read_word_list

    return sentencepiece_lexicon_scorer(read_word_list(path), spm_model, num_labels, eos=eos, bos=bos,
                                        end_penalty=FALLBACK_END_PENALTY)


def ctc_beam(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int, *, beam_size: int, label_topk: int,
             nbest: int, scorers: Optional[dict] = None, length_reward: float = 0.0) -> Hyps:
    """CTC prefix beam search with recombination (:func:`llmasr.search.ctc.ctc_beam_search`), optionally with
    ``{"lexicon": (LexiconScorer, 1.0)}`` (:func:`lexicon_scorers`) and a reward per label."""
    from llmasr.search.ctc import ctc_beam_search

    lexicon = (scorers or {}).get("lexicon", (None,))[0]
    out = ctc_beam_search(log_probs.float().cpu(), lengths.cpu(), blank=blank, beam_size=beam_size,
                          label_topk=label_topk, nbest=nbest, scorers=scorers or None, length_reward=length_reward,
                          bos=lexicon.bos if lexicon is not None else None,
                          eos=lexicon.eos if lexicon is not None else None)
    return [[(h["labels"], h["score"], {n: h["scores"][n] for n in ("ctc", "lexicon") if n in h["scores"]})
             for h in hyps] for hyps in out]


def aed_search(model: ConformerAedModel, enc: torch.Tensor, enc_lengths: torch.Tensor, *, beam_size: int,
               max_len_ratio: float = 1.0, length_norm_exponent: float = 1.0, ctc_scale: float = 0.0,
               ctc_log_probs: torch.Tensor = None, nbest: int = 0, extra_scorers: Optional[dict] = None) -> Hyps:
    """AED beam search (score/L^alpha), optionally joint with the aux CTC's prefix scores (decoder weight
    1 - ctc_scale) and further scorers (a lexicon), through :func:`llmasr.search.joint_ctc.joint_label_sync_search`."""
    from llmasr.search.aed_scorer import AedDecoderScorer
    from llmasr.search.joint_ctc import joint_label_sync_search

    max_len = max(1, int(int(enc_lengths.max()) * max_len_ratio))
    scorers = {"am": (AedDecoderScorer(model, enc, enc_lengths), 1.0 - ctc_scale), **(extra_scorers or {})}
    if ctc_scale and ctc_log_probs is None:
        raise ValueError("aed_search with ctc_scale > 0 needs ctc_log_probs")
    lp = ctc_log_probs if ctc_scale else torch.zeros(enc.shape[0], enc.shape[1], model.blank_idx + 1)
    out = joint_label_sync_search(scorers, lp, enc_lengths, ctc_scale=ctc_scale, blank=model.blank_idx,
                                  bos=model.cfg.bos_idx, eos=model.cfg.eos_idx, beam_size=beam_size, max_len=max_len,
                                  length_norm_exponent=length_norm_exponent)
    return [[(h["labels"], h["score"], h["scores"]) for h in hyps[: nbest or beam_size]] for hyps in out]


# ---------------------------------------------------------------------------------------------------------------
# forward


def _pack(results: List[List[Tuple[List[int], float, dict]]], comp_names: List[str]):
    """N-best per utterance -> padded tensors: labels [B, K, L] (-1 padded), scores [B, K, 1 + C] (-inf = none)."""
    k = max(1, max(len(r) for r in results))
    max_len = max([1] + [len(h[0]) for r in results for h in r])
    labels = torch.full((len(results), k, max_len), -1, dtype=torch.int32)
    scores = torch.full((len(results), k, 1 + len(comp_names)), NEG_INF, dtype=torch.float32)
    for b, r in enumerate(results):
        for i, (seq, score, comps) in enumerate(r):
            labels[b, i, : len(seq)] = torch.tensor(seq, dtype=torch.int32)
            scores[b, i, 0] = score
            for j, name in enumerate(comp_names):
                scores[b, i, 1 + j] = float(comps.get(name, 0.0))
    return labels, scores


SCORE_NAMES = {"ctc_greedy": ["ctc"], "ctc_beam": ["ctc"], "aed_beam": ["am", "length"],
               "aed_ctc": ["am", "ctc", "length"]}


def score_names(mode: str) -> List[str]:
    """The component scores that the searches of ``mode`` write per hypothesis; "lexicon" (0, or the end penalty of
    a hypothesis that could not finish its last word) where the config's ``recog_opts`` name a word list."""
    lexicon = bool((_config().typed_value("recog_opts") or {}).get("lexicon"))
    return SCORE_NAMES[mode] + (["lexicon"] if lexicon and mode in ("ctc_beam", "aed_beam", "aed_ctc") else [])


def forward_step(*, model: torch.nn.Module, extern_data, **_kwargs) -> None:
    """Runs the search (or prior / log-prob dump) given by the config's ``recog_mode`` and marks its outputs."""
    import returnn.frontend as rf

    config = _config()
    mode = config.typed_value("recog_mode")
    opts = config.typed_value("recog_opts") or {}
    audio, audio_lengths = audio_from_extern_data(extern_data)
    ctx = rf.get_run_ctx()
    ctx.mark_as_output(audio_lengths.to(torch.int32), "audio_samples")
    start = time.perf_counter()
    if mode == "encoder_frames":
        frames, lengths = model.encoder(audio, audio_lengths)
        targets = extern_data["classes"]
        ctx.mark_as_output(frames[-1], "frames")
        ctx.mark_as_output(lengths.to(torch.int32), "num_frames")
        ctx.mark_as_output(targets.raw_tensor.to(torch.int32), "classes")
        ctx.mark_as_output(targets.dims[1].dyn_size_ext.raw_tensor.to(torch.int32), "num_labels")
        return
    if mode in ("ctc_prior", "ctc_logprobs", "ctc_greedy", "ctc_beam"):
        log_probs, lengths = model.ctc_log_probs(audio, audio_lengths)
        blank = model.blank_idx
        if mode == "ctc_prior":
            mask = (torch.arange(log_probs.shape[1])[None, :] < lengths[:, None]).float()
            ctx.mark_as_output((log_probs.exp() * mask[..., None]).sum(1), "prob_sum")
            ctx.mark_as_output(lengths.to(torch.int32), "num_frames")
            return
        if mode == "ctc_logprobs":
            ctx.mark_as_output(log_probs, "log_probs")
            ctx.mark_as_output(lengths.to(torch.int32), "num_frames")
            return
        if mode == "ctc_greedy":
            res = ctc_greedy(log_probs, lengths, blank)
        else:
            res = ctc_beam(log_probs, lengths, blank, beam_size=int(opts.get("beam_size", 8)),
                           label_topk=int(opts.get("label_topk", 8)), nbest=int(opts.get("nbest", 8)),
                           scorers=lexicon_scorers(log_probs.shape[-1]),
                           length_reward=float(opts.get("length_reward", 0.0)))
    elif mode in ("aed_beam", "aed_ctc"):
        if not isinstance(model, ConformerAedModel):
            raise ValueError(f"recog_mode {mode!r} needs an AED model, got {type(model).__name__}")
        enc, lengths, ctc = model.encode(audio, audio_lengths, with_ctc=(mode == "aed_ctc"))
        ctc_lp = ctc[max(ctc)].log_softmax(-1) if mode == "aed_ctc" else None
        res = aed_search(model, enc, lengths, beam_size=int(opts.get("beam_size", 4)),
                         max_len_ratio=float(opts.get("max_len_ratio", 1.0)),
                         length_norm_exponent=float(opts.get("length_norm_exponent", 1.0)),
                         ctc_scale=float(opts.get("ctc_scale", 0.3)) if mode == "aed_ctc" else 0.0,
                         ctc_log_probs=ctc_lp, nbest=int(opts.get("nbest", 0)),
                         extra_scorers=lexicon_scorers(model.cfg.vocab_size, model.cfg.bos_idx, model.cfg.eos_idx))
    else:
        raise ValueError(f"RETURNN config: unknown recog_mode {mode!r} (expected ctc_greedy, ctc_beam, aed_beam, "
                         f"aed_ctc, ctc_prior, ctc_logprobs, encoder_frames)")
    labels, scores = _pack(res, score_names(mode))
    ctx.mark_as_output(labels, "hyps")
    ctx.mark_as_output(scores, "scores")
    ctx.mark_as_output(torch.full((audio.shape[0],), time.perf_counter() - start, dtype=torch.float32), "time")


def write_nbest_file(nbest: Dict[str, List[dict]], path: str) -> None:
    """Writes the shared gzipped-JSON N-best format."""
    from llmasr.search.nbest import write_nbest

    write_nbest(nbest, path)


class SearchCallback:
    """Collects the N-best lists of the forward steps; writes the N-best file and the search statistics."""

    def __init__(self):
        self.nbest: Dict[str, List[dict]] = {}
        self.audio_samples = 0
        self.sp = None

    def init(self, *, model):
        import sentencepiece as spm

        config = _config()
        self.mode = config.typed_value("recog_mode")
        self.names = score_names(self.mode)
        self.sp = spm.SentencePieceProcessor(model_file=config.typed_value("spm_model"))
        self.sample_rate = int(config.typed_value("sample_rate") or 16000)
        self.start = time.perf_counter()

    def process_seq(self, *, seq_tag: str, outputs):
        self.audio_samples += int(outputs["audio_samples"].raw_tensor)
        labels = outputs["hyps"].raw_tensor
        scores = outputs["scores"].raw_tensor
        hyps = []
        for seq, sc in zip(labels, scores):
            if not float(sc[0]) > NEG_INF:
                continue
            ids = [int(x) for x in seq if x >= 0]
            comps = {n: float(v) for n, v in zip(self.names, sc[1:])}
            if "length" in comps:
                comps["length"] = int(comps["length"])
            else:
                comps["length"] = len(ids)
            hyps.append({"text": self.sp.decode(ids), "labels": ids, "scores": comps, "score": float(sc[0])})
        self.nbest[seq_tag] = hyps

    def finish(self):
        config = _config()
        write_nbest_file(self.nbest, config.typed_value("nbest_file"))
        stats = {"audio_seconds": self.audio_samples / self.sample_rate,
                 "decode_seconds": time.perf_counter() - self.start, "num_seqs": len(self.nbest)}
        stats_file = config.typed_value("stats_file")
        with open(stats_file + ".tmp", "w") as f:
            json.dump(stats, f, indent=1)
        os.replace(stats_file + ".tmp", stats_file)
        logging.info("search stats: %s", stats)


class PriorCallback:
    """Averages the CTC softmax over all frames; writes the log prior with blank removed and renormalised."""

    def init(self, *, model):
        self.sum = None
        self.frames = 0

    def process_seq(self, *, seq_tag: str, outputs):
        s = torch.as_tensor(outputs["prob_sum"].raw_tensor, dtype=torch.float64)
        self.sum = s if self.sum is None else self.sum + s
        self.frames += int(outputs["num_frames"].raw_tensor)

    def finish(self):
        config = _config()
        write_prior_files(self.sum / max(1, self.frames), config.typed_value("prior_file"),
                          config.typed_value("label_prior_file"))


def write_prior_files(mean_probs: torch.Tensor, prior_file: str, label_prior_file: str) -> None:
    """``prior_file``: log prior over all CTC outputs (labels renormalised without blank, blank entry 0.0);
    ``label_prior_file``: the same without the blank entry. Text, one value per line; blank is the last output."""
    labels = mean_probs[:-1].clamp(min=1e-30)
    log_labels = (labels / labels.sum()).log()
    for path, values in ((prior_file, log_labels.tolist() + [0.0]), (label_prior_file, log_labels.tolist())):
        with open(path + ".tmp", "w") as f:
            f.write("".join(f"{v:.8f}\n" for v in values))
        os.replace(path + ".tmp", path)


class LogProbsCallback:
    """Writes each utterance's [T, V+1] CTC log-probs to a RETURNN HDF as it comes (memory: one utterance)."""

    def init(self, *, model):
        from llmasr.search.ctc_logprobs import CtcLogProbsWriter

        self.writer = CtcLogProbsWriter(_config().typed_value("logprobs_file"))

    def process_seq(self, *, seq_tag: str, outputs):
        n = int(outputs["num_frames"].raw_tensor)
        self.writer.add(seq_tag, torch.as_tensor(outputs["log_probs"].raw_tensor[:n]))

    def finish(self):
        self.writer.close()

    def __getstate__(self):
        # RETURNN pickles its config (which holds this callback) for helper processes; the open HDF stays here
        return {}


class FramesCallback:
    """Writes the encoder outputs and target labels of every utterance to an HDF file (RETURNN's HDFDataset format:
    ``data`` [T, D] float32, ``classes`` [L] int32), the training data of models on a frozen encoder."""

    def init(self, *, model):
        self.writer = None
        self.path = _config().typed_value("frames_file")
        self.num_seqs = 0

    def process_seq(self, *, seq_tag: str, outputs):
        import numpy as np
        from returnn.datasets.hdf import SimpleHDFWriter

        n = int(outputs["num_frames"].raw_tensor)
        frames = np.asarray(outputs["frames"].raw_tensor[:n], dtype=np.float32)
        labels = np.asarray(outputs["classes"].raw_tensor[: int(outputs["num_labels"].raw_tensor)], dtype=np.int32)
        if self.writer is None:
            vocab = int(_config().typed_value("extern_data")["classes"]["dim"])
            self.writer = SimpleHDFWriter(self.path + ".tmp", dim=frames.shape[-1], ndim=2,
                                          extra_type={"classes": (vocab, 1, "int32")})
        self.writer.insert_batch(frames[None], seq_len={0: [n]}, seq_tag=[seq_tag], extra={"classes": labels[None]})
        self.num_seqs += 1

    def finish(self):
        if self.writer is None:
            raise RuntimeError(f"no utterances were forwarded: {self.path} not written")
        self.writer.close()
        os.replace(self.path + ".tmp", self.path)
        logging.info("wrote encoder outputs of %d utterances to %s", self.num_seqs, self.path)


def _make_callback_class():
    from returnn.forward_iface import ForwardCallbackIface

    class ForwardCallback(ForwardCallbackIface):
        """Dispatches to the callback of the config's ``recog_mode`` (chosen at ``init``, when the config is loaded)."""

        def init(self, *, model):
            mode = _config().typed_value("recog_mode")
            callbacks = {"ctc_prior": PriorCallback, "ctc_logprobs": LogProbsCallback, "encoder_frames": FramesCallback}
            self.impl = callbacks.get(mode, SearchCallback)()
            self.impl.init(model=model)

        def process_seq(self, *, seq_tag: str, outputs):
            self.impl.process_seq(seq_tag=seq_tag, outputs=outputs)

        def finish(self):
            self.impl.finish()

    return ForwardCallback


def forward_callback_for_mode():
    """The forward callback object for a RETURNN config (writes the outputs of the config's ``recog_mode``)."""
    return _make_callback_class()()
