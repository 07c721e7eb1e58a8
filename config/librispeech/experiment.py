"""Paper-scale LibriSpeech 960 h experiment: the paper's Conformer CTC and AED (16 x 1024, unigram 10k), Qwen2-0.5B /
1.5B and a 32-layer Transformer LM for shallow fusion, the paper's speech LLMs (18-layer encoder, rsLoRA) alone and
jointly with CTC, and every ablation table of the paper; evaluated on LibriSpeech dev/test and the 8 Open ASR
Leaderboard sets. Needs GPU nodes (see README, cluster); the hyperparameters are those of :mod:`config.paper`."""
from config import ablations
from config.experiment import ExperimentData, acoustic_models
from config.librispeech.data import AM_VOCAB_SIZE, DEV_SUBSETS, PREFIX, TEST_SUBSETS, librispeech_data
from config.librispeech.llm import librispeech_llms
from config.paper import (GPU, PRIOR_UTTERANCES, QWEN2, QWEN2_INSTRUCT, QWEN2_LARGER, SPEECH_LLM_PROMPT, TRAFO_LM_NAME,
                          SpeechLLMRecipe, comparison_tables, hub_models, paper_fusion, paper_results, paper_speech_llm,
                          speech_llm_encoder, transformer_lm)
from llmasr.models.conformer import paper_aed_config, paper_ctc_config
from llmasr.returnn.config import TrainingOptions

# 960 h split into 20 sub-epochs; 100 sub-epochs = 5 passes over the data; peak LR 1e-3 (one-cycle); bf16 autocast
AM_TRAINING = TrainingOptions(num_epochs=100, partition_epoch=20, batch_size_seconds=1200, max_seqs=200,
                              learning_rate=1e-3, num_workers=2, bf16=True)
SPEECH_LLM_TRAINING = TrainingOptions(num_epochs=40, partition_epoch=20, batch_size_seconds=600, max_seqs=100,
                                      learning_rate=1e-4, num_workers=2, bf16=True)
BASE_LLM = "qwen2-1.5b"  # the LLM of the ablations that vary something else


def py():
    d = librispeech_data()
    llms = librispeech_llms(d, prefix=PREFIX)
    # the Transformer LM is over the AM's units already: one model, tuned once on text (rescoring) and once on labels
    llms[TRAFO_LM_NAME] = llms[f"{TRAFO_LM_NAME}-units"] = transformer_lm(PREFIX, d["llm_text"], d["spm"].out_model)
    eval_corpora = {s: d["corpora"][s] for s in DEV_SUBSETS + TEST_SUBSETS}
    eval_corpora.update(d["open_asr"])
    eval_zips = dict(d["eval_zips"])
    eval_zips.update(d["open_asr_zips"])
    data = ExperimentData(corpora=eval_corpora, zips=eval_zips, train_zips=d["train_zips"],
                          dev_zips=[d["eval_zips"][s] for s in DEV_SUBSETS], spm_model=d["spm"].out_model,
                          tune_set="dev-other", eval_sets=tuple(eval_corpora), prior_zips=d["train_zips"],
                          prior_utterances=PRIOR_UTTERANCES)
    results = paper_results(PREFIX, hallucination_set="test-other")

    # acoustic models, and the LLMs joined to them at search time
    am = acoustic_models(PREFIX, data, results, ctc_config=paper_ctc_config(AM_VOCAB_SIZE),
                         aed_config=paper_aed_config(AM_VOCAB_SIZE), options=AM_TRAINING, aed_average=4,
                         search_cpu=4, **GPU)
    fusion_systems = paper_fusion(PREFIX, data, am, llms, results)

    # speech LLMs: the paper's, on each Qwen2 size
    encoder_ckpt, encoder_config = speech_llm_encoder(PREFIX, data, AM_TRAINING, spm_model=data.spm_model, **GPU)
    recipe = SpeechLLMRecipe(data, results, SPEECH_LLM_TRAINING, encoder_ckpt, encoder_config)
    qwen2 = hub_models(QWEN2)
    bases = {size: paper_speech_llm(PREFIX, size, recipe, llm) for size, llm in qwen2.items()}

    # the ablations, each its own table
    base, hub = bases[BASE_LLM], qwen2[BASE_LLM]
    ablations.label_units(PREFIX, recipe, hub, base, train_text=d["train_text"], name=BASE_LLM)
    ablations.encoder_training(PREFIX, recipe, hub, base, name=BASE_LLM)
    ablations.llm_pretraining(PREFIX, recipe, bases, hub_models(QWEN2_INSTRUCT))
    ablations.llm_size(PREFIX, recipe, bases, hub_models(QWEN2_LARGER))
    ablations.encoder_downsampling(PREFIX, recipe, hub, base, name=BASE_LLM)
    ablations.interface_and_fine_tuning(PREFIX, recipe, hub, base, name=BASE_LLM, prompt=SPEECH_LLM_PROMPT)
    ablations.length_normalisation(PREFIX, recipe, base)
    ablations.joint_optimisations(PREFIX, recipe, base, eval_sets=("dev-other", "test-other"))

    # the tables: everything (results.md, hallucination.md), then the paper's comparison tables
    results.report()
    comparison_tables(results, fusion_systems)

