"""The chunks' extended windows: what stage 1 of the graph reads, one block per chunk.

Block ``(0, j, k)`` is chunk ``(j, k)`` of the image with its high-side halo (the overlap), so the blocks
overlap and stand for their keys only. A numpy image or a lazily loaded xarray variable (``open_raster`` with
``chunks=None``) is read window by window, each chunk's window once, so no input block waits in memory for a
neighbour. A dask image is rechunked to the plan and each block gets copies of the strips it needs from its
neighbours (dask's own ``overlap`` keeps views, which hold whole neighbour blocks in memory).
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from .dask_compat import NamedGraph, block_keys, graph_with, rechunk
from .grid import ChunkPlan

Blocks = NamedGraph  # the extended windows: keys (name, 0, j, k)


class Source:
    """The image as one value of the graph: a numpy array, or a lazily loaded variable.

    Wrapped so that a distributed worker never measures a lazy variable with ``dask.sizeof`` (which reads
    every pixel: 4.5 GB for a 40000 px scene), and so that tokenizing it never hashes or loads all its pixels
    (``tokenize(variable)`` read a 20000 px scene into the client: 2.7 GB).
    """

    def __init__(self, pixels: Any) -> None:
        self.pixels = pixels
        self.token = _lazy_token(pixels) if isinstance(pixels, xr.Variable) else _numpy_token(pixels)

    def __sizeof__(self) -> int:
        return 1024 if isinstance(self.pixels, xr.Variable) else int(self.pixels.nbytes)

    def __dask_tokenize__(self) -> str:
        return self.token

    def read(self, window: tuple[slice, slice]) -> np.ndarray:
        """The pixels of ``window`` ``(rows, cols)``, ``(bands, h, w)``."""
        if isinstance(self.pixels, xr.Variable):
            return np.asarray(self.pixels[:, window[0], window[1]].values)
        return self.pixels[:, window[0], window[1]]


def extended_blocks(image: Any, chunk_plan: ChunkPlan) -> Blocks:
    """The extended windows of ``image`` ``(bands, H, W)`` (numpy, lazy variable or dask) for ``chunk_plan``."""
    bands = image.shape[0]
    if isinstance(image, da.Array):
        return _overlapped(rechunk(image, ((bands,), *chunk_plan.chunks)), chunk_plan)
    (ext_y, ext_x) = chunk_plan.extensions
    source = Source(image)
    source_key = "seamless-source-" + source.token
    name = "seamless-window-" + tokenize(source_key, chunk_plan)
    layer: dict = {source_key: source}
    for j, (y0, y1) in enumerate(zip(chunk_plan.y_bounds, chunk_plan.y_bounds[1:], strict=False)):
        for k, (x0, x1) in enumerate(zip(chunk_plan.x_bounds, chunk_plan.x_bounds[1:], strict=False)):
            window = (slice(y0, y1 + ext_y[j]), slice(x0, x1 + ext_x[k]))
            layer[(name, 0, j, k)] = (_read_window, source_key, window)
    return Blocks(HighLevelGraph.from_collections(name, layer, dependencies=[]), name)


def _lazy_token(variable: xr.Variable) -> str:
    """A lazily loaded variable's lazy backend array tokenizes by what it reads (file, indexer)."""
    return tokenize(variable.dims, variable.shape, variable.dtype.str, variable._data)


def _numpy_token(image: np.ndarray) -> str:
    """Hashing a big in-memory image costs ~0.7 ms per 256 px tile; its keys live for one compute, and
    identity plus a sample of the pixels keeps them apart from other arrays.
    """
    sample = image[..., :: max(1, image.shape[-2] // 16), :: max(1, image.shape[-1] // 16)]
    return tokenize(id(image), image.shape, image.dtype.str, image.__array_interface__["data"][0], sample)


def _read_window(source: Source, window: tuple[slice, slice]) -> np.ndarray:
    return source.read(window)


def _overlapped(stacked: Any, chunk_plan: ChunkPlan) -> Blocks:
    ext_y, ext_x = chunk_plan.extensions
    block = block_keys(stacked)[0]
    token = tokenize(stacked.name, chunk_plan)
    name, strips = "seamless-extend-" + token, "seamless-strip-" + token
    layer: dict = {}
    for j in range(len(ext_y)):
        for k in range(len(ext_x)):
            below = right = corner = None
            if ext_y[j]:
                below = (strips, 0, j, k)
                layer[below] = (_strip, block[j + 1, k], slice(0, ext_y[j]), slice(None))
            if ext_x[k]:
                right = (strips, 1, j, k)
                layer[right] = (_strip, block[j, k + 1], slice(None), slice(0, ext_x[k]))
            if ext_y[j] and ext_x[k]:
                corner = (strips, 2, j, k)
                layer[corner] = (_strip, block[j + 1, k + 1], slice(0, ext_y[j]), slice(0, ext_x[k]))
            layer[(name, 0, j, k)] = (_assemble, block[j, k], below, right, corner)
    return Blocks(graph_with(name, layer, [stacked]), name)


def _strip(block: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return block[:, rows, cols].copy()  # a copy: a view would keep the whole neighbour block alive


def _assemble(
    own: np.ndarray, below: np.ndarray | None, right: np.ndarray | None, corner: np.ndarray | None
) -> np.ndarray:
    top = own if right is None else np.concatenate([own, right], axis=2)
    if below is None:
        return top
    bottom = below if corner is None else np.concatenate([below, corner], axis=2)
    return np.concatenate([top, bottom], axis=1)
