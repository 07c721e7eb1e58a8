"""Data-parallel AM training for real on the CPU: 2 RETURNN processes (gloo) started with the job's own torchrun
command line; both ranks end with identical weights and the dev loss is close to a single-process run."""
import os
import subprocess

import pytest
import torch

import sisyphus.global_settings as gs
from sisyphus.job import created_jobs

from llmasr.models.conformer import CtcModelConfig, tiny_encoder_config
from llmasr.returnn.config import TrainingOptions
from llmasr.returnn.training import ReturnnTrainingJob, read_learning_rates, returnn_command, returnn_env
from tests.test_returnn_am import data, pytestmark  # noqa: F401 (the espeak-ng corpus fixture and its skip mark)

# test instrumentation appended to the config: every rank also saves its weights at the end of each epoch
SAVE_EVERY_RANK = '''
import returnn.torch.engine as _engine
_save_model = _engine.Engine._save_model
def _save_every_rank(self):
    import os, torch
    torch.save(self._pt_model.state_dict(), "rank%s.epoch%d.pt" % (os.environ.get("RANK", "0"), self.epoch))
    _save_model(self)
_engine.Engine._save_model = _save_every_rank
'''


def _train(data, processes: int):
    opts = TrainingOptions(num_epochs=1, batch_size_seconds=8, learning_rate=2e-3, torch_threads=1)
    job = ReturnnTrainingJob(CtcModelConfig(encoder=tiny_encoder_config()), data["train"], data["dev"], data["spm"],
                             options=opts, cpu=processes)
    job.update_rqmt("run", {"processes": processes})
    job.__dict__.pop("_sis_task_cache", None)
    assert job.run_processes() == processes and job.run_device() == "cpu"
    job._sis_setup_directory()
    job.create_files()
    config = job.out_returnn_config.get_path()
    with open(config) as f:
        text = f.read()
    assert ("torch_distributed" in text) == (processes > 1) and "cuda" not in text and "torch_amp" not in text
    assert ("'dataset_distribution': 'shard'" in text) == (processes > 1)  # an epoch is one pass over the data
    with open(config, "a") as f:
        f.write(SAVE_EVERY_RANK)
    work = job._sis_path("work", abspath=True)
    os.makedirs(job.out_model_dir.get_path(), exist_ok=True)
    cmd = returnn_command(config, processes)  # what ReturnnTrainingJob.run starts
    if processes > 1:
        assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    with open(os.path.join(work, "returnn.log"), "w") as log:
        proc = subprocess.run(cmd, cwd=work, env=returnn_env(1), stdout=log, stderr=subprocess.STDOUT, timeout=1500)
    log_text = open(os.path.join(work, "returnn.log")).read()
    assert proc.returncode == 0, log_text[-3000:]
    ranks = [torch.load(os.path.join(work, f"rank{r}.epoch1.pt"), map_location="cpu") for r in range(processes)]
    dev_loss = read_learning_rates(job.out_learning_rates.get_path())[1]["error"]["dev_loss_ctc"]
    return ranks, dev_loss


def test_two_process_ddp_on_cpu_matches_single_process(data, tmp_path, monkeypatch):
    ranks, ddp_loss = _train(data, 2)
    assert ranks[0].keys() == ranks[1].keys()
    for name, w in ranks[0].items():
        assert torch.equal(w, ranks[1][name]), f"rank weights differ in {name}"
    monkeypatch.setattr(gs, "WORK_DIR", str(tmp_path / "work_single"))
    created_jobs.clear()
    single, single_loss = _train(data, 1)
    assert any(not torch.equal(w, single[0][n]) for n, w in ranks[0].items())  # DDP really trained differently
    # one epoch over 12 utterances: half the batches per rank, so the losses agree only roughly
    assert ddp_loss == pytest.approx(single_loss, rel=0.25)
