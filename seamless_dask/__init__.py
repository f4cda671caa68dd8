"""seamless_dask: seamless tiled model inference over chunked rasters, lazily, at any scale."""

import rioxarray as _rioxarray  # noqa: F401  (registers DataArray.rio, which results carry their geo through)

from . import accessor as _accessor  # noqa: F401  (registers DataArray.seamless)
from . import metrics
from .dataset import TileDataset
from .exceptions import (
    DimensionError,
    ModelError,
    ModelOutputError,
    ModelSpecError,
    OptionError,
    RasterError,
    SeamlessError,
    TilingError,
    WeightsError,
)
from .grid import ChunkPlan, TileGrid, TileWindow
from .io import open_raster, to_cog, to_zarr
from .runner import ModelRunner, RunnerConfig
from .segment import plan, segment
from .viz import colorize, quicklook
from .weights import TileWeights

__all__ = [
    "ChunkPlan",
    "DimensionError",
    "ModelError",
    "ModelOutputError",
    "ModelRunner",
    "ModelSpecError",
    "OptionError",
    "RasterError",
    "RunnerConfig",
    "SeamlessError",
    "TileDataset",
    "TileGrid",
    "TileWeights",
    "TileWindow",
    "TilingError",
    "WeightsError",
    "colorize",
    "metrics",
    "open_raster",
    "plan",
    "quicklook",
    "segment",
    "to_cog",
    "to_zarr",
]
from .record import package_version as _package_version

__version__ = _package_version()  # one source: the installed metadata, from pyproject.toml
