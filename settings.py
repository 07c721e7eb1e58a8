"""Engine settings read by the manager (``sis m``). Local by default; see README for Slurm/SGE."""
import os

# Where job directories go; keep it on a disk with space (paper-scale runs need hundreds of GB).
WORK_DIR = "work"

# Seconds between manager checks; small for the toy setup on one machine.
WAIT_PERIOD_BETWEEN_CHECKS = 2.0

# Resubmissions of an interrupted task before it counts as failed.
MAX_SUBMIT_RETRIES = 3


def engine():
    """Local process pool using this machine's cores and memory.

    On a cluster, replace by e.g.::

        from sisyphus.engine import EngineSelector
        from sisyphus.localengine import LocalEngine
        from sisyphus.simple_linux_utility_for_resource_management_engine import (
            SimpleLinuxUtilityForResourceManagementEngine,
        )
        return EngineSelector(
            engines={"short": LocalEngine(cpus=2),
                     "long": SimpleLinuxUtilityForResourceManagementEngine(default_rqmt={"cpu": 1, "mem": 4})},
            default_engine="long",
        )
    """
    from sisyphus.localengine import LocalEngine

    return LocalEngine(cpus=int(os.environ.get("SIS_LOCAL_CPUS", os.cpu_count() or 1)))
