"""The paper's model options (relu^2, conv-subsampling front end, RMSNorm / gated FF / RoPE decoder) and the sizes of
the paper-scale models, counted on the meta device (no memory, no weights)."""
import pytest
import torch

from llmasr.models.conformer import (AedModelConfig, DecoderEmbeddingInit, DecoderNorm, DecoderPositions,
                                     FeedForwardActivation, FrontendType, TransformerDecoderConfig,
                                     model_config_from_dict, model_config_to_dict, paper_aed_config, paper_ctc_config,
                                     tiny_encoder_config)
from llmasr.models.conformer_modules import build_model, relu_squared
from llmasr.search.aed_scorer import AedDecoderScorer

V = 11


def _paper_style_aed(seed: int = 0):
    torch.manual_seed(seed)
    enc = tiny_encoder_config(ff_activation=FeedForwardActivation.RELU_SQUARED, frontend=FrontendType.CONV_SUBSAMPLE,
                              frontend_conv_channels=(4, 8, 8))
    dec = TransformerDecoderConfig(num_layers=2, dim=32, num_heads=2, ff_dim=48, dropout=0.0, att_dropout=0.0,
                                   norm=DecoderNorm.RMS_NORM, gated_ff=True, positions=DecoderPositions.ROPE)
    return build_model(AedModelConfig(encoder=enc, decoder=dec, vocab_size=V, aux_ctc_layers=(1, 2),
                                      aux_ctc_scales=(0.3, 1.0))).eval()


def test_paper_style_encoder_downsamples_6x_and_ignores_batch_padding():
    torch.set_num_threads(1)
    model = _paper_style_aed()
    assert isinstance(model.decoder.final_ln, torch.nn.RMSNorm)
    assert model.encoder.conformer.module_list[0].module_list[0].activation is relu_squared
    lengths = torch.tensor([16000, 11000])
    audio = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(1))
    audio = audio * (torch.arange(16000)[None] < lengths[:, None])
    enc, enc_lengths, _ = model.encode(audio, lengths)
    frames = (lengths - 400) // 160 + 1
    assert enc_lengths.tolist() == ((frames + 5) // 6).tolist()
    alone, _, _ = model.encode(audio[:1], lengths[:1])
    assert torch.allclose(enc[0], alone[0], atol=1e-4)
    short, short_len, _ = model.encode(audio[1:, :11000], lengths[1:])  # the padded one, without its padding
    n = int(short_len[0])
    assert n == int(enc_lengths[1]) and torch.allclose(enc[1, :n], short[0, :n], atol=1e-4)


def test_rope_rmsnorm_gated_decoder_cached_steps_equal_full_forward():
    torch.set_num_threads(1)
    model = _paper_style_aed()
    enc = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(2))
    enc_lengths = torch.tensor([7, 5])
    labels = torch.tensor([[1, 5, 7, 3, 9], [1, 8, 8, 6, 3]])
    full = model.decoder(labels, enc, enc_lengths).log_softmax(-1)
    scorer = AedDecoderScorer(model, enc, enc_lengths)
    rows = torch.tensor([1, 0, 1])
    state = scorer.initial_state(rows)
    for t in range(labels.shape[1]):
        logp, state = scorer.score(state, labels[rows, t])
        assert torch.allclose(logp, full[rows, t], atol=1e-4), t
    # RoPE makes the output depend on the order of the labels (sinusoids are gone from the embedding)
    swapped = model.decoder(labels[:, [0, 2, 1, 3, 4]], enc, enc_lengths).log_softmax(-1)
    assert not torch.allclose(swapped[:, 2], full[:, 2], atol=1e-3)


def test_new_options_round_trip_and_keep_old_hashes():
    from sisyphus.hash import sis_hash_helper

    cfg = paper_aed_config(10240)
    d = model_config_to_dict(cfg)
    assert d["encoder"]["ff_activation"] == "relu_squared" and d["decoder"]["positions"] == "rope"
    assert model_config_from_dict(d) == cfg
    assert d["decoder"]["embedding_init"] == "scaled"
    # a config at the old defaults hashes as before the options existed
    old = TransformerDecoderConfig(num_layers=2, embedding_init=DecoderEmbeddingInit.UNIT)
    state = dict(old.__dict__)
    for name in ("norm", "gated_ff", "positions", "embedding_init"):
        del state[name]
    assert sis_hash_helper(old) != sis_hash_helper(cfg.decoder)
    assert old.__sis_state__() == state
    # the scaled embedding init is a new model, so it gets a new hash
    assert "embedding_init" in TransformerDecoderConfig(num_layers=2).__sis_state__()


@pytest.mark.parametrize("init,rms", [(DecoderEmbeddingInit.SCALED, 1.0), (DecoderEmbeddingInit.UNIT, 16.0)])
def test_decoder_embedding_init_keeps_positions_visible(init, rms):
    """Scaled by sqrt(dim) = 16, N(0, 1/dim) embeddings are as large as the sinusoidal positions (RMS 0.71); torch's
    N(0, 1) would be 16 times larger and drown them."""
    from llmasr.models.conformer_modules import TransformerDecoder, sinusoidal_positions

    torch.manual_seed(0)
    decoder = TransformerDecoder(TransformerDecoderConfig(num_layers=1, dim=256, num_heads=4, ff_dim=64,
                                                          embedding_init=init), enc_dim=8, vocab_size=500)
    scaled = decoder.embedding.weight * 256 ** 0.5
    assert float(scaled.pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.05)
    positions = sinusoidal_positions(torch.arange(100), 256)
    assert float(positions.pow(2).mean().sqrt()) == pytest.approx(0.5 ** 0.5, rel=0.05)


# one Conformer block of 1024: two FF modules (LN + 1024 x 4096 x 1024), MHSA (LN + in/out projections), conv module
# (LN + pointwise 1024 -> 2048, depthwise 31, LayerNormNC, pointwise 1024), final LN
BLOCK = 2 * (2 * 1024 * 4096 + 4096 + 1024 + 2 * 1024) + (4 * 1024 * 1024 + 4 * 1024 + 2 * 1024) \
    + (1024 * 2048 + 2048 + 1024 * 31 + 1024 + 1024 * 1024 + 1024 + 4 * 1024) + 2 * 1024
# conv front end: 3x3 convs 1 -> 32 -> 64 -> 64, 80 mel bins pooled to 40, linear 40 * 64 -> 1024
FRONTEND = (1 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + (40 * 64 * 1024 + 1024)


def _meta_count(module_builder) -> int:
    with torch.device("meta"):
        module = module_builder()
    return sum(p.numel() for p in module.parameters())


def test_paper_scale_parameter_counts():
    """The paper's AMs are ~0.5B-parameter models: 16 Conformer blocks of 1024 (each ~25.2M: two FF modules of
    2 x 1024 x 4096, MHSA 4 x 1024^2, conv module 2 x 1024 x 2048 + 1024 x 31 + 1024^2) and a 6 x 1024 decoder."""
    ctc = _meta_count(lambda: build_model(paper_ctc_config(10240)))
    aed = _meta_count(lambda: build_model(paper_aed_config(10240)))
    block, frontend = BLOCK, FRONTEND
    heads = 3 * (1024 * 10241 + 10241)  # CTC output on layer 16 and aux CTC on layers 4 and 10
    print(f"paper CTC AM: {ctc / 1e6:.1f}M parameters; paper AED: {aed / 1e6:.1f}M parameters")
    assert ctc == 16 * block + frontend + heads
    assert 420e6 < ctc < 440e6
    linear = lambda i, o: i * o + o  # noqa: E731
    norms = 3 * 1024  # RMSNorm: a scale, no bias
    decoder_layer = norms + linear(1024, 3072) + linear(1024, 1024) + linear(1024, 1024) + linear(1024, 2048) \
        + linear(1024, 1024) + 2 * linear(1024, 2816) + linear(2816, 1024)
    decoder = 10240 * 1024 + 6 * decoder_layer + 1024 + 1024 * 10240 + 10240
    assert aed == ctc + decoder
    assert 530e6 < aed < 560e6


@pytest.mark.parametrize("size,expected", [("Qwen/Qwen2-0.5B", (490e6, 500e6)), ("Qwen/Qwen2-1.5B", (1.50e9, 1.56e9))])
def test_paper_scale_speech_llm_parameter_count(size, expected):
    """Speech LLM = 18 x 1024 encoder (aux CTC at 16, 18) + frame-stacking adapter (k=2) + Qwen2 (configs as
    published on the hub, built on the meta device) + rsLoRA r=320 on q/v."""
    from config.paper import PAPER_LORA, QWEN2_ARCHITECTURES, paper_speech_llm_encoder_config
    from llmasr.models.conformer_modules import ConformerEncoder
    from llmasr.models.speech_llm import SpeechLLMConfig
    from llmasr.models.speech_llm_modules import SpeechLLM
    from transformers import Qwen2Config, Qwen2ForCausalLM

    arch = QWEN2_ARCHITECTURES[size]
    enc_cfg = paper_speech_llm_encoder_config()
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(Qwen2Config(**arch))
        llm_params = sum(p.numel() for p in llm.parameters())
        encoder = ConformerEncoder(enc_cfg)
        cfg = SpeechLLMConfig(adapter_k=2, llm_training="lora", ctc_vocab_size=10241, aux_ctc_scale=1.0,
                              aux_ctc_layers=(16, 18), **PAPER_LORA.speech_llm_fields()).resolve(
            encoder_dim=1024, bos_id=0, eos_id=1)
        model = SpeechLLM(cfg, encoder, llm)
    total = sum(p.numel() for p in model.parameters())
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    enc = sum(p.numel() for p in encoder.parameters())
    hidden, layers = arch["hidden_size"], arch["num_hidden_layers"]
    kv = hidden // arch["num_attention_heads"] * arch["num_key_value_heads"]
    assert lora == layers * 320 * ((hidden + hidden) + (hidden + kv))  # A: in x r, B: r x out for q and v
    assert expected[0] < llm_params < expected[1]
    print(f"speech LLM with {size}: {total / 1e6:.0f}M parameters (encoder {enc / 1e6:.0f}M, LLM "
          f"{llm_params / 1e6:.0f}M, LoRA {lora / 1e6:.1f}M)")
    assert enc == 18 * BLOCK + FRONTEND
    assert total == enc + llm_params + lora + (2 * 1024 * hidden + hidden) + 2 * (1024 * 10241 + 10241)
