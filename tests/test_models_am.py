"""Conformer CTC/AED models, their searches and checkpoint helpers, without RETURNN processes."""
import itertools
import math
import os

import pytest
import torch

from llmasr.models.conformer import (AedModelConfig, CtcModelConfig, TransformerDecoderConfig, model_config_from_dict,
                                     model_config_to_dict, paper_aed_config, SpecAugmentConfig, tiny_encoder_config)
from llmasr.models.conformer_modules import ConformerAedModel, build_model, load_model_checkpoint
from llmasr.search.aed_scorer import AedDecoderScorer
from llmasr.models.augment import speed_perturb, vtlp_warp
from llmasr.returnn.config import (LearningRateSchedule, TrainingOptions, one_cycle_lr, piecewise_linear_lr,
                                   training_progress)
from sisyphus.hash import sis_hash_helper
from llmasr.returnn.steps import aed_search, ctc_beam, ctc_greedy, set_train_step
from llmasr.returnn.training import average_checkpoints, best_epoch, preload_options, read_learning_rates

V = 11


def _aed(seed=0, **kw) -> ConformerAedModel:
    torch.manual_seed(seed)
    cfg = AedModelConfig(encoder=tiny_encoder_config(), vocab_size=V, aux_ctc_layers=(1, 2), aux_ctc_scales=(0.3, 1.0),
                         decoder=TransformerDecoderConfig(num_layers=2, dim=32, num_heads=2, ff_dim=64, dropout=0.0,
                                                          att_dropout=0.0), **kw)
    return build_model(cfg).eval()


def _audio(lengths=(16000, 11000)):
    g = torch.Generator().manual_seed(1)
    audio = 0.1 * torch.randn(len(lengths), max(lengths), generator=g)
    lengths = torch.tensor(lengths)
    audio = audio * (torch.arange(audio.shape[1])[None] < lengths[:, None])
    return audio, lengths


def test_encoder_downsamples_6x_and_masks_padding():
    torch.set_num_threads(1)
    model = _aed()
    audio, lengths = _audio()
    enc, enc_lengths, ctc = model.encode(audio, lengths, with_ctc=True)
    frames = (lengths - 400) // 160 + 1  # 25 ms window, 10 ms shift
    assert enc_lengths.tolist() == ((frames + 5) // 6).tolist()
    assert enc.shape == (2, int(enc_lengths.max()), 32)
    assert set(ctc) == {1, 2} and ctc[2].shape[-1] == V + 1
    # batch padding does not change the length; utterances of a batch do not see each other
    enc_alone, len_alone, _ = model.encode(audio[1:, :11000], lengths[1:])
    assert int(len_alone[0]) == int(enc_lengths[1])
    enc_first, _, _ = model.encode(audio[:1], lengths[:1])
    assert torch.allclose(enc[0], enc_first[0], atol=1e-4)
    audio2 = torch.stack([audio[0], audio[0].flip(0)])
    enc_pair, _, _ = model.encode(audio2, lengths[[0, 0]])
    assert torch.allclose(enc_pair[0], enc_first[0], atol=1e-4)


@pytest.mark.parametrize("short", [11000, 11000 + 160 * 3, 4000])
def test_encoder_output_does_not_depend_on_batch_padding(short):
    """An utterance alone and inside a batch padded to a much longer one: same frames (the padding is zeroed before
    every convolution of the frontend and of the Conformer convolution modules)."""
    torch.set_num_threads(1)
    torch.manual_seed(3)
    model = build_model(CtcModelConfig(encoder=tiny_encoder_config(conv_kernel_size=15), vocab_size=V)).eval()
    audio, lengths = _audio((32000, short))
    with torch.no_grad():
        batched, batched_lens = model.encoder(audio, lengths)
        alone, alone_lens = model.encoder(audio[1:, :short], lengths[1:])
    n = int(alone_lens[0])
    assert int(batched_lens[1]) == n
    assert batched[0].shape[1] > n + 5  # the batch really is padded behind the short utterance
    assert (batched[0][1, :n] - alone[0][0, :n]).abs().max().item() <= 1e-5


def test_aed_cached_decoding_equals_full_forward():
    torch.set_num_threads(1)
    model = _aed()
    audio, lengths = _audio()
    enc, enc_lengths, _ = model.encode(audio, lengths)
    labels = torch.tensor([[1, 5, 7, 3, 9, 4], [1, 8, 8, 6, 3, 10]])
    full = model.decoder(labels, enc, enc_lengths).log_softmax(-1)
    scorer = AedDecoderScorer(model, enc, enc_lengths)
    # rows in a different order and duplicated, as a beam search would hold them
    state = scorer.initial_state(torch.tensor([1, 0, 1]))
    rows = torch.tensor([1, 0, 1])
    for t in range(labels.shape[1]):
        logp, state = scorer.score(state, labels[rows, t])
        assert torch.allclose(logp, full[rows, t], atol=1e-4), t
    assert torch.allclose(scorer.final_score(state), full[rows, -1, model.cfg.eos_idx], atol=1e-4)
    # select reorders the cache consistently
    state = scorer.select(state, torch.tensor([2, 1]))
    nxt = torch.tensor([2, 5])
    logp, _ = scorer.score(state, nxt)
    ext = torch.cat([labels[[1, 0]], nxt[:, None]], dim=1)
    ref = model.decoder(ext, enc[[1, 0]], enc_lengths[[1, 0]]).log_softmax(-1)[:, -1]
    assert torch.allclose(logp, ref, atol=1e-4)


def test_losses_are_finite_and_have_gradients():
    torch.set_num_threads(1)
    audio, lengths = _audio()
    targets, target_lengths = torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([3, 2])
    ctc = build_model(CtcModelConfig(encoder=tiny_encoder_config(num_layers=3), vocab_size=V, aux_ctc_layers=(1, 2),
                                     aux_ctc_scales=(0.2, 0.3))).train()
    losses = ctc.compute_losses(audio, lengths, targets, target_lengths)
    assert set(losses) == {"ctc", "aux_ctc_1", "aux_ctc_2"} and losses["aux_ctc_2"][1] == 0.3
    sum(v * s for v, s in losses.values()).backward()
    assert ctc.aux_outputs["1"].weight.grad.abs().sum() > 0 and ctc.output.weight.grad.abs().sum() > 0
    aed = _aed(label_smoothing=0.0).train()
    losses = aed.compute_losses(audio, lengths, targets, target_lengths)
    assert set(losses) == {"ce", "aux_ctc_1", "aux_ctc_2"}
    # CE without smoothing = -sum log p(labels + EOS | prefix) from the teacher-forced decoder
    aed.eval()
    enc, el, _ = aed.encode(audio, lengths)
    lp = aed.decoder(torch.tensor([[1, 4, 5, 6], [1, 7, 8, 0]]), enc, el).log_softmax(-1)
    ref = -(lp[0, 0, 4] + lp[0, 1, 5] + lp[0, 2, 6] + lp[0, 3, 2] + lp[1, 0, 7] + lp[1, 1, 8] + lp[1, 2, 2])
    assert float(aed.compute_losses(audio, lengths, targets, target_lengths)["ce"][0]) == pytest.approx(float(ref),
                                                                                                      rel=1e-4)


def test_specaugment_only_in_training():
    torch.set_num_threads(1)
    model = build_model(CtcModelConfig(encoder=tiny_encoder_config(), vocab_size=V))
    audio, lengths = _audio()
    model.eval()
    a, _, _ = model(audio, lengths)
    b, _, _ = model(audio, lengths)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(3)
    c, _, _ = model(audio, lengths)
    assert not torch.allclose(a, c)


def test_config_roundtrip_and_errors(tmp_path):
    cfg = paper_aed_config()
    assert cfg.encoder.num_layers == 16 and cfg.encoder.dim == 1024 and cfg.decoder.num_layers == 6
    assert model_config_from_dict(model_config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(CtcModelConfig(encoder=tiny_encoder_config()))
    with pytest.raises(ValueError, match="aux_ctc_layers entry 5"):
        build_model(CtcModelConfig(encoder=tiny_encoder_config(), vocab_size=V, aux_ctc_layers=(5,),
                                   aux_ctc_scales=(0.1,)))
    with pytest.raises(ValueError, match="eos_idx"):
        build_model(AedModelConfig(encoder=tiny_encoder_config(), vocab_size=V, eos_idx=V))
    with pytest.raises(ValueError, match="num_layer"):
        model_config_from_dict({"model_type": "ctc", "num_layer": 3})
    with pytest.raises(ValueError, match="model_type"):
        model_config_from_dict({"model_type": "rnnt"})
    model = _aed()
    path = str(tmp_path / "epoch.001.pt")
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    loaded = load_model_checkpoint(path, model_config_to_dict(model.cfg))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model_checkpoint(str(tmp_path / "missing.pt"), model.cfg)


def _exact_ctc_logprob(lp: torch.Tensor, labels, blank) -> float:
    """log p(labels) by enumerating all alignments (tiny T only)."""
    total = []
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed == list(labels):
            total.append(sum(float(lp[t, c]) for t, c in enumerate(path)))
    return float(torch.logsumexp(torch.tensor(total), 0)) if total else -math.inf


def test_ctc_searches_against_brute_force():
    g = torch.Generator().manual_seed(0)
    lp = (2 * torch.randn(5, 4, generator=g)).log_softmax(-1)  # T=5, labels 0..2, blank 3
    hyps = ctc_beam(lp[None], torch.tensor([5]), 3, beam_size=50, label_topk=4, nbest=50)[0]
    for labels, score, comps in hyps[:5]:
        assert score == pytest.approx(_exact_ctc_logprob(lp, labels, 3), abs=1e-4) and comps["ctc"] == score
    # the beam with enough width finds the most probable label sequence
    all_seqs = {tuple(c for i, c in enumerate(p) if c != 3 and (i == 0 or c != p[i - 1]))
                for p in itertools.product(range(4), repeat=5)}
    best = max(all_seqs, key=lambda s: _exact_ctc_logprob(lp, s, 3))
    assert tuple(hyps[0][0]) == best
    greedy = ctc_greedy(lp[None], torch.tensor([5]), blank=3)[0][0]
    path = lp.argmax(-1).tolist()
    assert greedy[0] == [c for i, c in enumerate(path) if c != 3 and (i == 0 or c != path[i - 1])]
    assert greedy[1] == pytest.approx(float(lp.max(-1).values.sum()))


def test_aed_beam_search_scores_and_length_norm():
    torch.set_num_threads(1)
    model = _aed()
    audio, lengths = _audio()
    enc, el, ctc = model.encode(audio, lengths, with_ctc=True)
    res = aed_search(model, enc, el, beam_size=3, max_len_ratio=0.5, length_norm_exponent=1.0)
    assert len(res) == 2
    for b, hyps in enumerate(res):
        assert [h[1] for h in hyps] == sorted([h[1] for h in hyps], reverse=True)
        for labels, score, comps in hyps:
            # the cached decoder steps give the full forward's log-probs, EOS included (forced at max length)
            seq = [model.cfg.bos_idx] + labels
            lp = model.decoder(torch.tensor([seq]), enc[b:b + 1], el[b:b + 1]).log_softmax(-1)[0]
            ref = sum(float(lp[i, c]) for i, c in enumerate(labels)) + float(lp[len(labels), model.cfg.eos_idx])
            assert comps["am"] == pytest.approx(ref, abs=1e-3)
            assert score == pytest.approx(ref / max(len(labels), 1), abs=1e-3)
    joint = aed_search(model, enc, el, beam_size=3, max_len_ratio=0.5, ctc_scale=0.5,
                       ctc_log_probs=ctc[2].log_softmax(-1))
    assert all("ctc" in h[2] for r in joint for h in r)
    for r in joint:
        for labels, score, comps in r:
            assert score == pytest.approx((0.5 * comps["am"] + 0.5 * comps["ctc"]) / max(len(labels), 1), abs=1e-3)


def test_one_cycle_lr_and_checkpoint_helpers(tmp_path):
    lrs = [one_cycle_lr(s / 100, 1e-3, 1e-5, 1e-6, 0.4) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 40
    assert lrs[80] == pytest.approx(1e-5) and lrs[100] == pytest.approx(1e-6)
    # the schedule follows the epochs (RETURNN's epoch_continuous) unless a step count is given
    assert training_progress(epoch=3, epoch_continuous=2.5, global_train_step=999, num_epochs=5) == pytest.approx(0.5)
    assert training_progress(epoch=3, epoch_continuous=None, global_train_step=999, num_epochs=4) == pytest.approx(0.5)
    assert training_progress(epoch=3, epoch_continuous=2.5, global_train_step=30, num_epochs=5,
                             total_steps=120) == pytest.approx(0.25)
    lr_file = tmp_path / "learning_rates"
    lr_file.write_text("{\n1: EpochData(learningRate=1.0, error={'dev_loss_ctc': 3.0, 'train_loss_ctc': inf}),\n"
                       "2: EpochData(learningRate=1.0, error={'dev_loss_ctc': 2.0}),\n"
                       "3: EpochData(learningRate=1.0, error={'dev_loss_ctc': 2.5}),\n}\n")
    data = read_learning_rates(str(lr_file))
    assert best_epoch(data, "dev_loss_ctc") == 2 and best_epoch(data, "dev_loss_ctc", epochs=[1, 3]) == 3
    with pytest.raises(ValueError, match="dev_loss_ce"):
        best_epoch(data, "dev_loss_ce")
    paths = []
    for i in range(3):
        p = str(tmp_path / f"epoch.{i}.pt")
        torch.save({"model": {"w": torch.full((2,), float(i)), "n": torch.tensor(i)}, "epoch": i}, p)
        paths.append(p)
    out = str(tmp_path / "avg.pt")
    average_checkpoints(paths, out)
    avg = torch.load(out)
    assert torch.allclose(avg["model"]["w"], torch.full((2,), 1.0)) and int(avg["model"]["n"]) == 2
    assert not os.path.exists(out + ".tmp")


def test_specaugment_starts_at_its_step():
    torch.set_num_threads(1)
    encoder = tiny_encoder_config(specaug=SpecAugmentConfig(start_step=100))
    model = build_model(CtcModelConfig(encoder=encoder, vocab_size=V))
    audio, lengths = _audio()
    model.eval()
    ref, _, _ = model(audio, lengths)
    model.train()
    set_train_step(model, 99)  # before start_step: no masking (dropout is 0 in the tiny config)
    torch.manual_seed(3)
    before, _, _ = model(audio, lengths)
    assert torch.allclose(ref, before, atol=1e-6)
    set_train_step(model, 100)
    torch.manual_seed(3)
    after, _, _ = model(audio, lengths)
    assert not torch.allclose(ref, after)


def test_piecewise_linear_lr_and_its_checks():
    points = ((0.0, 1e-5), (0.2, 1e-3), (0.8, 1e-3), (1.0, 0.0))
    assert piecewise_linear_lr(0.0, points) == pytest.approx(1e-5)
    assert piecewise_linear_lr(0.1, points) == pytest.approx((1e-5 + 1e-3) / 2)
    assert piecewise_linear_lr(0.5, points) == pytest.approx(1e-3)
    assert piecewise_linear_lr(0.9, points) == pytest.approx(5e-4) and piecewise_linear_lr(1.5, points) == 0.0
    opts = TrainingOptions(schedule=LearningRateSchedule.PIECEWISE_LINEAR, lr_points=points)
    opts.check()
    for bad in (((0.0, 1e-3),), ((0.1, 1e-3), (1.0, 0.0)), ((0.0, 1e-3), (0.6, 1e-3), (0.5, 0.0), (1.0, 0.0)),
                ((0.0, -1.0), (1.0, 0.0))):
        with pytest.raises(ValueError, match="lr_points"):
            TrainingOptions(schedule=LearningRateSchedule.PIECEWISE_LINEAR, lr_points=bad).check()
    # lr_points at its default stays out of the hash: options made before the field existed keep their value
    assert "lr_points" not in TrainingOptions().__sis_state__() and "lr_points" in opts.__sis_state__()
    assert sis_hash_helper(TrainingOptions()) != sis_hash_helper(opts)
    # the same for the encoder's speed perturbation: paper-scale AM jobs keep their ids
    assert "speed_perturbation" not in tiny_encoder_config().__sis_state__()
    assert sis_hash_helper(tiny_encoder_config()) != sis_hash_helper(tiny_encoder_config(speed_perturbation=(0.9,)))
    assert "vtlp" not in tiny_encoder_config().__sis_state__()
    assert sis_hash_helper(tiny_encoder_config()) != sis_hash_helper(tiny_encoder_config(vtlp=(0.9, 1.1)))


def test_speed_perturbation_scales_length_and_pitch():
    sr = 16000
    t = torch.arange(sr) / sr
    tone = torch.sin(2 * math.pi * 400 * t)
    audio = torch.stack([tone, torch.cat([tone[: sr // 2], torch.zeros(sr // 2)])])
    lengths = torch.tensor([sr, sr // 2])
    for f in (0.9, 1.1):
        out, out_lengths = speed_perturb(audio, lengths, (f,))
        assert out_lengths.tolist() == [round(sr / f), round(sr // 2 / f)]
        assert out.shape == (2, round(sr / f)) and not out[1, int(out_lengths[1]):].any()
        spec = torch.fft.rfft(out[0]).abs()
        assert float(spec.argmax()) * sr / out.shape[1] == pytest.approx(400 * f, abs=2)  # the tone moves with f
    same, same_lengths = speed_perturb(audio, lengths, (1.0,))
    assert torch.equal(same, audio) and torch.equal(same_lengths, lengths)
    with pytest.raises(ValueError, match="positive"):
        speed_perturb(audio, lengths, (0.0,))
    # in the encoder: only while training
    model = build_model(CtcModelConfig(encoder=tiny_encoder_config(speed_perturbation=(0.8,)), vocab_size=V))
    short, short_lengths = _audio()
    model.eval()
    _, eval_lengths, _ = model(short, short_lengths)
    model.train()
    _, train_lengths, _ = model(short, short_lengths)
    assert (train_lengths > eval_lengths).any() and (train_lengths >= eval_lengths).all()


def test_preload_options_take_the_encoder_of_another_model(tmp_path):
    ctc = build_model(CtcModelConfig(encoder=tiny_encoder_config(), vocab_size=V, aux_ctc_layers=(1,),
                                     aux_ctc_scales=(0.3,)))
    path = str(tmp_path / "epoch.001.pt")
    torch.save({"model": ctc.state_dict(), "epoch": 1}, path)
    opts = preload_options(path, ("encoder.",))
    assert opts["filename"] == path and opts["init_for_train"] is True and opts["ignore_missing"] is True
    assert set(opts["ignore_params"]) == {n for n in ctc.state_dict() if not n.startswith("encoder.")}
    assert "output.weight" in opts["ignore_params"]
    # what RETURNN then does: the AED's encoder equals the CTC model's, the decoder keeps its own initialisation
    aed = build_model(AedModelConfig(encoder=tiny_encoder_config(), vocab_size=V))
    state = {k: v for k, v in ctc.state_dict().items() if k not in opts["ignore_params"]}
    missing, unexpected = aed.load_state_dict(state, strict=False)
    assert not unexpected and all(not k.startswith("encoder.") for k in missing)
    aed_state = aed.state_dict()
    assert state and all(torch.equal(aed_state[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="no parameter starting with"):
        preload_options(path, ("decoder.",))
    with pytest.raises(FileNotFoundError, match="init checkpoint"):
        preload_options(str(tmp_path / "missing.pt"), ("encoder.",))
    # the AED's aux CTC layer on the last encoder layer from the CTC model's output layer
    mapping = {"aux_outputs.2.weight": "output.weight", "aux_outputs.2.bias": "output.bias"}
    opts = preload_options(path, ("encoder.",), mapping)
    assert opts["var_name_mapping"] == mapping and "output.weight" not in opts["ignore_params"]
    with pytest.raises(ValueError, match="does not have"):
        preload_options(path, ("encoder.",), {"aux_outputs.2.weight": "nope.weight"})


def test_vtlp_moves_low_frequencies_by_the_factor_and_keeps_nyquist():
    sr, n_fft = 16000, 512
    t = torch.arange(n_fft) / sr
    tones = torch.sin(2 * math.pi * 1000 * t) + 0.5 * torch.sin(2 * math.pi * 7500 * t)
    spec = (torch.fft.rfft(tones * torch.hann_window(n_fft)).abs() ** 2)[None, None].repeat(1, 3, 1)  # [1, T, K]
    hz_per_bin = sr / n_fft
    for a in (0.9, 1.1):
        warped = vtlp_warp(spec, (a, a), sr)
        assert warped.shape == spec.shape
        low = warped[0, 0, : int(3000 / hz_per_bin)]
        assert float(low.argmax()) * hz_per_bin == pytest.approx(1000 * a, abs=hz_per_bin)  # below the knee: a * f
        assert torch.equal(warped[0, 0], warped[0, 2])  # one factor for all frames of an utterance
        assert float(warped[0, 0, -1]) == pytest.approx(float(spec[0, 0, -1]), rel=1e-4)  # Nyquist stays
        high = warped[0, 0, int(6000 / hz_per_bin):]
        peak = 6000 + float(high.argmax()) * hz_per_bin  # above the knee the map is milder than a * f
        assert abs(peak - 7500) < abs(7500 * a - 7500)
    assert torch.allclose(vtlp_warp(spec, (1.0, 1.0), sr), spec)
    # each utterance draws its own factor
    batch = spec.repeat(8, 1, 1)
    warped = vtlp_warp(batch, (0.8, 1.2), sr, generator=torch.Generator().manual_seed(0))
    assert len({int(w[0, : int(3000 / hz_per_bin)].argmax()) for w in warped}) > 1
    with pytest.raises(ValueError, match="0 < low <= high"):
        vtlp_warp(spec, (1.1, 0.9), sr)
    with pytest.raises(ValueError, match="vtlp"):
        tiny_encoder_config(vtlp=(0.9,))
    # in the encoder: only while training
    model = build_model(CtcModelConfig(encoder=tiny_encoder_config(vtlp=(0.8, 0.8)), vocab_size=V))
    audio, lengths = _audio()
    model.eval()
    clean = model.encoder.features(audio, lengths)[0]
    torch.manual_seed(0)
    warped_feats = model.encoder.features(audio, lengths, model.encoder.cfg.vtlp)[0]
    assert not torch.allclose(clean, warped_feats)
    with torch.no_grad():
        first, _, _ = model(audio, lengths)
        second, _, _ = model(audio, lengths)
    assert torch.equal(first, second)  # no warping at evaluation
    plain = build_model(CtcModelConfig(encoder=tiny_encoder_config(), vocab_size=V))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.no_grad():
        assert torch.equal(plain(audio, lengths)[0], first)  # the same as a model without VTLP
