"""Short name for the Slurm engine module."""
from sisyphus.simple_linux_utility_for_resource_management_engine import (  # noqa: F401
    SimpleLinuxUtilityForResourceManagementEngine,
    SimpleLinuxUtilityForResourceManagementEngine as SlurmEngine,
)
