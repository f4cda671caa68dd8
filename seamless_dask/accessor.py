"""``DataArray.seamless``: the same API as an xarray accessor, stateless."""

from __future__ import annotations

from typing import Any

import xarray as xr

from .model.loading import ModelSpec
from .segment import DEFAULT_CHUNK, plan, segment
from .tiling.grid import ChunkPlan, Pair


@xr.register_dataarray_accessor("seamless")
class SeamlessAccessor:
    """``image.seamless.segment(model, tile_size=512)`` is ``seamless_dask.segment(image, model,
    tile_size=512)``.
    """

    def __init__(self, data: xr.DataArray) -> None:
        self._data = data

    def segment(self, model: ModelSpec, **options: Any) -> xr.DataArray:
        """See :func:`seamless_dask.segment`."""
        return segment(self._data, model, **options)

    def plan(
        self,
        *,
        tile_size: int | Pair = 256,
        overlap: int | Pair = 64,
        chunks: int | Pair | None = None,
    ) -> ChunkPlan:
        """The tile grid and chunking ``segment`` would use, from the image's size alone."""
        if chunks is None:
            chunks = (
                (self._data.chunksizes["y"][0], self._data.chunksizes["x"][0])
                if self._data.chunks
                else DEFAULT_CHUNK
            )
        return plan(
            (self._data.sizes["y"], self._data.sizes["x"]),
            tile_size=tile_size,
            overlap=overlap,
            chunks=chunks,
        )
