"""Recipes written for upstream Sisyphus (i6_core's idioms) run unchanged: imports, Job.sh, settings, a manager run."""
import importlib
import logging
import os
import shutil
import subprocess
import sys

import pytest

import sisyphus.global_settings as gs
from sisyphus import tk, tools

# every name i6_core imports from the engine (from its modules' import lines and tk./gs. uses)
I6_CORE_IMPORTS = {
    "sisyphus": ["Job", "Task", "Path", "Variable", "gs", "tk", "setup_path", "global_settings", "toolkit"],
    "sisyphus.delayed_ops": ["Delayed", "DelayedBase", "DelayedFormat", "DelayedJoin", "DelayedAdd",
                             "DelayedFallback", "DelayedFunction", "DelayedGetItem", "DelayedTrueDiv"],
    "sisyphus.hash": ["sis_hash_helper", "short_hash"],
    "sisyphus.tools": ["try_get", "extract_paths", "sh", "sis_hash"],
    "sisyphus.http_server": ["object_to_html"],
    "sisyphus.job_path": ["AbstractPath", "Path", "Variable", "VariableNotSet", "NoBackup"],
    "sisyphus.toolkit": ["Delayed", "is_path", "AbstractPath", "uncached_path", "block", "sub_block",
                         "async_gather", "async_run", "register_output", "register_report", "input_path",
                         "remove_job_and_descendants", "import_work_directory", "compare_graph", "export_graph",
                         "dump", "load_file", "load_job", "running_in_worker", "running_in_manager"],
}


@pytest.mark.parametrize("module", sorted(I6_CORE_IMPORTS))
def test_import_surface(module):
    mod = importlib.import_module(module)
    missing = [n for n in I6_CORE_IMPORTS[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_star_import_is_enough_for_i6_style_modules():
    ns = {}
    exec("from sisyphus import *", ns)
    assert {"Job", "Task", "Path", "Variable", "gs", "tk", "setup_path"} <= set(ns)
    import tests.i6_compat.jobs as jobs

    assert jobs.WriteLinesJob(3).out_txt.path == "lines.txt"


def test_sis_command_names_the_engines_python():
    exe = shutil.which(gs.SIS_COMMAND[0])
    assert exe is not None and os.path.samefile(exe, sys.executable)
    out = subprocess.run(list(gs.SIS_COMMAND) + ["--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "worker" in out.stdout


def test_sh_second_positional_argument_captures_output():
    assert tools.sh("echo {word}", True, word="hello") == "hello\n"
    assert tools.sh("echo hi", sis_quiet=True) is None


def test_sh_accepts_zero_and_the_listed_exit_codes_only():
    tools.sh("cat /etc/hostname | head -n 1 > /dev/null", except_return_codes=(141,))  # exits 0: accepted
    tools.sh("while true; do echo x; done | head -n 2 > /dev/null", except_return_codes=(141,))  # 141: accepted
    with pytest.raises(subprocess.CalledProcessError) as err:
        tools.sh("while true; do echo x; done | head -n 2 > /dev/null")  # 141 not listed
    assert err.value.returncode == 141
    with pytest.raises(subprocess.CalledProcessError):
        tools.sh("exit 3", except_return_codes=(141,))
    assert tools.sh("echo out; exit 3", True, except_return_codes=(3,)) == "out\n"  # output of an accepted code
    with pytest.raises(subprocess.CalledProcessError):
        tools.sh("echo $UNSET_VARIABLE_OF_THIS_TEST")  # set -u, as upstream


def test_job_sh_formats_with_the_jobs_attributes(run_job):
    from tests.i6_compat.jobs import CountLinesJob, WriteLinesJob

    count = run_job(CountLinesJob(WriteLinesJob(7).out_txt))
    assert count.out_num_lines.get() == 7


@pytest.fixture
def restore_settings():
    saved = dict(vars(gs))
    yield
    for name in [n for n in vars(gs) if n not in saved]:
        delattr(gs, name)
    for name, value in saved.items():
        setattr(gs, name, value)


def test_upstream_and_i6_core_settings_load_without_warnings(tmp_path, caplog, restore_settings):
    settings = tmp_path / "upstream_settings.py"
    settings.write_text(
        "TMP_PREFIX = '/tmp/x_'\nRETURNN_PYTHON_EXE = '/usr/bin/python3'\nRASR_ROOT = '/opt/rasr'\n"
        "JOB_CLEANER_INTERVAL = 10\nSHOW_JOB_TARGETS = False\nJOB_AUTO_CLEANUP = False\n"
        "def file_caching(path):\n    return path + '.cached'\n"
        "def on_job_finished(job):\n    pass\n"
        "MISSPELLED_SETING = 1\n")
    with caplog.at_level(logging.WARNING):
        gs.load_settings(str(settings))
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "MISSPELLED_SETING" in warned[0], warned
    assert gs.RASR_ROOT == "/opt/rasr" and gs.TMP_PREFIX == "/tmp/x_"
    assert gs.file_caching("/a") == "/a.cached"  # hooks are taken from settings.py


def _write_setup(setup, config_body, settings_extra=""):
    (setup / "config").mkdir(exist_ok=True)
    (setup / "config" / "__init__.py").write_text("")
    (setup / "config" / "exp.py").write_text(config_body)
    (setup / "settings.py").write_text(
        "def engine():\n    from sisyphus.localengine import LocalEngine\n    return LocalEngine(cpus=2, mem=4)\n"
        "WAIT_PERIOD_BETWEEN_CHECKS = 0.2\n" + settings_extra)


def run_sis_manager(setup, timeout=900):  # generous: a loaded machine starts workers slowly
    proc = subprocess.run([sys.executable, "-m", "sisyphus", "manager", "-r", "config/exp.py"], cwd=setup,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_i6_style_config_runs_to_completion_with_the_manager(sis_setup_dir):
    setup = sis_setup_dir
    _write_setup(setup, "from tests.i6_compat.jobs import py\n")
    rc, log = run_sis_manager(setup)
    assert rc == 0, log
    out = setup / "output" / "i6"
    assert (out / "count_text.txt").read_text() == "the corpus has 20 lines (counted)\n"
    assert (out / "head.txt").read_text() == "line 0\nline 1\nline 2\n"
    assert (out / "head_endless.txt").read_text() == "line 0\nline 1\nline 2\nline 3\n"
    assert (out / "python_version.txt").read_text() == f"{sys.version_info[0]}\n"
    finished = [d for d, _, files in os.walk(setup / "work") if "finished" in files]
    assert len(finished) == 6, finished


def test_local_engine_takes_upstreams_keyword_names():
    from sisyphus.localengine import LocalEngine

    e = LocalEngine(cpu=3, gpu=0, mem=2)
    assert (e.cpus, e.gpus, e.mem) == (3, 0, 2)


# ids of the i6-style graph computed with upstream Sisyphus (its code, from rwth-i6/sisyphus): equal here
UPSTREAM_IDS = {
    "lines": "tests/i6_compat/jobs/WriteLinesJob.AAFNslDSdRcE",
    "count": "tests/i6_compat/jobs/CountLinesJob.j36Bctyni9xw",
    "text": "tests/i6_compat/jobs/WriteDelayedTextJob.pSb6q4as78sW",  # a DelayedFormat argument
    "head": "tests/i6_compat/jobs/HeadJob.U2XLUEHS30YK",
    "head_endless": "tests/i6_compat/jobs/HeadJob.SxOlvAqMMf2j",
    "version": "tests/i6_compat/jobs/PythonVersionJob.osN8wjyswDbt",
}


def test_i6_style_job_ids_equal_upstreams():
    from tests.i6_compat.jobs import build

    assert {k: j.job_id() for k, j in build().items()} == UPSTREAM_IDS
