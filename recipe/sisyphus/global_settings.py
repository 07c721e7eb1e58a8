"""Engine-wide settings (``gs``); a setup's ``settings.py`` overrides them when the engine starts.

Names follow upstream Sisyphus so that existing ``settings.py`` files work unchanged.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

# Directories, relative to the setup directory (BASE_DIR)
BASE_DIR = os.getcwd()
WORK_DIR = "work"
ALIAS_DIR = "alias"
OUTPUT_DIR = "output"
RECIPE_PREFIX = "recipe"
ALIAS_AND_OUTPUT_SUBDIR = ""
GLOBAL_SETTINGS_FILE_DEFAULT = "settings.py"

# Inside a job directory
JOB_WORK_DIR = "work"
JOB_OUTPUT = "output"
JOB_INPUT = "input"
JOB_LOG_ENGINE = "engine"
JOB_INFO = "info"
JOB_SAVE = "job.save"
JOB_LOG = "log"
JOB_USAGE = "usage"
JOB_SUBMIT_LOG = "submit_log"
JOB_FINISHED_MARKER = "finished"
JOB_FINISHED_ARCHIVE = "finished.tar.gz"
JOB_USE_TAGS_IN_PATH = False
JOB_AUTO_CLEANUP = False
JOB_CLEANUP_KEEP_WORK = False
JOB_MAX_NUMBER_OF_LOCKS = 100
JOB_ADD_STACKTRACE_WITH_DEPTH = 0
AUTO_SET_JOB_INIT_ATTRIBUTES = False
CLEANUP_ENVIRONMENT = False
DEFAULT_ENVIRONMENT_KEEP = set()
DEFAULT_ENVIRONMENT_SET = {}

# States of jobs and tasks
STATE_WAITING = "waiting"
STATE_RUNNABLE = "runnable"
STATE_QUEUE = "queue"
STATE_RUNNING = "running"
STATE_INTERRUPTED_RESUMABLE = "interrupted_resumable"
STATE_INTERRUPTED_NOT_RESUMABLE = "interrupted_not_resumable"
STATE_RETRY_ERROR = "retry_error"
STATE_ERROR = "error"
STATE_QUEUE_ERROR = "queue_error"
STATE_FINISHED = "finished"
STATE_UNKNOWN = "unknown"
STATE_HOLD = "hold"

# Manager behaviour
MAX_SUBMIT_RETRIES = 3  # resubmissions of an interrupted task without progress before it counts as an error
WAIT_PERIOD_BETWEEN_CHECKS = 2.0  # seconds between manager loops
WAIT_PERIOD_JOB_FS_SYNC = 0.0
PRINT_ERROR_LINES = 40
HEARTBEAT_PERIOD = 5.0  # seconds between the worker's usage updates
HEARTBEAT_TIMEOUT = 60.0  # a running task whose usage file is older than this is considered dead
SIS_COMMAND = None  # command that starts the worker; None: this Python with -m sisyphus

# Cluster defaults (read by the Slurm/SGE engines)
SLURM_PARTITION = None
SLURM_ACCOUNT = None
SGE_QUEUE = None


def engine() -> Any:
    """The engine the manager submits tasks to; ``settings.py`` overrides this."""
    from sisyphus.localengine import LocalEngine

    return LocalEngine()


def worker_wrapper(job: Any, task_name: str, call: list) -> list:
    """Hook to wrap the worker command (e.g. in a container); identity by default."""
    return call


def load_settings(path: str | None = None) -> None:
    """Overrides these settings with the upper-case names and ``engine`` defined in a settings file."""
    path = path or os.environ.get("SIS_GLOBAL_SETTINGS_FILE") or os.path.join(BASE_DIR, GLOBAL_SETTINGS_FILE_DEFAULT)
    if not os.path.isfile(path):
        logging.debug("no settings file %s, using defaults", path)
        return
    spec = importlib.util.spec_from_file_location("_sis_settings", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    g = globals()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if name.isupper() or name in ("engine", "worker_wrapper"):
            if name.isupper() and name not in g:
                logging.warning("%s: unknown setting %s (typo?)", path, name)
            g[name] = value


def set_base_dir(path: str) -> None:
    """Sets the setup directory all relative paths are resolved against."""
    global BASE_DIR
    BASE_DIR = os.path.abspath(path)
