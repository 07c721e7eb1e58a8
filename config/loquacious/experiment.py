"""Paper-scale Loquacious experiment: the same comparison as config/librispeech/experiment.py on the Loquacious
training set, evaluated per source on its dev/test sets and on the Open ASR Leaderboard sets."""
from config.experiment import ExperimentData, Results, TuningGrid, acoustic_models, hub_llms, shallow_fusion, speech_llms
from config.experiment import SPEECH_LLM_PROMPT, SPEECH_LLM_VARIANTS
from config.librispeech.experiment import GPU, SPEECH_LLM_BASE
from config.librispeech.llm import GPU_TRAIN, QWEN2
from config.loquacious.data import AM_VOCAB_SIZE, PREFIX, loquacious_data
from llmasr.models.conformer import paper_aed_config, paper_ctc_config
from llmasr.returnn.config import TrainingOptions

# the large subset (~25k h) in 100 sub-epochs; 200 sub-epochs = 2 passes
AM_TRAINING = TrainingOptions(num_epochs=200, partition_epoch=100, batch_size_seconds=1200, max_seqs=200,
                              learning_rate=1e-3, num_workers=2)
SPEECH_LLM_TRAINING = TrainingOptions(num_epochs=50, partition_epoch=100, batch_size_seconds=600, max_seqs=100,
                                      learning_rate=1e-4, num_workers=2)


def py():
    d = loquacious_data()
    corpora = d["corpora"]
    llms = hub_llms(PREFIX, QWEN2, d["llm_text"], d["spm"].out_model, {s: corpora[s] for s in ("dev", "test")},
                    train_config=GPU_TRAIN)
    eval_corpora = {n: c for n, c in corpora.items() if n != "train"}
    eval_corpora.update(d["open_asr"])
    eval_zips = dict(d["eval_zips"])
    eval_zips.update(d["open_asr_zips"])
    data = ExperimentData(corpora=eval_corpora, zips=eval_zips, train_zips=d["train_zips"],
                          dev_zips=[d["eval_zips"]["dev"]], spm_model=d["spm"].out_model, tune_set="dev",
                          eval_sets=tuple(eval_corpora))
    results = Results(PREFIX, hallucination_set="test")
    am = acoustic_models(PREFIX, data, results, ctc_config=paper_ctc_config(AM_VOCAB_SIZE),
                         aed_config=paper_aed_config(AM_VOCAB_SIZE), options=AM_TRAINING, aed_average=4,
                         device="cuda", search_cpu=4, **GPU)
    for size in QWEN2:
        shallow_fusion(PREFIX, data, am, llms, results, rescoring_llms=(size, f"{size}-ft"),
                       own_units_llm=f"{size}-ft", am_units_llm=f"{size}-ft-am-units", grid=TuningGrid(),
                       device="cuda", tag=size)
        speech_llms(PREFIX, data, am, QWEN2[size], results, base=SPEECH_LLM_BASE,
                    variants={f"{size} {n}": v for n, v in SPEECH_LLM_VARIANTS.items()},
                    options=SPEECH_LLM_TRAINING, prompt=SPEECH_LLM_PROMPT, device="cuda", **GPU)
    results.report()
