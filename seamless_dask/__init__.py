"""seamless_dask: seamless tiled model inference over chunked rasters, lazily, at any scale."""

from . import accessor as _accessor  # noqa: F401  (registers DataArray.seamless)
from .exceptions import (
    DimensionError,
    ModelOutputError,
    ModelSpecError,
    OptionError,
    SeamlessError,
    TilingError,
    WeightsError,
)
from .grid import ChunkPlan, TileGrid, TileWindow
from .runner import ModelRunner, RunnerConfig
from .segment import plan, segment
from .weights import TileWeights

__all__ = [
    "ChunkPlan",
    "DimensionError",
    "ModelOutputError",
    "ModelRunner",
    "ModelSpecError",
    "OptionError",
    "RunnerConfig",
    "SeamlessError",
    "TileGrid",
    "TileWeights",
    "TileWindow",
    "TilingError",
    "WeightsError",
    "plan",
    "segment",
]
__version__ = "0.1.0"
