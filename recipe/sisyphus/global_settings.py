"""Engine-wide settings (``gs``); a setup's ``settings.py`` overrides them when the engine starts.

Names follow upstream Sisyphus so that existing ``settings.py`` files work unchanged.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any, Dict

from sisyphus.hash import short_hash

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
JOB_AUTO_CLEANUP = False  # upstream's default is True; here opt-in (packs finished jobs, removes their work/)
JOB_CLEANUP_KEEP_WORK = False
JOB_CLEANUP_KEEP_INPUT = True
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
# Command that starts the worker (the engine appends "worker JOBDIR TASK"); recipes read SIS_COMMAND[0] as the
# Python that runs the engine (i6_core's worker calls)
SIS_COMMAND = [sys.executable, "-m", "sisyphus"]
SIS_HASH = short_hash  # the hash of job ids; changing it changes every job id
TMP_PREFIX = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sis_")
RAISE_VARIABLE_NOT_SET_EXCEPTION = True  # False: reading an unset Variable gives "<UNFINISHED VARIABLE: path>"

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


def file_caching(path: str) -> str:
    """Hook: where a task reads a ``cached=True`` path (e.g. a copy on local disk); the path itself by default."""
    return path


def update_engine_rqmt(last_rqmt: Dict[str, Any], last_usage: Dict[str, Any]) -> Dict[str, Any]:
    """Hook: resources for resubmitting an interrupted task; doubles time/memory that ran out, as upstream.

    ``last_usage`` holds ``used_time`` (hours), ``max`` ({"rss": GB}), and ``out_of_time``/``out_of_memory``
    where the engine knows them.
    """
    out = dict(last_rqmt)
    time_h = last_rqmt.get("time")
    if time_h and (last_usage.get("out_of_time") or time_h - last_usage.get("used_time", 0) < 0.1):
        out["time"] = time_h * 2
    mem = last_rqmt.get("mem")
    if mem and (last_usage.get("out_of_memory") or mem - last_usage.get("max", {}).get("rss", 0) < 0.25):
        out["mem"] = mem * 2
    return out


def check_engine_limits(current_rqmt: Dict[str, Any], task: Any) -> Dict[str, Any]:
    """Hook: caps the resources of every submission to what the cluster allows; unchanged by default."""
    return current_rqmt


def on_job_finished(job: Any) -> None:
    """Hook: called by the manager when it marks a job finished (e.g. to fix permissions of outputs)."""


def on_job_failure(job: Any) -> None:
    """Hook: called by the manager for each job in the error state, every loop (must be idempotent)."""


HOOKS = ("engine", "worker_wrapper", "file_caching", "update_engine_rqmt", "check_engine_limits",
         "on_job_finished", "on_job_failure")

# Upstream settings this engine accepts without acting on them (web UI, visualisation, caches, threads), and
# settings that recipe libraries read from gs (i6_core: RASR_ROOT, RETURNN_PYTHON_EXE, ...): no typo warning.
ACCEPTED_SETTINGS = frozenset("""
    CACHE_FINISHED_RESULTS CACHE_FINISHED_RESULTS_MAX_SIZE CACHE_FINISHED_RESULTS_PATH CLEANER_PRINT_ALIAS
    CLEAR_ERROR CONFIG_FILE_DEFAULT CONFIG_FUNCTION_DEFAULT CONFIG_PREFIX DELAYED_CHECK_FOR_WORKER ENGINE_LOG
    ENGINE_NOT_SETUP_WARNING ENGINE_SUBMIT ENVIRONMENT_SETTINGS ENVIRONMENT_SETTINGS_PREFIX FILESYSTEM_CACHE_TIME
    FINISHED_LOG GLOBAL_SETTINGS_FILE GRAPH_WORKER IMPORT_PATHS INCLUDE_CREATOR_STATE JOB_ADD_STACKTRACE_MAX_COUNT
    JOB_CLEANER_INTERVAL JOB_CLEANER_WORKER JOB_DEFAULT_KEEP_VALUE LEGACY_PATH_CONVERSION LEGACY_VARIABLE_CONVERSION
    MANAGER_SUBMIT_WORKER MEMORY_PROFILE_LOG PLOGGING_FILE PLOGGING_INTERVAL PLOGGING_MIN_CHANGE PLOGGING_QUIET
    PLOGGING_UPDATE_FILE_PERIOD PRINT_ERROR PRINT_ERROR_TASKS PRINT_HOLD PRINT_STALE_STATE_OVERVIEW_PERIOD
    PRINT_OLD_LOG_FILE_RUNNING SHOW_JOB_TARGETS SHOW_VIS_NAME_IN_MANAGER SKIP_IS_FINISHED_TIMEOUT
    TASK_INPUTS_MUST_BE_AVAILABLE TEAM_SHARE_DIR USE_SIGNAL_HANDLERS USE_UI USE_VERBOSE_TRACEBACK
    VERBOSE_TRACEBACK_TYPE VIS_ABSOLUTE_MERGE_THRESHOLD VIS_MAX_NODES_PER_VIEW VIS_RELATIVE_MERGE_THRESHOLD
    VIS_TIMEOUT WAIT_PERIOD_CACHE WAIT_PERIOD_FOR_INPUTS_AVAILABLE WAIT_PERIOD_HTTP_RETRY_BIND
    WAIT_PERIOD_JOB_CLEANUP WAIT_PERIOD_MTIME_OF_INPUTS WAIT_PERIOD_QSTAT_PARSING WAIT_PERIOD_SSH_TIMEOUT
    WARNING_ABSPATH WARNING_NO_FUNCTION_CALLED
    RASR_ROOT RASR_ARCH KALDI_PATH SCTK_PATH RETURNN_ROOT RETURNN_PYTHON_EXE RETURNN_COMMON WARNING_NO_SENTENCEPIECE
""".split())


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
        if name.isupper() or name in HOOKS:
            if name.isupper() and name not in g and name not in ACCEPTED_SETTINGS:
                logging.warning("%s: unknown setting %s (typo?)", path, name)
            g[name] = value


def set_base_dir(path: str) -> None:
    """Sets the setup directory all relative paths are resolved against."""
    global BASE_DIR
    BASE_DIR = os.path.abspath(path)
