"""Tests of the speech LLM: adapter, both speech interfaces (prefix, gated cross-attention), losses incl. aux CTC,
cached scorer, joint search with CTC, and building from an AED checkpoint and an LLM directory."""
import copy

import pytest
import torch
from torch import nn

from llmasr.models.adapter import FrameStackAdapter
from llmasr.models.llm import tiny_random_qwen2
from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.models.speech_llm_modules import SpeechLLM
from llmasr.search.beam_search import beam_search
from llmasr.search.speech_llm_scorer import SpeechLLMScorer
from tests.tiny_models import save_tiny_aed, write_noise_corpus

V, BOS, EOS = 20, 0, 1


class TinyEncoder(nn.Module):
    """Stand-in encoder: frames of 4 samples -> linear."""

    def __init__(self, dim=8):
        super().__init__()
        self.lin = nn.Linear(4, dim)

    def forward(self, audio, lens):
        t = audio.shape[1] // 4
        return torch.tanh(self.lin(audio[:, : t * 4].reshape(audio.shape[0], t, 4))), lens // 4


def _model(training=LLMTraining.FULL, k=2, interface=SpeechInterface.PREFIX, prompt=True, **kwargs):
    torch.manual_seed(0)
    llm = tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS)
    cfg = SpeechLLMConfig(adapter_k=k, llm_training=training, freeze_embedding=False, interface=interface,
                          **kwargs).resolve(encoder_dim=8, bos_id=BOS, eos_id=EOS, prompt_pre=(5, 6) if prompt else (),
                                            prompt_post=(7,) if prompt else ())
    return SpeechLLM(cfg, TinyEncoder(), llm).eval()


XATTN = SpeechInterface.CROSS_ATTENTION
INTERFACES = [pytest.param(SpeechInterface.PREFIX, True, id="prefix"), pytest.param(XATTN, True, id="xattn"),
              pytest.param(XATTN, False, id="xattn-no-prompt")]


def _audio():
    torch.manual_seed(1)
    return torch.randn(2, 40), torch.tensor([40, 26])


def test_adapter_stacks_and_masks_padding():
    torch.set_num_threads(1)
    ad = FrameStackAdapter(3, 5, k=2)
    x = torch.randn(2, 5, 3)
    out, lens = ad(x, torch.tensor([5, 3]))
    assert out.shape == (2, 3, 5) and lens.tolist() == [3, 2]
    x2 = x.clone()
    x2[1, 3:] = 100.0  # padding must not change the outputs
    out2, _ = ad(x2, torch.tensor([5, 3]))
    assert torch.allclose(out[1, :2], out2[1, :2])


@pytest.mark.parametrize("interface,prompt", INTERFACES)
def test_cached_beam_search_equals_uncached(interface, prompt):
    torch.set_num_threads(1)
    model = _model(interface=interface, prompt=prompt)
    if interface == XATTN:  # open the gates so that the speech matters
        for i in model.cross_attention_layers:
            model.llm.model.layers[i].cross_attn.gate.data.fill_(1.0)
    audio, lens = _audio()
    results = []
    for use_cache in (True, False):
        sc = SpeechLLMScorer(model, use_cache=use_cache)
        sc.set_audio(audio, lens)
        results.append(beam_search({"am": (sc, 1.0)}, 2, 3, BOS, EOS, max_len=6))
    for a, b in zip(*results):
        assert [h["labels"] for h in a] == [h["labels"] for h in b] and len(a) == 3
        for ha, hb in zip(a, b):
            assert ha["score"] == pytest.approx(hb["score"], abs=1e-4)


@pytest.mark.parametrize("interface,prompt", INTERFACES)
def test_scorer_matches_training_forward(interface, prompt):
    torch.set_num_threads(1)
    model = _model(interface=interface, prompt=prompt)
    if interface == XATTN:
        for i in model.cross_attention_layers:
            model.llm.model.layers[i].cross_attn.gate.data.fill_(1.0)
    audio, lens = _audio()
    targets = [[3, 4, 9], [8, 2]]
    loss, n = model(audio, lens, targets)
    sc = SpeechLLMScorer(model)
    sc.set_audio(audio, lens)
    for b, t in enumerate(targets):
        st = sc.initial_state(torch.tensor([b]))
        total = 0.0
        for prev, nxt in zip([BOS] + t, t + [EOS]):
            lp, st = sc.score(st, torch.tensor([prev]))
            total += float(lp[0, nxt])
        targets_b = [t]
        lb, _ = model(audio[b:b + 1, : int(lens[b])], lens[b:b + 1], targets_b)
        assert -total == pytest.approx(float(lb), abs=1e-3)


@pytest.mark.parametrize("training", [LLMTraining.FULL, LLMTraining.FROZEN, LLMTraining.LORA])
def test_prefix_model_trains(training):
    torch.set_num_threads(1)
    model = _model(training).train()
    audio, lens = _audio()
    targets = [[3, 4, 9], [8, 2]]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    llm_before = {k: v.clone() for k, v in model.llm.state_dict().items() if "lora" not in k}
    losses = []
    for _ in range(40):
        loss, n = model(audio, lens, targets)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        losses.append(float(loss) / n)
    # a frozen random tiny LLM is only steered through the soft prompt: a smaller but real decrease
    assert losses[-1] < losses[0] * {LLMTraining.FROZEN: 0.99, LLMTraining.LORA: 0.9, LLMTraining.FULL: 0.8}[training]
    changed = any(not torch.equal(v, model.llm.state_dict()[k]) for k, v in llm_before.items())
    assert changed == (training == LLMTraining.FULL)


def test_joint_search_ctc_scale_zero_equals_beam_search():
    torch.set_num_threads(1)
    from llmasr.search.joint_ctc import joint_label_sync_search

    model = _model()
    audio, lens = _audio()
    sc = SpeechLLMScorer(model)
    sc.set_audio(audio, lens)
    plain = beam_search({"am": (sc, 1.0)}, 2, 3, BOS, EOS, max_len=6)
    ctc = torch.randn(2, 10, V).log_softmax(-1)
    joint = joint_label_sync_search({"am": (sc, 1.0)}, ctc, torch.tensor([10, 6]), ctc_scale=0.0, blank=2,
                                    bos=BOS, eos=EOS, beam_size=3, max_len=6)
    assert [[h["labels"] for h in u] for u in plain] == [[h["labels"] for h in u] for u in joint]
    joint2 = joint_label_sync_search({"am": (sc, 1.0)}, ctc, torch.tensor([10, 6]), ctc_scale=0.5, blank=2,
                                     bos=BOS, eos=EOS, beam_size=3, max_len=6)
    assert all("ctc" in u[0]["scores"] for u in joint2)


def test_time_sync_joint_search_runs_with_speech_llm():
    torch.set_num_threads(1)
    from llmasr.search.joint_ctc import joint_time_sync_search

    model = _model()
    audio, lens = _audio()
    sc = SpeechLLMScorer(model)
    sc.set_audio(audio, lens)
    torch.manual_seed(3)
    ctc = torch.randn(2, 8, V).mul(3).log_softmax(-1)
    res = joint_time_sync_search(sc, ctc, torch.tensor([8, 5]), blank=2, bos=BOS, eos=EOS, beam_size=3)
    assert len(res) == 2 and all(len(u) >= 1 for u in res)
    assert all(2 not in h["labels"] for u in res for h in u)


def _gates(model):
    from llmasr.models.speech_llm_modules import find_decoder_layers

    layers = find_decoder_layers(model.llm)
    return [layers[i].cross_attn.gate for i in model.cross_attention_layers]


def test_cross_attention_starts_as_the_bare_llm():
    """Gates start at 0: the text log-probs equal the unchanged LLM's on [prompt, BOS, text]; no speech prefix."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    llm = tiny_random_qwen2(V, bos_id=BOS, eos_id=EOS)
    bare = copy.deepcopy(llm).eval()
    cfg = SpeechLLMConfig(interface=XATTN, cross_attention_every=2).resolve(encoder_dim=8, bos_id=BOS, eos_id=EOS,
                                                                            prompt_pre=(5, 6), prompt_post=(7,))
    model = SpeechLLM(cfg, TinyEncoder(), llm).eval()
    assert model.cross_attention_layers == [0] and [float(g) for g in _gates(model)] == [0.0]
    audio, lens = _audio()
    targets = [[3, 4, 9], [8, 2]]
    loss, n = model(audio, lens, targets)
    expected = 0.0
    for t in targets:
        ids = torch.tensor([[5, 6, 7, BOS] + t])
        logp = bare(input_ids=ids).logits[0, 3:].log_softmax(-1)
        expected -= float(logp.gather(1, torch.tensor(t + [EOS])[:, None]).sum())
    assert n == 7 and float(loss) == pytest.approx(expected, abs=1e-4)
    prefix, mask = model.prefix_embeddings(audio, lens)
    assert prefix.shape[1] == 3 and bool(mask.all())  # only the text prompt goes into the LLM
    with pytest.raises(RuntimeError, match="speech memory"):  # the wrapped layers need the memory
        model.llm(input_ids=torch.tensor([[1, 2]]))


def test_cross_attention_gate_init():
    """A non-zero gate start value: the attention's output layer gets a gradient from the first step (with Flamingo's
    0 it gets none until the gate has moved); the option stays out of the hash at 0."""
    torch.set_num_threads(1)
    audio, lens = _audio()
    grads = {}
    for gate_init in (0.0, 0.5):
        model = _model(LLMTraining.LORA, interface=XATTN, cross_attention_gate_init=gate_init).train()
        assert [float(g) for g in _gates(model)] == pytest.approx([gate_init] * len(model.cross_attention_layers))
        loss, n = model(audio, lens, [[3, 4, 9], [8, 2]])
        loss.backward()
        grads[gate_init] = [float(p.grad.abs().sum()) for name, p in model.named_parameters()
                            if name.endswith(".cross_attn.to_out.weight")]
    assert grads[0.0] and all(g == 0.0 for g in grads[0.0]) and all(g > 0.0 for g in grads[0.5])
    assert "cross_attention_gate_init" not in SpeechLLMConfig(interface=XATTN).__sis_state__()
    assert SpeechLLMConfig(interface=XATTN, cross_attention_gate_init=0.5).__sis_state__()[
        "cross_attention_gate_init"] == 0.5


@pytest.mark.parametrize("training", [LLMTraining.FROZEN, LLMTraining.LORA])
def test_cross_attention_model_trains(training):
    """The gated cross-attention layers and the adapter learn; the frozen / LoRA-adapted LLM weights stay."""
    torch.set_num_threads(1)
    model = _model(training, interface=XATTN).train()
    audio, lens = _audio()
    targets = [[3, 4, 9], [8, 2]]
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".cross_attn." in n for n in trained) and any(n.startswith("adapter.") for n in trained)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(15):
        loss, n = model(audio, lens, targets)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        losses.append(float(loss) / n)
    assert losses[-1] < losses[0] * 0.9
    after = model.state_dict()
    llm_keys = [k for k in before if k.startswith("llm.") and ".cross_attn." not in k and "lora_" not in k]
    assert llm_keys and all(torch.equal(before[k], after[k]) for k in llm_keys)
    for part in (".cross_attn.to_kv.weight", ".cross_attn.gate", "adapter.proj.weight"):
        keys = [k for k in before if k.endswith(part)]
        assert keys and all(not torch.equal(before[k], after[k]) for k in keys), part
    assert all(float(g) != 0.0 for g in _gates(model))


def test_compute_losses_with_aux_ctc():
    from llmasr.models.conformer_modules import ctc_loss_sum

    torch.set_num_threads(1)
    audio, lens = _audio()
    targets = [[3, 4, 9], [8, 2]]
    plain = _model()
    losses = plain.compute_losses(audio, lens, targets)
    assert list(losses) == ["ce"] and losses["ce"][1] == 1.0
    assert float(losses["ce"][0]) == pytest.approx(float(plain(audio, lens, targets)[0]), abs=1e-5)
    with pytest.raises(ValueError, match="no CTC output"):
        plain.ctc_log_probs(audio, lens)

    model = _model(interface=XATTN, ctc_vocab_size=V + 1, aux_ctc_scale=0.3).train()
    losses = model.compute_losses(audio, lens, targets)
    assert set(losses) == {"ce", "aux_ctc"} and losses["aux_ctc"][1] == 0.3 and losses["ce"][1] == 1.0
    ctc = losses["aux_ctc"][0]
    assert torch.isfinite(ctc) and float(ctc) > 0
    frames, flens = model.encode(audio, lens)  # the head sits on the encoder frames, before the adapter
    ref = ctc_loss_sum(model.ctc_head(frames), flens, torch.tensor([[3, 4, 9], [8, 2, 0]]), torch.tensor([3, 2]),
                       blank=V)
    assert float(ctc) == pytest.approx(float(ref), rel=1e-5)
    other = model.compute_losses(audio, lens, targets, ctc_targets=[[1], [2, 3]])["aux_ctc"][0]
    assert float(other) != pytest.approx(float(ctc))
    (losses["ce"][0] + 0.3 * ctc).backward()
    assert model.ctc_head.weight.grad is not None and model.encoder.lin.weight.grad is not None
    logp, out_lens = model.ctc_log_probs(audio, lens)
    assert logp.shape == (2, 10, V + 1) and out_lens.tolist() == [10, 6]
    with pytest.raises(ValueError, match="blank"):
        model.compute_losses(audio, lens, targets, ctc_targets=[[V], [1]])


SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "she sells sea shells", "birds fly over the hill"]


def speech_llm_files(tmp_path, *, vocab_am: int = 30):
    """A tiny random AED checkpoint + config, its SentencePiece model, a tiny random LLM dir with its own
    SentencePiece tokenizer, and a corpus of 3 random-noise utterances; returns the paths and the AED model."""
    import sentencepiece as spm

    from llmasr.models.llm import LLMTokenizer, TinyLLMConfig, save_llm

    (tmp_path / "text.txt").write_text("\n".join(SENTENCES * 10) + "\n")
    for name, size in (("am", vocab_am), ("llm_spm", 45)):
        spm.SentencePieceTrainer.train(input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / name),
                                       vocab_size=size, hard_vocab_limit=False, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_file=str(tmp_path / "am.model")).get_piece_size()
    _, _, aed = save_tiny_aed(str(tmp_path), vocab)
    tok = LLMTokenizer(spm_model=str(tmp_path / "llm_spm.model"))
    llm = tiny_random_qwen2(tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id, cfg=TinyLLMConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    save_llm(llm, tok, str(tmp_path / "llm"))
    write_noise_corpus(str(tmp_path), SENTENCES[:3])
    return {"aed_checkpoint": str(tmp_path / "aed.pt"), "aed_model_config": str(tmp_path / "model_config.json"),
            "am_spm_model": str(tmp_path / "am.model"), "llm": str(tmp_path / "llm"),
            "corpus": str(tmp_path / "dev.jsonl.gz"), "am_vocab": vocab, "aed": aed}


def test_build_speech_llm(tmp_path):
    from llmasr.models.conformer_modules import ConformerEncoder
    from llmasr.models.llm import load_llm_tokenizer
    from llmasr.models.speech_llm_modules import build_speech_llm
    from llmasr.search.speech_llm_scorer import SpeechLLMScorer

    torch.set_num_threads(1)
    files = speech_llm_files(tmp_path)
    llm_tok = load_llm_tokenizer(files["llm"])
    paths = {k: files[k] for k in ("llm", "aed_model_config")}
    cfg = SpeechLLMConfig(llm_training=LLMTraining.LORA, adapter_k=2)

    # own LLM units, encoder from the AED, prompt ids from the texts
    model, tok = build_speech_llm(cfg, aed_checkpoint=files["aed_checkpoint"], prompt_pre_text="the cat",
                                  prompt_post_text="sat", **paths)
    assert not hasattr(cfg, "encoder_dim") and model.cfg.options() == cfg.options()  # the options, resolved
    assert isinstance(model.encoder, ConformerEncoder) and model.cfg.encoder_dim == 32
    assert (model.cfg.bos_id, model.cfg.eos_id) == (llm_tok.bos_id, llm_tok.eos_id) == (tok.bos_id, tok.eos_id)
    assert model.cfg.prompt_pre == tuple(llm_tok.encode("the cat")) and model.cfg.prompt_post == tuple(
        llm_tok.encode("sat"))
    aed_enc = files["aed"].encoder.state_dict()
    assert all(torch.equal(v, aed_enc[k]) for k, v in model.encoder.state_dict().items())
    assert not model.llm.get_input_embeddings().weight.requires_grad  # LoRA, frozen embedding
    audio, lens = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    losses = model.compute_losses(audio, lens, [tok.encode("the cat"), tok.encode("a dog")])
    assert torch.isfinite(losses["ce"][0])

    # vocabulary swap to the AM units, cross-attention, aux CTC over the AM units + blank
    V_am = files["am_vocab"]
    xcfg = SpeechLLMConfig(interface=XATTN, llm_training=LLMTraining.LORA, ctc_vocab_size=V_am + 1,
                           aux_ctc_scale=0.5)
    swapped, am_tok = build_speech_llm(xcfg, am_spm_model=files["am_spm_model"], **paths)
    assert am_tok.vocab_size == V_am and swapped.llm.get_input_embeddings().weight.shape[0] == V_am
    assert swapped.llm.get_output_embeddings().weight.shape[0] == V_am
    assert swapped.llm.get_input_embeddings().weight.requires_grad  # new matrices train despite LoRA
    assert swapped.llm.get_output_embeddings().weight.requires_grad
    assert (swapped.cfg.bos_id, swapped.cfg.eos_id) == (am_tok.bos_id, am_tok.eos_id)
    assert not torch.equal(swapped.encoder.state_dict()[next(iter(aed_enc))], next(iter(aed_enc.values())))
    targets = [am_tok.encode("the cat sat"), am_tok.encode("a dog")]
    losses = swapped.compute_losses(audio, lens, targets)
    assert set(losses) == {"ce", "aux_ctc"} and all(torch.isfinite(v) for v, _ in losses.values())
    sc = SpeechLLMScorer(swapped.eval())
    sc.set_audio(audio, lens)
    lp, _ = sc.score(sc.initial_state(torch.tensor([0, 1])), torch.tensor([am_tok.bos_id] * 2))
    assert lp.shape == (2, V_am)

    # deterministic: a second build equals the first, and a saved state dict loads into it
    again, _ = build_speech_llm(xcfg, am_spm_model=files["am_spm_model"], **paths)
    state = swapped.state_dict()
    assert state.keys() == again.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        swapped.adapter.proj.weight.add_(1.0)
    again.load_state_dict(swapped.state_dict())
    assert torch.equal(again.adapter.proj.weight, swapped.adapter.proj.weight)
