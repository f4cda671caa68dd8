"""seamless_dask: seamless tiled model inference over chunked rasters, lazily, at any scale."""

from typing import TYPE_CHECKING, Any

import rioxarray as _rioxarray  # noqa: F401  (registers DataArray.rio, which results carry their geo through)

from . import accessor as _accessor  # noqa: F401  (registers DataArray.seamless)
from . import metrics
from .blend.stream import TileBlender
from .classes import with_classes
from .cluster import progress  # sd.progress.compute(result): a bar in tiles
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
from .io import open_raster, to_cog, to_ome_zarr, to_zarr
from .model.receptive import ReceptiveField, ReceptiveFieldWarning, receptive_field
from .model.runner import ModelRunner, RunnerConfig
from .objects import instances, object_table, polygons, segment_instances, to_vector
from .segment import plan, segment
from .tiling.grid import ChunkPlan, TileGrid, TileWindow
from .tiling.weights import TileWeights
from .training.dataset import TileDataset
from .training.sampling import RandomTiles
from .viz.borders import draw_tile_borders
from .viz.quicklook import colorize, quicklook

if TYPE_CHECKING:
    from .blend.torch_tiler import TensorTiler
    from .blend.volume_tiler import VolumeTiler

__all__ = [
    "ChunkPlan",
    "DimensionError",
    "ModelError",
    "ModelOutputError",
    "ModelRunner",
    "ModelSpecError",
    "OptionError",
    "RandomTiles",
    "RasterError",
    "ReceptiveField",
    "ReceptiveFieldWarning",
    "RunnerConfig",
    "SeamlessError",
    "TensorTiler",
    "TileBlender",
    "TileDataset",
    "TileGrid",
    "TileWeights",
    "TileWindow",
    "TilingError",
    "VolumeTiler",
    "WeightsError",
    "colorize",
    "draw_tile_borders",
    "instances",
    "metrics",
    "object_table",
    "open_raster",
    "plan",
    "polygons",
    "progress",
    "quicklook",
    "receptive_field",
    "segment",
    "segment_instances",
    "to_cog",
    "to_ome_zarr",
    "to_vector",
    "to_zarr",
    "with_classes",
]
from .graph.record import package_version as _package_version

# import torch: loaded on first use, as the runner does
_TORCH_NAMES = {"TensorTiler": "torch_tiler", "VolumeTiler": "volume_tiler"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib

        return getattr(importlib.import_module(f".blend.{_TORCH_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'seamless_dask' has no attribute {name!r}")


__version__ = _package_version()  # one source: the installed metadata, from pyproject.toml
