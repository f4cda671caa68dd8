"""The chunks' extended windows: what stage 1 of the graph reads, one per chunk.

The window of chunk ``(j, k)`` is the chunk with its high-side halo (the overlap), so windows
overlap; each is an argument of its chunk's stage-1 task (:meth:`Windows.node`), made when that task
is. A numpy image or a lazily loaded xarray variable (``open_raster`` with ``chunks=None``) is read
window by window, each chunk's window once (by the stage-1 task itself, or by a task of its own when
the model needs a GPU, so that reading overlaps the model's work), so no input block waits in memory
for a neighbour. A dask image's window is cut, inside the stage-1 task, from the input blocks it
overlaps, whatever their chunking: no rechunked copy of the image and no task per strip (dask's own
``overlap`` keeps views, which hold whole neighbour blocks in memory).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from ..tiling.grid import ChunkPlan
from .layers import (
    ChunkLayer,
    GraphNode,
    NamedGraph,
    array_expr,
    block_keys,
    items,
    ref,
    task,
    value,
)


class Source:
    """The image as one value of the graph: a numpy array, or a lazily loaded variable.

    Wrapped so that a distributed worker never measures a lazy variable with ``dask.sizeof`` (which
    reads every pixel), and so that tokenizing it never hashes or loads all its pixels
    (``tokenize(variable)`` reads the whole scene into the client).
    """

    def __init__(self, pixels: Any) -> None:
        self.pixels = pixels
        self.token = (
            _lazy_token(pixels) if isinstance(pixels, xr.Variable) else _numpy_token(pixels)
        )

    def __sizeof__(self) -> int:
        return 1024 if isinstance(self.pixels, xr.Variable) else int(self.pixels.nbytes)

    def __dask_tokenize__(self) -> str:
        return self.token

    def read(self, window: tuple[slice, slice]) -> np.ndarray:
        """The pixels of ``window`` ``(rows, cols)``, ``(bands, h, w)``."""
        if isinstance(self.pixels, xr.Variable):
            return np.asarray(self.pixels[:, window[0], window[1]].values)
        return self.pixels[:, window[0], window[1]]


@dataclass(frozen=True)
class Windows:
    """The extended windows of an image for a chunk plan: :meth:`node` is chunk ``(j, k)``'s, as an
    argument of its stage-1 task; ``dependencies`` are the collections whose keys the windows read.
    """

    token: str
    dependencies: tuple[Any, ...]
    node: Callable[[int, int], GraphNode]


def extended_windows(image: Any, chunk_plan: ChunkPlan, *, reads_apart: bool = False) -> Windows:
    """The extended windows of ``image`` ``(bands, H, W)`` (numpy, lazy variable or dask) for
    ``chunk_plan``.

    A numpy image or lazy variable is read by the stage-1 task itself, or, ``reads_apart`` (the
    model needs worker resources: a GPU), by a task of its own, so that the next windows are read
    while the GPU works.
    """
    if isinstance(image, da.Array):
        return _cut_from_blocks(image, chunk_plan)
    source = Source(image)
    source_key = "seamless-source-" + source.token
    name = "seamless-window-" + tokenize(source_key, chunk_plan)
    bounds = _Bounds(chunk_plan)
    source_layer = MaterializedLayer({source_key: value(source_key, source)})
    if not reads_apart:
        graph = HighLevelGraph({source_key: source_layer}, {source_key: set()})
        return Windows(
            name,
            (NamedGraph(graph, source_key),),
            lambda j, k: task(None, _read_window, ref(source_key), bounds.window(j, k)),
        )
    reads = ChunkLayer(
        (len(chunk_plan.chunks[0]), len(chunk_plan.chunks[1])),
        lambda j, k: [(name, 0, j, k)],
        lambda key: task(key, _read_window, ref(source_key), bounds.window(key[-2], key[-1])),
    )
    layers = {source_key: source_layer, name: reads}
    graph = HighLevelGraph(layers, {source_key: set(), name: {source_key}})
    return Windows(name, (NamedGraph(graph, name),), lambda j, k: ref((name, 0, j, k)))


@dataclass(frozen=True)
class _Bounds:
    """A chunk plan's extended windows, as slices of the image."""

    plan: ChunkPlan

    def window(self, j: int, k: int) -> tuple[slice, slice]:
        (ext_y, ext_x), plan = self.plan.extensions, self.plan
        rows = slice(plan.y_bounds[j], plan.y_bounds[j + 1] + ext_y[j])
        return rows, slice(plan.x_bounds[k], plan.x_bounds[k + 1] + ext_x[k])


def _cut_from_blocks(image: Any, chunk_plan: ChunkPlan) -> Windows:
    """Windows cut from the blocks of a dask image (its bands in one block), inside the tasks that use
    them.
    """
    bands = image.shape[0]
    if len(image.chunks[0]) > 1:
        image = image.rechunk({0: bands})
    y_edges = tuple(itertools.accumulate(image.chunks[1], initial=0))
    x_edges = tuple(itertools.accumulate(image.chunks[2], initial=0))
    if array_expr():  # lowering may rename an array-expr collection's keys: ask it for them
        keys = block_keys(image)

        def key_of(a: int, b: int) -> Hashable:
            return keys[0, a, b]
    else:
        name = image.name

        def key_of(a: int, b: int) -> Hashable:
            return (name, 0, a, b)

    bounds = _Bounds(chunk_plan)

    def node(j: int, k: int) -> GraphNode:
        rows, cols = bounds.window(j, k)
        row_parts, col_parts = _parts(y_edges, rows), _parts(x_edges, cols)
        pieces = [ref(key_of(a, b)) for a, _ in row_parts for b, _ in col_parts]
        return task(
            None, _assemble, items(pieces), [s for _, s in row_parts], [s for _, s in col_parts]
        )

    return Windows(tokenize(image.name, chunk_plan), (image,), node)


def _parts(edges: tuple[int, ...], want: slice) -> list[tuple[int, slice]]:
    """The blocks (between ``edges``) that ``want`` overlaps, each with the slice of it that lies in
    ``want``.
    """
    first = bisect.bisect_right(edges, want.start) - 1
    last = bisect.bisect_left(edges, want.stop)
    return [
        (a, slice(max(want.start, edges[a]) - edges[a], min(want.stop, edges[a + 1]) - edges[a]))
        for a in range(first, last)
    ]


def _assemble(pieces: list[np.ndarray], rows: list[slice], cols: list[slice]) -> np.ndarray:
    """The window from the input blocks it overlaps (row-major) and the slice of each it takes."""
    cut = [
        [pieces[i * len(cols) + c][:, r, s] for c, s in enumerate(cols)] for i, r in enumerate(rows)
    ]
    if len(cut) == 1 and len(cut[0]) == 1:
        return np.asarray(cut[0][0])
    return np.concatenate([np.concatenate(row, axis=2) for row in cut], axis=1)


def _lazy_token(variable: xr.Variable) -> str:
    """A lazily loaded variable's lazy backend array tokenizes by what it reads (file, indexer)."""
    return tokenize(variable.dims, variable.shape, variable.dtype.str, variable._data)


def _numpy_token(image: np.ndarray) -> str:
    """Hashing a big in-memory image costs ~0.7 ms per 256 px tile; its keys live for one compute,
    and identity plus a sample of the pixels keeps them apart from other arrays.
    """
    sample = image[..., :: max(1, image.shape[-2] // 16), :: max(1, image.shape[-1] // 16)]
    return tokenize(
        id(image), image.shape, image.dtype.str, image.__array_interface__["data"][0], sample
    )


def _read_window(source: Source, window: tuple[slice, slice]) -> np.ndarray:
    return source.read(window)
