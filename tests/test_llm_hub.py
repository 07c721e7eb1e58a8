"""DownloadHFModelJob through the hub client on a hub-format cache made here (offline): a tiny random Qwen2 with a
byte-level BPE tokenizer without BOS, pinned by commit hash, read by an LLM job from the download's output."""
import json
import os

import pytest

from sisyphus import tk

REPO = "test-org/tiny-qwen2"
REVISION = "0123456789abcdef0123456789abcdef01234567"
TEXT = ["the cat sat on the mat", "a dog ran in the park", "she sells sea shells by the shore"]


def make_hub_cache(root: str) -> str:
    """``<root>/models--test-org--tiny-qwen2/{snapshots/<rev>/..., refs/main}`` as the hub client lays it out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmasr.models.llm import tiny_random_qwen2

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT * 5, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    assert hf_tok.bos_token_id is None  # as Qwen2's
    eos = hf_tok.eos_token_id
    model = tiny_random_qwen2(len(hf_tok), bos_id=eos, eos_id=eos)
    model.config.bos_token_id = None
    repo_dir = os.path.join(root, "models--" + REPO.replace("/", "--"))
    snapshot = os.path.join(repo_dir, "snapshots", REVISION)
    model.save_pretrained(snapshot)
    hf_tok.save_pretrained(snapshot)
    os.makedirs(os.path.join(repo_dir, "refs"))
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(REVISION)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = str(tmp_path / "hub_cache")
    snapshot = make_hub_cache(cache)
    monkeypatch.setenv("HF_HUB_CACHE", cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_download_job_then_llm_job_reads_its_output(hub_cache, tmp_path, run_job):
    from llmasr.llm.hub import DownloadHFModelJob
    from llmasr.llm.perplexity import ComputePerplexityJob
    from llmasr.models.llm import load_llm_tokenizer

    download = DownloadHFModelJob(REPO, revision=REVISION)
    assert DownloadHFModelJob(REPO, revision="f" * 40).job_id() != download.job_id()  # the revision is identity
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n")
    ppl = ComputePerplexityJob(download.out_model, tk.Path(str(text)), batch_size=2)
    run_job(ppl)
    out = download.out_model.get_path()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    assert not any(os.path.islink(os.path.join(out, n)) for n in os.listdir(out))  # no links into the cache
    with open(os.path.join(out, "hub_source.json")) as f:
        assert json.load(f) == {"repo_id": REPO, "revision": REVISION, "commit": REVISION}
    tok = load_llm_tokenizer(out)
    assert tok.bos_id == tok.eos_id  # no BOS in the tokenizer: sentences start with EOS
    with open(ppl.out_ppl.get_path()) as f:
        res = json.load(f)
    assert res["num_sentences"] == 3 and 1 < res["subword_ppl"] < 10 * tok.vocab_size


def test_download_job_checks_its_arguments_and_the_snapshot(hub_cache, tmp_path):
    from llmasr.llm.hub import DownloadHFModelJob, copy_snapshot

    with pytest.raises(ValueError, match="owner/name"):
        DownloadHFModelJob("no-owner", revision=REVISION)
    with pytest.raises(ValueError, match="revision"):
        DownloadHFModelJob(REPO, revision="")
    os.remove(os.path.join(hub_cache, "tokenizer.json"))
    os.remove(os.path.join(hub_cache, "tokenizer_config.json"))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        copy_snapshot(hub_cache, str(tmp_path / "out"))
