"""Short name for the SGE engine module."""
from sisyphus.son_of_grid_engine import SonOfGridEngine  # noqa: F401
from sisyphus.son_of_grid_engine import SonOfGridEngine as SGEEngine  # noqa: F401
