"""Starting the local Slurm/SGE daemons for the engine tests (skips with the reason when impossible)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_daemons(script: str, tool: str) -> None:
    """Runs ``.ci/cluster/<script>`` once; skips the calling tests if the daemons cannot be installed/started."""
    if os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.skip(f"{tool}: needs root or sudo to install and start the daemons")
    if shutil.which("apt-get") is None and shutil.which(tool) is None:
        pytest.skip(f"{tool}: not installed and no apt-get to install it")
    p = subprocess.run(["bash", os.path.join(ROOT, ".ci", "cluster", script)], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        pytest.skip(f"{tool} daemons could not be started: {p.stderr.strip()[-500:]}")
