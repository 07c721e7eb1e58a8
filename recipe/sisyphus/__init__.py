"""A workflow engine compatible with RWTH Sisyphus: jobs, paths, a manager, local/Slurm/SGE engines.

``from sisyphus import *`` gives what recipes use: Job, Task, Path, Variable, gs, tk, setup_path.
"""
import sisyphus.global_settings as gs
from sisyphus.job import Job
from sisyphus.job_path import Path, Variable
from sisyphus.task import Task
import sisyphus.toolkit as tk
from sisyphus.toolkit import setup_path

__version__ = "1.0.0"
__all__ = ["Job", "Task", "Path", "Variable", "gs", "tk", "setup_path"]
