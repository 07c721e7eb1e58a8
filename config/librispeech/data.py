"""LibriSpeech 960 h: corpora, RETURNN zips, the AM's SentencePiece unigram 10k, the LM text, Open ASR test sets."""
from typing import Dict

from config.names import alias, output
from llmasr.data.librispeech import librispeech_corpora, librispeech_lm_text
from llmasr.data.open_asr import open_asr_test_sets
from llmasr.data.returnn_data import PackOggZipJob
from llmasr.text.extract import ConcatenateTextJob, CorpusToTextJob
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

PREFIX = "librispeech"
TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
DEV_SUBSETS = ("dev-clean", "dev-other")
TEST_SUBSETS = ("test-clean", "test-other")
AM_VOCAB_SIZE = 10_000


def librispeech_data() -> Dict[str, object]:
    """Builds the data part of the graph; returns the paths later stages use."""
    corpora = librispeech_corpora(TRAIN_SUBSETS + DEV_SUBSETS + TEST_SUBSETS)
    train_zips = [PackOggZipJob(corpora[s], name=s).out_ogg_zip for s in TRAIN_SUBSETS]
    eval_zips = {s: PackOggZipJob(corpora[s], name=s).out_ogg_zip for s in DEV_SUBSETS + TEST_SUBSETS}
    train_text = CorpusToTextJob([corpora[s] for s in TRAIN_SUBSETS]).out_text
    spm = TrainSentencePieceJob(train_text, vocab_size=AM_VOCAB_SIZE, model_type=SentencePieceType.UNIGRAM)
    alias(spm, f"{PREFIX}/labels/spm_unigram_10k")
    output(f"{PREFIX}/labels/spm_unigram_10k.vocab", spm.out_vocab)
    lm_text = librispeech_lm_text()
    llm_text = ConcatenateTextJob([lm_text, train_text]).out_text
    open_asr = open_asr_test_sets()
    return {
        "corpora": corpora, "train_zips": train_zips, "eval_zips": eval_zips, "train_text": train_text,
        "spm": spm, "lm_text": lm_text, "llm_text": llm_text, "open_asr": open_asr,
        "open_asr_zips": {n: PackOggZipJob(c, name=n).out_ogg_zip for n, c in open_asr.items()},
    }
