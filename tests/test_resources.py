"""Resources are not identity: changing cpu, mem, time, gpu, device, threads, loader workers or search batch sizes
leaves every job's id unchanged, and ``update_rqmt`` changes how an existing job runs without a new id."""
import importlib
import inspect
import pkgutil

import pytest

import llmasr
from llmasr.resources import RESOURCE_ARGS, ResourceJob
from sisyphus import Job, tk


def _job_classes():
    for mod in pkgutil.walk_packages(llmasr.__path__, "llmasr."):
        importlib.import_module(mod.name)
    seen, todo = set(), [Job]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return sorted((c for c in seen if c.__module__.startswith("llmasr.")), key=lambda c: (c.__module__, c.__name__))


JOB_CLASSES = _job_classes()


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 4 + 3
    if value == "cpu":
        return "cuda"
    return f"{value}-other"


def _params(cls):
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def test_job_classes_are_discovered():
    names = {c.__name__ for c in JOB_CLASSES}
    assert {"ReturnnTrainingJob", "SpeechLLMTrainingJob", "DumpCtcLogProbsJob", "CTCFusionSearchJob",
            "FineTuneLLMJob", "MakeToyCorpusJob", "ScoreWERJob"} <= names
    assert len(JOB_CLASSES) > 35


@pytest.mark.parametrize("cls", JOB_CLASSES, ids=lambda c: c.__name__)
def test_resource_arguments_stay_out_of_the_hash(cls):
    assert issubclass(cls, ResourceJob), f"{cls.__module__}.{cls.__name__} must derive from ResourceJob"
    params = _params(cls)
    args = {n: (p.default if p.default is not p.empty else f"<{n}>") for n, p in params.items()}
    base = cls._sis_hash_static(args)
    resources = [n for n in params if n in cls.resource_args]
    assert RESOURCE_ARGS <= cls.resource_args
    for name in resources:
        changed = dict(args, **{name: _other_value(args[name] if args[name] is not None else 1)})
        assert cls._sis_hash_static(changed) == base, f"{cls.__name__}: {name} changes the job id"
    # anything that looks like a resource must be declared as one
    for name in params:
        if any(w in name for w in ("thread", "worker", "device", "rqmt", "per_batch")):
            assert name in cls.resource_args, f"{cls.__name__}.{name} looks like a resource but is hashed"
    # the hash still sees the real inputs
    for name in params:
        if name not in cls.resource_args:
            changed = dict(args, **{name: f"{args[name]}-changed"})
            assert cls._sis_hash_static(changed) != base, f"{cls.__name__}: {name} does not change the job id"


def _training(**kw):
    from llmasr.models.conformer import CtcModelConfig, tiny_encoder_config
    from llmasr.returnn.config import TrainingOptions
    from llmasr.returnn.training import ReturnnTrainingJob

    opts = kw.pop("options", TrainingOptions(num_epochs=2))
    d = kw.pop("data_dir", "/data")
    return ReturnnTrainingJob(CtcModelConfig(encoder=tiny_encoder_config()), tk.Path(f"{d}/train.zip"),
                              tk.Path(f"{d}/dev.zip"), tk.Path(f"{d}/spm.model"), options=opts, **kw)


def test_training_resources_and_option_resources_keep_the_id():
    from llmasr.returnn.config import TrainingOptions

    job = _training()
    assert _training(cpu=8, mem=64, time=120, gpu=4) is job  # the same job object: equal ids
    more = TrainingOptions(num_epochs=2, torch_threads=8, num_workers=4)
    assert _training(options=more).job_id() == job.job_id()
    assert _training(options=TrainingOptions(num_epochs=3)).job_id() != job.job_id()


def test_update_rqmt_changes_how_the_job_runs_not_its_id():
    job = _training()
    job_id = job.job_id()
    assert job.run_device() == "cpu" and job.run_gpus() == 0 and job.run_threads() == 2
    job.update_rqmt("run", {"gpu": 2, "cpu": 6, "time": 96})
    job.__dict__.pop("_sis_task_cache", None)  # a fresh graph load builds the tasks anew
    assert job.job_id() == job_id
    assert job.run_device() == "cuda" and job.run_gpus() == 2 and job.run_threads() == 6
    assert job.current_rqmt("run")["time"] == 96 and job.current_rqmt("run")["mem"] == 8


def test_update_rqmt_reaches_the_worker(tmp_path):
    """The manager re-saves job.save at every submission, so the worker's job sees the updated resources."""
    from sisyphus.job import load_job

    for name in ("train.zip", "dev.zip"):
        (tmp_path / name).write_bytes(b"")
    job = _training(data_dir=str(tmp_path))
    job.update_rqmt("run", {"gpu": 1})
    job._sis_setup_directory()
    loaded = load_job(job._sis_path(abspath=True))
    loaded.__dict__.pop("_sis_task_cache", None)
    assert loaded.run_device() == "cuda"
    params = loaded._training_params({"vocab_size": 10}, 10)
    assert params["device"] == "cuda" and "torch_distributed" not in params
