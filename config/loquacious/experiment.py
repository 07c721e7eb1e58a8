"""Paper-scale Loquacious experiment: the comparison of config/librispeech/experiment.py (the paper's AMs, fusion with
Qwen2 and the 32-layer Transformer LM, the paper's speech LLMs alone and with CTC) on each training subset of the
paper, small (250 h), medium (2.5 kh) and large (25 kh), evaluated per source on the Loquacious dev/test sets and on
the 8 Open ASR Leaderboard sets. Results and tables per subset under ``loquacious/<subset>/``."""
from typing import Dict

from config.experiment import ExperimentData, acoustic_models, hub_llms
from config.librispeech.llm import GPU_TRAIN
from config.loquacious.data import AM_VOCAB_SIZE, PREFIX, loquacious_data
from config.paper import (GPU, PRIOR_UTTERANCES, QWEN2, TRAFO_LM_NAME, SpeechLLMRecipe, comparison_tables, hub_models,
                          paper_fusion, paper_results, paper_speech_llm, speech_llm_encoder, transformer_lm)
from llmasr.data.loquacious import LoquaciousSubset
from llmasr.models.conformer import paper_aed_config, paper_ctc_config
from llmasr.returnn.config import TrainingOptions

# per subset: (AM sub-epochs, partition): small 50 passes, medium 10, large 2 (the large subset in 100 sub-epochs);
# the speech LLMs train on a quarter of the AM's passes (their encoder and LLM start pre-trained); bf16 autocast
AM_TRAINING: Dict[LoquaciousSubset, TrainingOptions] = {
    subset: TrainingOptions(num_epochs=epochs, partition_epoch=partition, batch_size_seconds=1200, max_seqs=200,
                            learning_rate=1e-3, num_workers=2, bf16=True)
    for subset, (epochs, partition) in {LoquaciousSubset.SMALL: (100, 2), LoquaciousSubset.MEDIUM: (200, 20),
                                        LoquaciousSubset.LARGE: (200, 100)}.items()}
SPEECH_LLM_TRAINING: Dict[LoquaciousSubset, TrainingOptions] = {
    subset: TrainingOptions(num_epochs=opts.num_epochs // 4, partition_epoch=opts.partition_epoch,
                            batch_size_seconds=600, max_seqs=100, learning_rate=1e-4, num_workers=2, bf16=True)
    for subset, opts in AM_TRAINING.items()}
SUBSETS = (LoquaciousSubset.SMALL, LoquaciousSubset.MEDIUM, LoquaciousSubset.LARGE)


def loquacious_subset(subset: LoquaciousSubset) -> None:
    """The whole comparison trained on one Loquacious subset, results under ``loquacious/<subset>``."""
    prefix = f"{PREFIX}/{subset.value}"
    d = loquacious_data(subset, prefix=prefix)
    corpora = d["corpora"]
    qwen2 = hub_models(QWEN2)
    llms = hub_llms(prefix, qwen2, d["llm_text"], d["spm"].out_model, {s: corpora[s] for s in ("dev", "test")},
                    train_config=GPU_TRAIN, device="cuda")
    llms[TRAFO_LM_NAME] = llms[f"{TRAFO_LM_NAME}-units"] = transformer_lm(prefix, d["llm_text"], d["spm"].out_model)
    eval_corpora = {n: c for n, c in corpora.items() if n != "train"}
    eval_corpora.update(d["open_asr"])
    eval_zips = dict(d["eval_zips"])
    eval_zips.update(d["open_asr_zips"])
    data = ExperimentData(corpora=eval_corpora, zips=eval_zips, train_zips=d["train_zips"],
                          dev_zips=[d["eval_zips"]["dev"]], spm_model=d["spm"].out_model, tune_set="dev",
                          eval_sets=tuple(eval_corpora), prior_utterances=PRIOR_UTTERANCES)
    results = paper_results(prefix, hallucination_set="test")
    am = acoustic_models(prefix, data, results, ctc_config=paper_ctc_config(AM_VOCAB_SIZE),
                         aed_config=paper_aed_config(AM_VOCAB_SIZE), options=AM_TRAINING[subset], aed_average=4,
                         search_cpu=4, **GPU)
    fusion_systems = paper_fusion(prefix, data, am, llms, results)
    encoder_ckpt, encoder_config = speech_llm_encoder(prefix, data, AM_TRAINING[subset], spm_model=data.spm_model,
                                                      **GPU)
    recipe = SpeechLLMRecipe(data, results, SPEECH_LLM_TRAINING[subset], encoder_ckpt, encoder_config)
    for size, llm in qwen2.items():
        paper_speech_llm(prefix, size, recipe, llm)
    results.report()
    comparison_tables(results, fusion_systems)


def py():
    for subset in SUBSETS:
        loquacious_subset(subset)
