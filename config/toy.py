"""The embedded default experiment: a toy-sized version of the whole comparison, runnable on 2 CPU cores.

Data (espeak-ng speech) -> label units -> AMs (CTC, AED) -> LLM -> shallow fusion and speech LLMs -> report.
Sizes are module-level parameters so that a researcher can scale the same graph up.
"""
from sisyphus import tk

from llmasr.data.returnn_data import PackOggZipJob
from llmasr.data.toy import MakeToyCorpusJob
from llmasr.text.extract import CorpusToTextJob
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob

PREFIX = "toy"
NUM_TRAIN, NUM_DEV, NUM_TEST = 3000, 200, 200
AM_VOCAB_SIZE = 256  # SentencePiece unigram units of the AMs (the paper's AMs use 10k)


def py():
    # 1. data
    corpus = MakeToyCorpusJob(num_train=NUM_TRAIN, num_dev=NUM_DEV, num_test=NUM_TEST)
    corpus.add_alias(f"{PREFIX}/data/corpus")
    zips = {split: PackOggZipJob(path, name=split).out_ogg_zip for split, path in corpus.out_corpora.items()}
    for split, z in zips.items():
        tk.register_output(f"{PREFIX}/data/{split}.zip", z)

    # 2. label units
    train_text = CorpusToTextJob([corpus.out_corpora["train"]]).out_text
    spm = TrainSentencePieceJob(train_text, vocab_size=AM_VOCAB_SIZE, model_type=SentencePieceType.UNIGRAM,
                                hard_vocab_limit=False)
    spm.add_alias(f"{PREFIX}/labels/spm_unigram_{AM_VOCAB_SIZE}")
    tk.register_output(f"{PREFIX}/labels/spm.vocab", spm.out_vocab)
