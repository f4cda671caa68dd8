"""How large a ``segment`` graph's chunks are: ``chunks=``, a dask image's own, 2048 px for a lazily
read raster, a third of the side for an image in memory; and the most chunks one graph may have on
dask's array-expr engine.
"""

from __future__ import annotations

import math
import os
from typing import Any

import dask.array as da
import xarray as xr

from ..exceptions import DimensionError, OptionError
from ..tiling.grid import ChunkPlan, Pair, TileGrid
from .layers import array_expr

DEFAULT_CHUNK = 2048
IN_MEMORY_CHUNK = 1024
# array-expr only: its graph holds about 12 kB per chunk in this process, 60,000 is 0.7 GB
MAX_CHUNKS = 60_000


def machine_memory() -> int:
    """The physical memory of this machine in bytes (0 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_tile_fits(bands: int, image: Pair, tile_size: Pair, batch_size: int) -> None:
    """Refuse, before the model is probed or any tile allocated, a tile whose batch cannot fit.

    Every tile is given to the model at ``tile_size`` (an image thinner than the tile is padded to
    it, :class:`~seamless_dask.blend.tiles.TilePadding`), so a batch holds ``batch_size x bands x
    tile_size`` float32 pixels before the model's own activations, which are many times that. A
    batch over a quarter of this machine's memory cannot run; the message names the tile that fits
    the image.
    """
    th, tw = tile_size
    need = batch_size * bands * th * tw * 4
    memory = machine_memory()
    if not memory or need <= memory // 4:
        return
    h, w = image
    fits = (min(th, 32 * math.ceil(h / 32)), min(tw, 32 * math.ceil(w / 32)))
    raise OptionError(
        f"tile_size={th if th == tw else (th, tw)} makes every batch of {batch_size} tiles "
        f"{need / 2**30:,.1f} GiB of float32 input ({bands} bands; a {h} x {w} px image is padded "
        f"to the tile), more than a quarter of this machine's {memory / 2**30:.0f} GiB, before the "
        f"model's activations: use a smaller tile_size (--tile-size), e.g. "
        f"{fits[0] if fits[0] == fits[1] else fits} for this image, or a smaller batch_size"
    )


def check_chunk_fits(bands: int, chunk_plan: ChunkPlan, channels: int) -> None:
    """Refuse, before any window is read, chunks whose task cannot fit in memory.

    A chunk's task holds its window (the chunk and the halo of its tiles, up to a tile beyond each
    side) as float32 input, ``bands`` deep, and the weighted sums it blends into as float64,
    ``channels`` + 1 deep (the classes and the weight). Over a quarter of this machine's memory for the
    largest chunk, it cannot run beside the model; the message names a chunk side that fits.
    """
    (rows, cols), (th, tw) = chunk_plan.chunks, chunk_plan.grid.tile_shape
    cy, cx = max(rows), max(cols)
    per_px = 4 * bands + 8 * (channels + 1)
    need = (cy + th) * (cx + tw) * per_px
    memory = machine_memory()
    if not memory or need <= memory // 4:
        return
    side = max(256, int(math.sqrt(memory // 4 / per_px)) - max(th, tw)) // 256 * 256
    raise OptionError(
        f"chunks of {cy} x {cx} px make every chunk's task hold {need / 2**30:,.1f} GiB (its window "
        f"of {cy + th} x {cx + tw} px: float32 input, {bands} deep; float64 sums, {channels + 1} deep), "
        f"more than a quarter of this machine's {memory / 2**30:.0f} GiB: use smaller chunks "
        f"(--chunks / chunks=), e.g. {side}"
    )


def check_plannable(chunk_plan: ChunkPlan) -> None:
    """On dask's array-expr engine, refuse before anything is built a scene whose graph would not
    fit in this process: that engine takes a hand-built graph only as a whole dict
    (:func:`dask_compat.new_array`), about 12 kB a chunk. The legacy engine makes a chunk's tasks
    only when they are computed: no limit.
    """
    grid = chunk_plan.grid
    n_chunks = (len(chunk_plan.y_bounds) - 1) * (len(chunk_plan.x_bounds) - 1)
    if n_chunks <= MAX_CHUNKS or not array_expr():
        return
    h, w = grid.shape
    # the lattice rounds chunks
    side = math.sqrt(h * w / n_chunks) * math.sqrt(n_chunks / MAX_CHUNKS) * 1.05
    fits = 1024 * math.ceil(side / 1024)
    raise DimensionError(
        f"the scene is {h} x {w} px in {n_chunks:,} chunks of the plan, more than the "
        f"{MAX_CHUNKS:,} chunks one graph "
        "is planned with on dask's array-expr engine (all its tasks held in this process before "
        "any pixel is read): "
        "use dask's default array engine (dask.config.set({'array.query-planning': False}) before "
        "dask.array is "
        f"imported), larger chunks (chunks={fits} fits), or segment it window by window, e.g. "
        "segment(data[:, y0:y1, x0:x1], ...), each window written to its own region"
    )


def chunk_target(image: Any, chunks: Pair | None, batch_size: int, grid: TileGrid) -> Pair:
    """Pixels per chunk side: ``chunks=``, else a dask image's own chunks, else 2048 for a lazily
    read raster (fewer, larger windows read), else, for an image in memory, :func:`in_memory_chunk`
    per axis.
    """
    if chunks is not None:
        return chunks
    if isinstance(image, da.Array):
        return image.chunks[1][0], image.chunks[2][0]
    if isinstance(image, xr.Variable):
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    y, x = grid.y, grid.x
    return in_memory_chunk(y.size, y.stride, batch_size), in_memory_chunk(
        x.size, x.stride, batch_size
    )


def in_memory_chunk(side: int, stride: int, batch_size: int) -> int:
    """Default chunk side for an image already in memory: at least three chunks per side up to 1024
    px, so that every core has a chunk to work on while the others blend (one chunk for the whole
    image runs one model call at a time: ``benchmarks/threads.py``), but never fewer tiles than two
    batches.
    """
    two_batches = stride * math.ceil(math.sqrt(2 * batch_size))
    return max(two_batches, min(IN_MEMORY_CHUNK, -(-side // 3)))
