"""The embedded default experiment: a toy-sized version of the whole comparison, runnable on 2 CPU cores.

Data (espeak-ng speech) -> label units -> AMs (CTC, AED) -> LLM -> shallow fusion and speech LLMs -> report.
Sizes are module-level parameters so that a researcher can scale the same graph up.
"""
from sisyphus import tk

from llmasr.data.returnn_data import PackOggZipJob
from llmasr.data.toy import MakeToyCorpusJob
from llmasr.llm.perplexity import ComputePerplexityJob
from llmasr.llm.train import (CreateTinyLLMJob, FineTuneLLMJob, FineTuneMethod, FineTuneUnits, PretrainLLMJob,
                              TrainConfig)
from llmasr.models.conformer import AedModelConfig, ConformerEncoderConfig, CtcModelConfig, TransformerDecoderConfig
from llmasr.models.llm import TinyLLMConfig
from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.speech_llm import SpeechLLMSetup, SpeechLLMTrainingJob
from llmasr.returnn.forward import DumpCtcLogProbsJob, EstimateCtcPriorJob, RecogMode, ReturnnForwardJob
from llmasr.returnn.training import AverageCheckpointsJob, GetBestCheckpointJob, ReturnnTrainingJob
from llmasr.scoring.report import ReportTableJob
from llmasr.scoring.wer import ScoreWERJob
from llmasr.search.aed_fusion import AedFusionSearchJob
from llmasr.search.delayed_fusion import CTCFusionSearchJob, FusionMode
from llmasr.search.rescoring import RescoreNBestJob
from llmasr.search.speech_llm_recog import SpeechLLMRecogJob, SpeechLLMSearchMode
from llmasr.text.extract import ConcatenateTextJob, CorpusToTextJob
from llmasr.text.llm_tokenizer import TrainLlmTokenizerJob
from llmasr.text.sentencepiece import SentencePieceType, TrainSentencePieceJob
from llmasr.tuning.scales import TuneScalesJob

PREFIX = "toy"
NUM_TRAIN, NUM_DEV, NUM_TEST = 3000, 200, 200
AM_VOCAB_SIZE = 256  # SentencePiece unigram units of the AMs (the paper's AMs use 10k)
AM_ENCODER = ConformerEncoderConfig(num_layers=6, dim=144, num_heads=4, ff_dim=576, conv_kernel_size=15,
                                    frontend_channels=16)
AM_TRAINING = TrainingOptions(num_epochs=10, batch_size_seconds=20, learning_rate=3e-3)
LLM_VOCAB_SIZE = 1000  # byte-level BPE of the toy LLM (a different tokenizer than the AM's, as with Qwen2)
LLM_TEXT_SENTENCES = 60000  # toy analogue of the LibriSpeech LM corpus
DELAYS = (1, 5, 20, None)  # delayed fusion: frames between LLM calls (None: only at the end)
LM_SCALES = tuple(x / 10 for x in range(0, 11))
PRIOR_SCALES = (0.0, 0.1, 0.2, 0.3)
LENGTH_REWARDS = (0.0, 0.5, 1.0, 1.5)
SPEECH_LLM_TRAINING = TrainingOptions(num_epochs=4, batch_size_seconds=20, learning_rate=1e-3)
# speech LLM variants: each changes one choice of the base (prefix, LoRA, 2x extra downsampling, AM units, no prompt)
SPEECH_LLM_BASE = dict(interface=SpeechInterface.PREFIX, llm_training=LLMTraining.LORA, adapter_k=2)
SPEECH_LLM_VARIANTS = {
    "prefix-lora-k2": {},
    "prefix-frozen-k2": dict(llm_training=LLMTraining.FROZEN),
    "prefix-full-k2": dict(llm_training=LLMTraining.FULL),
    "prefix-lora-k1": dict(adapter_k=1),
    "xattn-lora-k2": dict(interface=SpeechInterface.CROSS_ATTENTION),
}
SPEECH_LLM_PROMPT = ("USER: ", " Transcribe speech to text. ASSISTANT: ")
LLM_SIZE = TinyLLMConfig(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2)


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

    # 3. LLM: a tiny Qwen2-architecture model pre-trained on the toy LM text, then fine-tuned on transcriptions
    llm_text = ConcatenateTextJob([corpus.out_lm_text], max_lines=LLM_TEXT_SENTENCES).out_text
    llm_tokenizer = TrainLlmTokenizerJob(llm_text, vocab_size=LLM_VOCAB_SIZE).out_tokenizer_dir
    llm_init = CreateTinyLLMJob(llm_tokenizer, config=LLM_SIZE).out_model
    llm = PretrainLLMJob(llm_init, llm_text, dev_text=corpus.out_corpora["dev"],
                         train_config=TrainConfig(epochs=2, batch_size=32, learning_rate=2e-3))
    llm.add_alias(f"{PREFIX}/llm/pretrain")
    llms = {
        "pretrained": llm.out_model,
        "ft-own": FineTuneLLMJob(llm.out_model, corpus.out_corpora["train"], units=FineTuneUnits.LLM,
                                 method=FineTuneMethod.FULL).out_model,
        "ft-am-units-lora": FineTuneLLMJob(llm.out_model, corpus.out_corpora["train"], units=FineTuneUnits.AM,
                                           am_spm_model=spm.out_model, method=FineTuneMethod.LORA).out_model,
    }
    for name, model in llms.items():
        for split in ("dev", "test"):
            ppl = ComputePerplexityJob(model, corpus.out_corpora[split])
            tk.register_output(f"{PREFIX}/llm/{name}/{split}/ppl.json", ppl.out_ppl)

    # 4. acoustic models: Conformer CTC (aux CTC at layer 3) and AED (+ aux CTC), trained through RETURNN
    ctc = ReturnnTrainingJob(CtcModelConfig(encoder=AM_ENCODER, aux_ctc_layers=(3,), aux_ctc_scales=(0.3,)),
                             zips["train"], zips["dev"], spm.out_model, options=AM_TRAINING, cpu=2)
    ctc.add_alias(f"{PREFIX}/am/ctc/train")
    ctc_ckpt = GetBestCheckpointJob(ctc, score_key="dev_loss_ctc").out_checkpoint
    aed = ReturnnTrainingJob(AedModelConfig(encoder=AM_ENCODER, decoder=TransformerDecoderConfig(
        num_layers=2, dim=144, num_heads=4, ff_dim=576), aux_ctc_layers=(6,), aux_ctc_scales=(0.3,)),
        zips["train"], zips["dev"], spm.out_model, options=AM_TRAINING, cpu=2)
    aed.add_alias(f"{PREFIX}/am/aed/train")
    aed_ckpt = AverageCheckpointsJob(aed, num_best=2, score_key="dev_loss_ce").out_checkpoint

    # 5. recognition and scoring
    systems = {
        "ctc-greedy": (ctc_ckpt, ctc.out_model_config, RecogMode.CTC_GREEDY),
        "ctc-beam": (ctc_ckpt, ctc.out_model_config, RecogMode.CTC_BEAM),
        "aed-beam": (aed_ckpt, aed.out_model_config, RecogMode.AED_BEAM),
        "aed+ctc": (aed_ckpt, aed.out_model_config, RecogMode.AED_CTC),
    }
    results, info, nbests = {}, {}, {}
    corpora = corpus.out_corpora

    def score(name, split, nbest, stats=None):
        wer = ScoreWERJob(nbest, corpora[split], search_stats=stats)
        tk.register_output(f"{PREFIX}/{name}/{split}/wer.json", wer.out_report)
        results.setdefault(name, {})[split] = wer.out_wer

    for name, (ckpt, model_config, mode) in systems.items():
        for split in ("dev", "test"):
            rec = ReturnnForwardJob(ckpt, model_config, zips[split], spm.out_model, mode=mode, cpu=2)
            nbests[name, split] = rec.out_nbest
            score(name, split, rec.out_nbest, rec.out_search_stats)

    # 6. combination: the LLM joined at search time, scales tuned on dev N-best lists, used on dev and test
    prior = EstimateCtcPriorJob(ctc_ckpt, ctc.out_model_config, zips["train"], spm.out_model, cpu=2)
    ctc_logprobs = {split: DumpCtcLogProbsJob(ctc_ckpt, ctc.out_model_config, zips[split], spm.out_model,
                                              cpu=2).out_ctc_logprobs for split in ("dev", "test")}

    def tune(am, llm_name, *, am_key, use_labels, with_prior):
        """Rescores the dev N-best of ``am`` with an LLM and tunes the scales on it."""
        rescored = RescoreNBestJob(nbests[am, "dev"], llms[llm_name], use_labels=use_labels, am_key=am_key,
                                   log_prior=prior.out_log_label_prior if with_prior else None).out_nbest
        job = TuneScalesJob(rescored, corpora["dev"], lm_scales=LM_SCALES,
                            prior_scales=PRIOR_SCALES if with_prior else (0.0,), length_rewards=LENGTH_REWARDS,
                            am_key=am_key)
        job.add_alias(f"{PREFIX}/tuning/{am}/{llm_name}")
        tk.register_output(f"{PREFIX}/tuning/{am}/{llm_name}/scales.json", job.out_scales)
        return job

    def scales_info(t):
        return {"lm_scale": t.out_lm_scale, "prior_scale": t.out_prior_scale, "length_reward": t.out_length_reward}

    # N-best rescoring: CTC (with prior) and AED N-best lists, by the pre-trained and the fine-tuned LLM
    for am, am_key, with_prior in (("ctc-beam", "ctc", True), ("aed-beam", "am", False)):
        for llm_name in ("pretrained", "ft-own"):
            t = tune(am, llm_name, am_key=am_key, use_labels=False, with_prior=with_prior)
            name = f"{am} + rescoring ({llm_name})"
            info[name] = scales_info(t)
            for split in ("dev", "test"):
                job = RescoreNBestJob(nbests[am, split], llms[llm_name], am_key=am_key, lm_scale=t.out_lm_scale,
                                      prior_scale=t.out_prior_scale, length_reward=t.out_length_reward,
                                      log_prior=prior.out_log_label_prior if with_prior else None)
                score(name, split, job.out_nbest)

    # label-wise fusion: the LLM fine-tuned on the AM's units, one LLM step per new label
    t = tune("ctc-beam", "ft-am-units-lora", am_key="ctc", use_labels=True, with_prior=True)
    info["ctc + label-wise fusion"] = scales_info(t)
    for split in ("dev", "test"):
        job = CTCFusionSearchJob(ctc_logprobs[split], spm.out_model, llms["ft-am-units-lora"],
                                 mode=FusionMode.LABELWISE, lm_scale=t.out_lm_scale, prior_scale=t.out_prior_scale,
                                 length_reward=t.out_length_reward, log_prior=prior.out_log_prior,
                                 corpus=corpora[split])
        score("ctc + label-wise fusion", split, job.out_nbest, job.out_search_stats)
    t = tune("aed-beam", "ft-am-units-lora", am_key="am", use_labels=True, with_prior=False)
    info["aed + label-wise fusion"] = scales_info(t)
    for split in ("dev", "test"):
        job = AedFusionSearchJob(aed_ckpt, aed.out_model_config, corpora[split], spm.out_model,
                                 llms["ft-am-units-lora"], lm_scale=t.out_lm_scale,
                                 length_reward=t.out_length_reward)
        score("aed + label-wise fusion", split, job.out_nbest, job.out_search_stats)

    # delayed fusion: the LLM with its own tokenizer, completed words scored every k frames
    t = tune("ctc-beam", "ft-own", am_key="ctc", use_labels=False, with_prior=True)
    for delay in DELAYS:
        name = f"ctc + delayed fusion (k={delay or 'end'})"
        info[name] = scales_info(t)
        for split in ("dev", "test"):
            job = CTCFusionSearchJob(ctc_logprobs[split], spm.out_model, llms["ft-own"], mode=FusionMode.DELAYED,
                                     delay=delay, lm_scale=t.out_lm_scale, prior_scale=t.out_prior_scale,
                                     length_reward=t.out_length_reward, log_prior=prior.out_log_prior,
                                     corpus=corpora[split])
            score(name, split, job.out_nbest, job.out_search_stats)

    # 7. integration: speech LLMs (the AED's encoder -> adapter -> the pre-trained toy LLM), alone and with CTC
    hallucination = {}

    def speech_llm(name, am_units=True, prompt=False, **changes):
        setup = SpeechLLMSetup(
            config=SpeechLLMConfig(encoder_dim=0, **{**SPEECH_LLM_BASE, **changes}), llm=llm.out_model,
            aed_checkpoint=aed_ckpt, aed_model_config=aed.out_model_config,
            am_spm_model=spm.out_model if am_units else None,
            prompt_pre_text=SPEECH_LLM_PROMPT[0] if prompt else "", prompt_post_text=SPEECH_LLM_PROMPT[1] if prompt else "")
        job = SpeechLLMTrainingJob(setup, zips["train"], zips["dev"], spm.out_model, options=SPEECH_LLM_TRAINING)
        job.add_alias(f"{PREFIX}/speech_llm/{name}/train")
        return job

    def recognise(name, train_job, with_ctc=False, **kwargs):
        for split in ("dev", "test"):
            if with_ctc:  # joint recognition with the CTC model (same units as the speech LLM)
                kwargs["ctc_logprobs"] = ctc_logprobs[split]
            rec = SpeechLLMRecogJob(train_job.out_last_checkpoint, train_job.out_setup, corpora[split], **kwargs)
            wer = ScoreWERJob(rec.out_nbest, corpora[split], search_stats=rec.out_search_stats)
            tk.register_output(f"{PREFIX}/speech_llm/{name}/{split}/wer.json", wer.out_report)
            results.setdefault(name, {})[split] = wer.out_wer
            if split == "test":
                hallucination[name] = {"insertions": wer.out_insertion_rate, "overlong": wer.out_long_share,
                                       "loops": wer.out_loop_share, "empty": wer.out_empty_share}

    trained = {name: speech_llm(name, **changes) for name, changes in SPEECH_LLM_VARIANTS.items()}
    trained["prefix-lora-k2-prompt"] = speech_llm("prefix-lora-k2-prompt", prompt=True)
    trained["prefix-lora-k2-llm-units"] = speech_llm("prefix-lora-k2-llm-units", am_units=False)
    for name, job in trained.items():
        recognise(f"speech-llm {name}", job)
    base = trained["prefix-lora-k2"]
    recognise("speech-llm prefix-lora-k2 (alpha=0)", base, length_norm_exponent=0.0)
    recognise("speech-llm prefix-lora-k2 + ctc (label-sync)", base, mode=SpeechLLMSearchMode.JOINT_LABEL_SYNC,
              with_ctc=True, ctc_scale=0.3)
    recognise("speech-llm prefix-lora-k2 + ctc (time-sync)", base, mode=SpeechLLMSearchMode.JOINT_TIME_SYNC,
              with_ctc=True, ctc_scale=0.3)

    # 8. report
    report = ReportTableJob(results, info=info)
    tk.register_output(f"{PREFIX}/report/results.md", report.out_table)
    tk.register_output(f"{PREFIX}/report/results.png", report.out_plot)
    hall = ReportTableJob({n: {"test": results[n]["test"]} for n in hallucination}, info=hallucination)
    tk.register_output(f"{PREFIX}/report/hallucination.md", hall.out_table)
