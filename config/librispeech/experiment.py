"""Paper-scale LibriSpeech 960 h experiment: Conformer CTC and AED (16 x 1024, 6-layer decoder, unigram 10k),
Qwen2-0.5B/1.5B for shallow fusion (as they are and fine-tuned on the LM text) and as speech-LLM decoders;
evaluated on LibriSpeech dev/test and the Open ASR Leaderboard sets. Needs GPU nodes (see README, cluster)."""
from config.experiment import (SPEECH_LLM_PROMPT, SPEECH_LLM_VARIANTS, ExperimentData, Results, TuningGrid,
                               acoustic_models, shallow_fusion, speech_llms)
from config.librispeech.data import AM_VOCAB_SIZE, DEV_SUBSETS, PREFIX, TEST_SUBSETS, librispeech_data
from config.librispeech.llm import QWEN2, librispeech_llms
from llmasr.models.conformer import paper_aed_config, paper_ctc_config
from llmasr.models.speech_llm import LLMTraining, SpeechInterface
from llmasr.returnn.config import TrainingOptions

# 960 h split into 20 sub-epochs; 100 sub-epochs = 5 passes over the data; peak LR 1e-3 (one-cycle)
AM_TRAINING = TrainingOptions(num_epochs=100, partition_epoch=20, batch_size_seconds=1200, max_seqs=200,
                              learning_rate=1e-3, num_workers=2)
SPEECH_LLM_TRAINING = TrainingOptions(num_epochs=40, partition_epoch=20, batch_size_seconds=600, max_seqs=100,
                                      learning_rate=1e-4, num_workers=2)
GPU = dict(cpu=4, gpu=1, mem=32)
SPEECH_LLM_BASE = dict(interface=SpeechInterface.PREFIX, llm_training=LLMTraining.LORA, adapter_k=2, lora_rank=16)


def py():
    d = librispeech_data()
    llms = librispeech_llms(d, prefix=PREFIX)
    eval_corpora = {s: d["corpora"][s] for s in DEV_SUBSETS + TEST_SUBSETS}
    eval_corpora.update(d["open_asr"])
    eval_zips = dict(d["eval_zips"])
    eval_zips.update(d["open_asr_zips"])
    data = ExperimentData(corpora=eval_corpora, zips=eval_zips, train_zips=d["train_zips"],
                          dev_zips=[d["eval_zips"][s] for s in DEV_SUBSETS], spm_model=d["spm"].out_model,
                          tune_set="dev-other", eval_sets=tuple(eval_corpora), prior_zips=d["train_zips"][0])
    results = Results(PREFIX, hallucination_set="test-other")
    am = acoustic_models(PREFIX, data, results, ctc_config=paper_ctc_config(AM_VOCAB_SIZE),
                         aed_config=paper_aed_config(AM_VOCAB_SIZE), options=AM_TRAINING, aed_average=4,
                         device="cuda", search_cpu=4, **GPU)
    for size in QWEN2:  # "qwen2-0.5b", "qwen2-1.5b"
        shallow_fusion(PREFIX, data, am, llms, results, rescoring_llms=(size, f"{size}-ft"),
                       own_units_llm=f"{size}-ft", am_units_llm=f"{size}-ft-am-units", grid=TuningGrid(),
                       device="cuda", tag=size)
        speech_llms(PREFIX, data, am, QWEN2[size], results, base=SPEECH_LLM_BASE,
                    variants={f"{size} {n}": v for n, v in SPEECH_LLM_VARIANTS.items()},
                    options=SPEECH_LLM_TRAINING, prompt=SPEECH_LLM_PROMPT, device="cuda", **GPU)
    results.report()
