"""Attention maps of speech LLMs: weights and segments of both interfaces, the plot, and PlotAttentionJob."""
import json
import os

import pytest
import torch

from sisyphus import tk

from llmasr.models.speech_llm import LLMTraining, SpeechInterface, SpeechLLMConfig
from llmasr.models.speech_llm_modules import build_speech_llm
from llmasr.scoring.attention_plot import PlotAttentionJob, is_self_attention, plot_attention, speech_attention_share
from tests.test_speech_llm import XATTN, _audio, _model, speech_llm_files


def _covered(segments, names, length):
    """The ranges of ``names`` are disjoint and cover 0..length."""
    pos = 0
    for start, end in sorted(r for n in names for r in segments[n]):
        if start != pos:
            return False
        pos = end
    return pos == length


def test_prefix_attention_weights():
    torch.set_num_threads(1)
    model = _model(LLMTraining.LORA)
    audio, lens = _audio()
    target = [3, 4, 9]
    impl = model.llm.get_base_model().config._attn_implementation
    w, seg = model.attention_weights(audio[1, :26], 26, target, layer=0)
    n_speech = int(model.adapter(*model.encode(audio[1:2, :26], lens[1:2]))[1])
    length = 2 + n_speech + 1 + 1 + len(target)  # prompt_pre, speech, prompt_post, BOS, text
    assert w.shape == (4, length, length)
    assert seg == {"prompt": [(0, 2), (2 + n_speech, 3 + n_speech)], "speech": [(2, 2 + n_speech)],
                   "text": [(3 + n_speech, length)]}
    assert _covered(seg, seg, length) and is_self_attention(w.shape, seg)
    assert torch.allclose(w.sum(-1), torch.ones(4, length), atol=1e-5)
    assert float(w.triu(1).abs().max()) == 0.0  # causal
    assert model.llm.get_base_model().config._attn_implementation == impl  # eager only while extracting
    w_last, _ = model.attention_weights(audio[1:2, :26], lens[1:2], target)
    assert not torch.allclose(w_last, w)


def test_cross_attention_weights():
    torch.set_num_threads(1)
    model = _model(interface=XATTN, cross_attention_every=2)
    audio, lens = _audio()
    w, seg = model.attention_weights(audio[0], 40, [3, 4])
    frames = int(model.adapter(*model.encode(audio[:1], lens[:1]))[1])
    assert w.shape == (4, 3 + 1 + 2, frames)
    assert seg == {"prompt": [(0, 3)], "speech": [(0, frames)], "text": [(3, 6)]}
    assert _covered(seg, ["prompt", "text"], 6) and _covered(seg, ["speech"], frames)
    assert not is_self_attention(w.shape, seg)
    assert torch.allclose(w.sum(-1), torch.ones(4, 6), atol=1e-5)


def test_plot_attention_writes_png(tmp_path):
    torch.manual_seed(0)
    w = torch.rand(2, 7, 7).tril().softmax(-1)
    seg = {"prompt": [(0, 1), (4, 5)], "speech": [(1, 4)], "text": [(5, 7)]}
    out = str(tmp_path / "a.png")
    plot_attention(w, seg, out, "self", text_tokens=["<s>", "x"])
    plot_attention(torch.rand(3, 4, 9).softmax(-1), {"prompt": [(0, 1)], "speech": [(0, 9)], "text": [(1, 4)]},
                   str(tmp_path / "b.png"), "cross")
    for name in ("a.png", "b.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.png"]  # no temp files left
    with pytest.raises(ValueError, match="shape"):
        plot_attention(torch.rand(7), seg, out)


@pytest.mark.parametrize("interface", [SpeechInterface.PREFIX, XATTN])
def test_plot_attention_job(run_job, tmp_path, interface):
    torch.set_num_threads(1)
    files = speech_llm_files(tmp_path)
    cfg = SpeechLLMConfig(interface=interface, llm_training=LLMTraining.LORA, adapter_k=2)
    setup = {"config": cfg, "llm": tk.Path(files["llm"]), "aed_model_config": tk.Path(files["aed_model_config"]),
             "am_spm_model": tk.Path(files["am_spm_model"]), "prompt_pre_text": "the", "prompt_post_text": "cat"}
    # a "trained" model: built like the job builds it, then changed, saved as a RETURNN checkpoint
    plain = {k: (v.get_path() if isinstance(v, tk.Path) else v) for k, v in setup.items() if k != "config"}
    model, tok = build_speech_llm(cfg, aed_checkpoint=files["aed_checkpoint"], **plain)
    with torch.no_grad():
        model.adapter.proj.weight.mul_(3.0)
        for name, p in model.named_parameters():
            if name.endswith("cross_attn.gate"):
                p.fill_(0.5)
    torch.save({"model": model.state_dict(), "epoch": 1}, tmp_path / "epoch.001.pt")
    job = run_job(PlotAttentionJob(tk.Path(str(tmp_path / "epoch.001.pt")), setup, tk.Path(files["corpus"]),
                                   utterances=2, layers=(-1, 0)))
    out_dir = job.out_dir.get_path()
    with open(job.out_index.get_path()) as f:
        index = json.load(f)
    assert [(e["id"], e["layer"]) for e in index] == [("u0", 1), ("u0", 0), ("u1", 1), ("u1", 0)]
    assert sorted(os.listdir(out_dir)) == sorted([e["file"] for e in index] + ["index.json"])
    for e in index:
        with open(os.path.join(out_dir, e["file"]), "rb") as f:
            assert f.read(4) == b"\x89PNG"
        assert e["kind"] == ("self" if interface == SpeechInterface.PREFIX else "cross")
    # the plotted weights are those of the checkpoint's model on the reference text
    model.eval()
    from llmasr.data.audio import load_audio
    from llmasr.data.corpus import read_corpus

    entry = read_corpus(files["corpus"])[1]
    audio = torch.from_numpy(load_audio(entry.audio))
    w, seg = model.attention_weights(audio, audio.shape[0], tok.encode(entry.text), layer=-1)
    assert index[2]["shape"] == list(w.shape)
    assert index[2]["segments"] == {k: [list(r) for r in v] for k, v in seg.items()}
    if interface == SpeechInterface.PREFIX:
        t0, t1 = seg["text"][0]
        s0, s1 = seg["speech"][0]
        share = float(w[:, t0:t1, s0:s1].sum(-1).mean())
        assert index[2]["speech_attention"] == pytest.approx(share, abs=1e-5) == speech_attention_share(w, seg)
        fresh, _ = build_speech_llm(cfg, **plain)  # not the checkpoint's weights: other attention
        w_fresh, _ = fresh.eval().attention_weights(audio, audio.shape[0], tok.encode(entry.text), layer=-1)
        assert speech_attention_share(w_fresh, seg) != pytest.approx(share, abs=1e-5)
    else:
        assert [e["gate"] for e in index] == pytest.approx([float(torch.tanh(torch.tensor(0.5)))] * 4)
