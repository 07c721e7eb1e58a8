"""Word error rate of search outputs against a corpus manifest (jiwer after scoring normalisation)."""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Tuple

from sisyphus import Task, tk

from llmasr.resources import ResourceJob
from llmasr.scoring.hallucination import hallucination_stats


def _normalizer():
    try:
        from llmasr.text.normalize import normalize_for_scoring
        return normalize_for_scoring
    except ImportError:  # pragma: no cover
        from whisper_normalizer.english import EnglishTextNormalizer
        return EnglishTextNormalizer()


def compute_wer(refs: Dict[str, str], hyps: Dict[str, str], *, normalize: bool = True
                ) -> Tuple[dict, List[dict]]:
    """Returns totals ``{"wer", "sub", "del", "ins", "hits", "ref_words", "num_seqs"}`` (wer in percent) and per
    utterance ``{"id", "ref", "hyp", "sub", "del", "ins", "alignment": [[op, ref_word, hyp_word], ...]}``.

    Every reference needs a hypothesis (missing ones count as empty and are logged); extra hypotheses raise.
    """
    import jiwer

    extra = set(hyps) - set(refs)
    if extra:
        raise ValueError(f"hypotheses for sequences not in the corpus: {sorted(extra)[:5]}")
    norm = _normalizer() if normalize else (lambda s: s)
    tot = {"sub": 0, "del": 0, "ins": 0, "hits": 0, "ref_words": 0}
    per = []
    for seq_id, ref in refs.items():
        if seq_id not in hyps:
            logging.warning("no hypothesis for %s, scored as empty", seq_id)
        r = " ".join(norm(ref).split())
        h = " ".join(norm(hyps.get(seq_id, "")).split())
        rw, hw = r.split(), h.split()
        ali: List[List[Optional[str]]] = []
        if not rw:
            s, d, i, c = 0, 0, len(hw), 0
            ali = [["ins", None, w] for w in hw]
        elif not hw:
            s, d, i, c = 0, len(rw), 0, 0
            ali = [["del", w, None] for w in rw]
        else:
            out = jiwer.process_words(r, h)
            s, d, i, c = out.substitutions, out.deletions, out.insertions, out.hits
            for ch in out.alignments[0]:
                rs, hs = rw[ch.ref_start_idx:ch.ref_end_idx], hw[ch.hyp_start_idx:ch.hyp_end_idx]
                n = max(len(rs), len(hs))
                op = {"equal": "cor", "substitute": "sub", "delete": "del", "insert": "ins"}[ch.type]
                for k in range(n):
                    ali.append([op, rs[k] if k < len(rs) else None, hs[k] if k < len(hs) else None])
        tot["sub"] += s
        tot["del"] += d
        tot["ins"] += i
        tot["hits"] += c
        tot["ref_words"] += len(rw)
        per.append({"id": seq_id, "ref": r, "hyp": h, "sub": s, "del": d, "ins": i, "alignment": ali})
    errors = tot["sub"] + tot["del"] + tot["ins"]
    tot["wer"] = 100.0 * errors / max(tot["ref_words"], 1)
    tot["num_seqs"] = len(refs)
    return tot, per


def read_hypotheses(path: str) -> Dict[str, str]:
    """Best hypothesis per sequence from an N-best file (.json/.json.gz) or a ``seq_id<TAB>text`` file."""
    from llmasr.search.nbest import best_hypotheses, read_nbest

    if path.endswith(".json") or path.endswith(".json.gz"):
        return best_hypotheses(read_nbest(path))
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            seq_id, _, text = line.rstrip("\n").partition("\t")
            out[seq_id] = text
    return out


class ScoreWERJob(ResourceJob):
    """Scores an N-best (or hypothesis) file against a corpus manifest; writes WER, counts, alignments."""

    def __init__(self, hyps: tk.Path, corpus: tk.Path, *, search_stats: Optional[tk.Path] = None,
                 normalize: bool = True):
        """
        :param hyps: N-best file (gzipped JSON) or ``seq_id<TAB>text`` file
        :param corpus: corpus manifest (references)
        :param search_stats: optional search stats JSON for RTFx (audio_seconds / decode_seconds)
        :param normalize: apply ``normalize_for_scoring`` to references and hypotheses
        """
        self.hyps = hyps
        self.corpus = corpus
        self.search_stats = search_stats
        self.normalize = normalize
        self.out_report = self.output_path("report.json")
        self.out_alignments = self.output_path("alignments.jsonl")
        self.out_wer = self.output_var("wer")
        self.out_rtfx = self.output_var("rtfx")
        # hallucination figures (see llmasr.scoring.hallucination), in %
        self.out_insertion_rate = self.output_var("insertion_rate")
        self.out_long_share = self.output_var("long_share")
        self.out_loop_share = self.output_var("loop_share")
        self.out_empty_share = self.output_var("empty_share")

    def tasks(self):
        yield Task("run", mini_task=True)

    def run(self):
        from llmasr.data.corpus import read_corpus

        refs = {e.id: e.text for e in read_corpus(self.corpus.get_path())}
        hyps = read_hypotheses(self.hyps.get_path())
        tot, per = compute_wer(refs, hyps, normalize=self.normalize)
        rtfx = None
        if self.search_stats is not None:
            with open(self.search_stats.get_path()) as f:
                st = json.load(f)
            rtfx = st["audio_seconds"] / max(st["decode_seconds"], 1e-9)
        tot["rtfx"] = rtfx
        hall = hallucination_stats(per)
        tot.update(hall)
        ali = self.out_alignments.get_path()
        with open(ali + ".tmp", "w", encoding="utf-8") as f:
            for p in per:
                f.write(json.dumps(p, ensure_ascii=False) + "\n")
        os.replace(ali + ".tmp", ali)
        rep = self.out_report.get_path()
        with open(rep + ".tmp", "w") as f:
            json.dump(tot, f, indent=2)
        os.replace(rep + ".tmp", rep)
        self.out_wer.set(tot["wer"])
        self.out_rtfx.set(rtfx)
        for key, value in hall.items():
            getattr(self, f"out_{key}").set(value)
