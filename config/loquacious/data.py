"""Loquacious (speechbrain/LoquaciousSet): training subset, dev/test split by source, RETURNN zips, unigram 10k
units, the LLM fine-tuning text (training transcriptions), and the Open ASR Leaderboard test sets."""
from typing import Dict, Sequence

from config.names import alias, output
from llmasr.data.loquacious import LoquaciousSubset, loquacious_corpora
from llmasr.data.open_asr import open_asr_test_sets
from llmasr.data.returnn_data import PackOggZipJob
from llmasr.text.extract import CorpusToTextJob
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

PREFIX = "loquacious"
TRAIN_SUBSET = LoquaciousSubset.LARGE
EVAL_SOURCES: Sequence[str] = ("commonvoice", "librispeech", "voxpopuli", "yodas")
AM_VOCAB_SIZE = 10_000


def loquacious_data(train_subset: LoquaciousSubset = TRAIN_SUBSET, prefix: str = PREFIX) -> Dict[str, object]:
    """Builds the data part of the graph (aliases and outputs under ``prefix``); returns the paths later stages
    use."""
    corpora = loquacious_corpora(train_subset, eval_sources=EVAL_SOURCES)
    train_zip = PackOggZipJob(corpora["train"], name="train").out_ogg_zip
    eval_names = [n for n in corpora if n != "train"]
    eval_zips = {n: PackOggZipJob(corpora[n], name=n.replace("/", "_")).out_ogg_zip for n in eval_names}
    train_text = CorpusToTextJob([corpora["train"]]).out_text
    spm = TrainSentencePieceJob(train_text, vocab_size=AM_VOCAB_SIZE, model_type=SentencePieceType.UNIGRAM)
    alias(spm, f"{prefix}/labels/spm_unigram_10k")
    output(f"{prefix}/labels/spm_unigram_10k.vocab", spm.out_vocab)
    open_asr = open_asr_test_sets()
    return {"corpora": corpora, "train_zips": [train_zip], "eval_zips": eval_zips, "train_text": train_text,
            "llm_text": train_text, "spm": spm, "open_asr": open_asr,
            "open_asr_zips": {n: PackOggZipJob(c, name=n).out_ogg_zip for n, c in open_asr.items()}}
