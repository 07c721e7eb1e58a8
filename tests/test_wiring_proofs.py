"""Wiring proofs: every model family, trained on the same 16 short utterances, recognises them (WER <= 5 %) with the
project's own searches; a speech LLM that hears only zeros cannot (the negative control shows the test can fail).

The CTC model is trained first; as in the toy experiment, the AED decoder and the speech LLMs then train on the
stored outputs of its frozen encoder.
"""
import os
import shutil
import subprocess

import pytest
import torch

from llmasr.models.conformer import (AedModelConfig, CtcModelConfig, SpecAugmentConfig, TransformerDecoderConfig,
                                     tiny_encoder_config)
from llmasr.models.conformer_modules import build_model
from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.models.speech_llm_modules import SpeechLLM
from llmasr.scoring.wer import compute_wer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                                reason="needs espeak-ng and sox")

SENTENCES = ["the cat sat down", "a dog ran home", "she sells shells", "the sun is bright", "we like apples",
             "birds fly high", "open the door", "my friend reads", "time to go", "the rain falls",
             "he plays piano", "cold water here", "green trees grow", "a big red ball", "lions sleep now",
             "ships sail east"]
MAX_WER = 5.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 utterances (espeak-ng, one voice), SentencePiece units over their text, audio as a padded batch."""
    import sentencepiece as spm
    import soundfile as sf

    root = tmp_path_factory.mktemp("wiring")
    wavs = []
    for i, text in enumerate(SENTENCES):
        path = str(root / f"utt{i}.wav")
        subprocess.run(f"espeak-ng -v en-us -s 175 --stdout '{text}' | sox -D -G -t wav - -r 16000 -c 1 -b 16 {path}",
                       shell=True, check=True)
        audio, rate = sf.read(path, dtype="float32")
        assert rate == 16000
        wavs.append(torch.from_numpy(audio / max(1e-3, abs(audio).max())))
    (root / "text.txt").write_text("\n".join(SENTENCES) + "\n")
    spm.SentencePieceTrainer.train(input=str(root / "text.txt"), model_prefix=str(root / "spm"), vocab_size=48,
                                   hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    lens = torch.tensor([len(w) for w in wavs])
    audio = torch.zeros(len(wavs), int(lens.max()))
    for i, w in enumerate(wavs):
        audio[i, : len(w)] = w
    labels = [sp.encode(t) for t in SENTENCES]
    return {"audio": audio, "lens": lens, "labels": labels, "sp": sp, "spm_model": str(root / "spm.model"),
            "vocab": sp.get_piece_size()}


def _padded(labels):
    lens = torch.tensor([len(x) for x in labels])
    out = torch.zeros(len(labels), int(lens.max()), dtype=torch.long)
    for i, x in enumerate(labels):
        out[i, : len(x)] = torch.tensor(x)
    return out, lens


def _wer(corpus, hyps) -> float:
    refs = {str(i): t for i, t in enumerate(SENTENCES)}
    totals, per_utterance = compute_wer(refs, {str(i): corpus["sp"].decode(h) for i, h in enumerate(hyps)})
    print("errors:", [(u["ref"], u["hyp"]) for u in per_utterance if u["sub"] + u["del"] + u["ins"]])
    return totals["wer"]


def _train(params, loss_fn, steps: int, lr: float) -> float:
    """Full-batch AdamW with a short warm-up; returns the last loss."""
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=0.0)
    loss = torch.tensor(0.0)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 20)
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
    return float(loss.detach())


@pytest.fixture(scope="module")
def ctc_model(corpus):
    """A tiny Conformer CTC model trained to recognise the 16 utterances."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    enc = tiny_encoder_config(num_layers=2, dim=64, num_heads=4, ff_dim=128, frontend_channels=4,
                              specaug=SpecAugmentConfig(enabled=False))
    model = build_model(CtcModelConfig(encoder=enc, vocab_size=corpus["vocab"])).train()
    targets, target_lens = _padded(corpus["labels"])

    def loss():
        losses = model.compute_losses(corpus["audio"], corpus["lens"], targets, target_lens)
        return sum(v * s for v, s in losses.values()) / float(target_lens.sum())

    _train(list(model.parameters()), loss, steps=250, lr=3e-3)
    return model.eval()


@pytest.fixture(scope="module")
def frames(ctc_model, corpus):
    """Stored outputs of the trained (now frozen) encoder."""
    with torch.no_grad():
        out, lens = ctc_model.encoder(corpus["audio"], corpus["lens"])
    return out[-1], lens


def test_ctc_model_recognises_its_training_utterances(ctc_model, corpus):
    from llmasr.returnn.steps import ctc_beam, ctc_greedy

    with torch.no_grad():
        log_probs, lengths = ctc_model.ctc_log_probs(corpus["audio"], corpus["lens"])
    greedy = [h[0][0] for h in ctc_greedy(log_probs, lengths, ctc_model.blank_idx)]
    beam = [h[0][0] for h in ctc_beam(log_probs, lengths, ctc_model.blank_idx, beam_size=4, label_topk=4, nbest=1)]
    assert _wer(corpus, greedy) <= MAX_WER
    assert _wer(corpus, beam) <= MAX_WER


def test_aed_recognises_its_training_utterances(ctc_model, frames, corpus):
    """The AED: the CTC model's frozen encoder, a decoder and aux CTC layer trained on its stored outputs."""
    from llmasr.returnn.steps import aed_search

    torch.manual_seed(0)
    cfg = AedModelConfig(encoder=ctc_model.cfg.encoder, vocab_size=corpus["vocab"], aux_ctc_layers=(2,),
                         aux_ctc_scales=(0.3,), decoder=TransformerDecoderConfig(num_layers=1, dim=64, num_heads=4,
                                                                                 ff_dim=128, dropout=0.0))
    aed = build_model(cfg).train()
    aed.encoder.load_state_dict(ctc_model.encoder.state_dict())
    targets, target_lens = _padded(corpus["labels"])

    def loss():
        losses = aed.compute_losses_from_frames(frames[0], frames[1], targets, target_lens)
        return sum(v * s for v, s in losses.values()) / float(target_lens.sum())

    _train(list(aed.decoder.parameters()) + list(aed.aux_outputs.parameters()), loss, steps=500, lr=3e-3)
    aed.eval()
    with torch.no_grad():
        enc, lengths, ctc = aed.encode(corpus["audio"], corpus["lens"], with_ctc=True)
        alone = aed_search(aed, enc, lengths, beam_size=4, max_len_ratio=1.0)
        joint = aed_search(aed, enc, lengths, beam_size=4, max_len_ratio=1.0, ctc_scale=0.3,
                           ctc_log_probs=ctc[2].log_softmax(-1))
    assert _wer(corpus, [h[0][0] for h in alone]) <= MAX_WER
    assert _wer(corpus, [h[0][0] for h in joint]) <= MAX_WER


def _speech_llm(ctc_model, corpus, interface: SpeechInterface, training: LLMTraining) -> SpeechLLM:
    """Frozen encoder -> adapter (2x) -> a tiny random Qwen2 over the AM units (as after a vocabulary swap)."""
    from llmasr.models.llm import LLMTokenizer, TinyLLMConfig, create_tiny_qwen2

    tokenizer = LLMTokenizer(spm_model=corpus["spm_model"])
    torch.manual_seed(0)
    llm = create_tiny_qwen2(TinyLLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2), tokenizer)
    encoder = build_model(ctc_model.cfg).encoder
    encoder.load_state_dict(ctc_model.encoder.state_dict())
    cfg = SpeechLLMConfig(adapter_k=2, interface=interface, llm_training=training, freeze_encoder=True).resolve(
        encoder_dim=ctc_model.cfg.encoder.dim, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, train_vocabulary=True)
    return SpeechLLM(cfg, encoder, llm).train()


def _train_and_recognise(model: SpeechLLM, frames, corpus, *, steps: int = 150) -> float:
    from llmasr.search.beam_search import beam_search
    from llmasr.search.speech_llm_scorer import SpeechLLMScorer

    def loss():
        ce = model.compute_losses_from_frames(frames[0], frames[1], corpus["labels"])["ce"][0]
        return ce / float(sum(len(t) + 1 for t in corpus["labels"]))

    _train(list(model.parameters()), loss, steps=steps, lr=3e-3)
    model.eval()
    scorer = SpeechLLMScorer(model)
    with torch.no_grad():
        scorer.set_audio(corpus["audio"], corpus["lens"])
        out = beam_search({"am": (scorer, 1.0)}, len(SENTENCES), 4, model.cfg.bos_id, model.cfg.eos_id, 20, 1.0)
    return _wer(corpus, [h[0]["labels"] for h in out])


@pytest.mark.parametrize("interface,training", [(SpeechInterface.PREFIX, LLMTraining.LORA),
                                                (SpeechInterface.PREFIX, LLMTraining.FULL),
                                                (SpeechInterface.CROSS_ATTENTION, LLMTraining.LORA),
                                                (SpeechInterface.CROSS_ATTENTION, LLMTraining.FULL)])
def test_speech_llm_recognises_its_training_utterances(ctc_model, frames, corpus, interface, training):
    model = _speech_llm(ctc_model, corpus, interface, training)
    assert _train_and_recognise(model, frames, corpus) <= MAX_WER


def test_speech_llm_without_audio_cannot(ctc_model, corpus):
    """Negative control: the same speech LLM trained and searched on zeroed audio stays far above the bound."""
    model = _speech_llm(ctc_model, corpus, SpeechInterface.PREFIX, LLMTraining.LORA)
    # zeros of one length for every utterance: neither the audio nor its length tells the sentences apart
    silent = dict(corpus, audio=torch.zeros_like(corpus["audio"]), lens=torch.full_like(corpus["lens"],
                                                                                       corpus["audio"].shape[1]))
    with torch.no_grad():
        out, lens = ctc_model.encoder(silent["audio"], silent["lens"])
    assert _train_and_recognise(model, (out[-1], lens), silent) >= 50.0
