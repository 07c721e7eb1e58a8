"""Starting the local Slurm/SGE daemons for the engine tests: where that is impossible the tests skip with the reason,
in CI (the CI environment variable set) they fail, so that CI never passes without them."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _unavailable(reason: str) -> None:
    """Skips the calling test with ``reason``, or fails it in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the cluster tests must run)", pytrace=False)
    pytest.skip(reason)


def start_daemons(script: str, tool: str) -> None:
    """Runs ``.ci/cluster/<script>`` once; the calling tests skip (in CI: fail) if the daemons cannot be
    installed/started."""
    if os.geteuid() != 0 and not shutil.which("sudo"):
        _unavailable(f"{tool}: needs root or sudo to install and start the daemons")
    if shutil.which("apt-get") is None and shutil.which(tool) is None:
        _unavailable(f"{tool}: not installed and no apt-get to install it")
    p = subprocess.run(["bash", os.path.join(ROOT, ".ci", "cluster", script)], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        _unavailable(f"{tool} daemons could not be started: {p.stderr.strip()[-500:]}")
