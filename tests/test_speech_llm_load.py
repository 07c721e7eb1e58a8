"""Loading a trained speech LLM maps its checkpoint into the model (``mmap`` + ``assign``): the weights are the
checkpoint's, with no second copy held."""
import torch

from llmasr.models.speech_llm import LLMTraining, SpeechLLMConfig
from llmasr.models.speech_llm_modules import build_from_setup, load_speech_llm
from llmasr.returnn.speech_llm import SpeechLLMSetup, setup_to_dict
from sisyphus import tk
from tests.test_speech_llm import speech_llm_files


def test_load_speech_llm_takes_the_checkpoint_tensors(tmp_path):
    torch.set_num_threads(1)
    files = speech_llm_files(tmp_path)
    setup = setup_to_dict(SpeechLLMSetup(config=SpeechLLMConfig(llm_training=LLMTraining.LORA, adapter_k=2),
                                         llm=tk.Path(files["llm"]), aed_model_config=tk.Path(files["aed_model_config"]),
                                         aed_checkpoint=tk.Path(files["aed_checkpoint"])))
    trained, _ = build_from_setup(setup, with_aed_weights=True)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)  # differs from a fresh build everywhere
    ckpt = str(tmp_path / "epoch.001.pt")
    torch.save({"model": trained.state_dict(), "epoch": 1}, ckpt)
    model, _ = load_speech_llm(ckpt, setup)
    expected = trained.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.items())
    assert not model.training
    # the parameters are the checkpoint's memory-mapped tensors, not copies into the freshly built model
    mapped = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith("epoch.001.pt"):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                mapped.append((lo, hi))
    for p in (next(model.adapter.parameters()), model.llm.get_input_embeddings().weight):
        assert any(lo <= p.data_ptr() < hi for lo, hi in mapped), "parameter not memory-mapped from the checkpoint"
    audio, lens = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    with torch.no_grad():
        assert torch.allclose(model.encode(audio, lens)[0], trained.eval().encode(audio, lens)[0])
