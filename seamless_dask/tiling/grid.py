"""The tile grid: pure geometry of one global lattice of overlapping tiles.

Nothing here reads pixels or imports dask or torch. Sizes and offsets are in pixels.

Along each axis, tile origins follow the lattice ``0, S, 2S, ...`` of stride ``S = tile - overlap``,
and the last tile is placed flush with the image border (as seamless-seg and MONAI do), so every
tile lies inside the image and sees real pixels only. An axis shorter than the tile gets one tile of
the axis' length: that tile sees exactly what a whole-image run sees.

Chunk plans put every inner chunk boundary on the lattice. Each tile is then *owned* by the one
chunk that holds its origin, and fits in that chunk extended by ``overlap`` pixels on its high side,
which is what makes the graph compute each tile exactly once whatever the input chunking.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, NamedTuple

from ..exceptions import DimensionError, TilingError

Pair = tuple[int, int]


AXES = {1: "x", 2: "yx", 3: "zyx"}  # how the messages name a plane's and a volume's axes


def as_pair(value: object, name: str) -> Pair:
    """Convert ``int`` or ``(y, x)`` to a pair of ints, or raise a TilingError naming ``name``."""
    y, x = as_sizes(value, name, 2)
    return y, x


def as_sizes(value: object, name: str, n: int) -> tuple[int, ...]:
    """Convert ``int`` or one int per axis (``(y, x)``, a volume's ``(z, y, x)``) to ``n`` ints, or
    raise a TilingError naming ``name``.
    """
    axes = ", ".join(AXES.get(n, "?" * n))
    example = {2: "(256, 192)", 3: "(64, 128, 128)"}.get(n, "(64,) * n")
    items: Any = (value,) * n if isinstance(value, Real) else value
    try:
        values = tuple(items)
    except TypeError:
        values = ()
    if len(values) != n:
        raise TilingError(
            f"{name} must be an int or {n} ints ({axes}) in pixels, got {name}={value!r}: "
            f"use e.g. {name}=256 or {name}={example}"
        )
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values):
        raise TilingError(
            f"{name} must be whole pixels (ints), got {name}={value!r}: use e.g. {name}=256 or "
            f"{name}={example}"
        )
    return tuple(int(v) for v in values)


def as_overlap(value: object, tile: tuple[int, ...]) -> tuple[int, ...]:
    """The overlap in pixels per axis of ``tile``: ints as they are (:func:`as_sizes`), a float in
    ``[0, 1)`` (for every axis, or one axis of several) as a fraction of ``tile``, as MONAI reads
    ``overlap=0.25``: the stride is ``int(tile * (1 - fraction))`` (at least 1), the overlap
    ``tile`` minus it.
    """
    n = len(tile)
    items: Any = (value,) * n if isinstance(value, Real) else value
    try:
        fractions = [isinstance(v, float) for v in items]
    except TypeError:
        fractions = []
    if not any(fractions):
        return as_sizes(value, "overlap", n)
    if len(fractions) != n:
        raise TilingError(
            f"overlap must be one value or one per axis ({', '.join(AXES.get(n, '?' * n))}), got "
            f"overlap={value!r}: use e.g. overlap=0.25 or overlap={(0.25,) * n}"
        )
    out = []
    for axis, v, t in zip(AXES.get(n, "?" * n), items, tile, strict=True):
        if not isinstance(v, float):
            out.append(as_sizes(v, "overlap", 1)[0])
        elif not 0 <= v < 1:
            raise TilingError(
                f"a float overlap is a fraction of the tile in [0, 1), as MONAI's, got "
                f"overlap={value!r} on axis {axis}: use e.g. overlap=0.25, or whole pixels as an "
                f"int (overlap={int(v)})"
            )
        else:
            out.append(t - max(1, int(t * (1 - v))) if t > 0 else 0)
    return tuple(out)


class LocalTile(NamedTuple):
    """A tile as one chunk sees it: grid index, origin inside the chunk, image-border flags."""

    grid_index: int
    y: int
    x: int
    edges_y: tuple[bool, bool]
    edges_x: tuple[bool, bool]


@dataclass(frozen=True)
class ChunkTiles:
    """The tiles one chunk runs, as its rows and columns of the lattice: a few numbers per chunk in
    the graph, not an object per tile (a 1,000,000 px scene has 27 million); the task that runs them
    expands them.
    """

    # (grid row, origin in the chunk, border flags)
    rows: tuple[tuple[int, int, tuple[bool, bool]], ...]
    cols: tuple[tuple[int, int, tuple[bool, bool]], ...]
    n_x: int  # tiles per grid row: grid index = row * n_x + column
    # the grid indices a region or a resume keeps; None: every one
    keep: frozenset[int] | None = None

    def __iter__(self) -> Iterator[LocalTile]:
        for iy, y, edges_y in self.rows:
            for ix, x, edges_x in self.cols:
                if self.keep is None or iy * self.n_x + ix in self.keep:
                    yield LocalTile(iy * self.n_x + ix, y, x, edges_y, edges_x)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols) if self.keep is None else len(self.keep)


class TileWindow(NamedTuple):
    """Where one tile lies in the image: row and column slices, in pixels."""

    y: slice
    x: slice


@dataclass(frozen=True)
class AxisTiling:
    """Tiles along one axis: effective tile length, overlap and tile origins."""

    size: int
    tile: int
    overlap: int
    origins: tuple[int, ...]

    @classmethod
    def build(cls, size: int, tile: int, overlap: int) -> AxisTiling:
        """Lay tiles of ``tile`` pixels with ``overlap`` along an axis of ``size`` pixels."""
        if size <= tile:
            return cls(size=size, tile=size, overlap=0, origins=(0,))
        stride = tile - overlap
        last = size - tile
        lattice = range(0, last, stride)
        return cls(size=size, tile=tile, overlap=overlap, origins=(*lattice, last))

    @property
    def stride(self) -> int:
        """Distance between lattice origins, ``tile - overlap``."""
        return self.tile - self.overlap

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the grid."""
        return len(self.origins)

    def edges(self, i: int) -> tuple[bool, bool]:
        """Whether tile ``i`` touches the start and the end of the image on this axis."""
        origin = self.origins[i]
        return origin == 0, origin + self.tile == self.size

    def touching(self, start: int, stop: int) -> range:
        """Indices of the tiles that cover any pixel of ``[start, stop)``."""
        first = bisect.bisect_right(self.origins, start - self.tile)
        last = bisect.bisect_left(self.origins, stop)
        return range(first, max(first, last))

    def owned(self, bounds: tuple[int, ...], j: int) -> range:
        """Indices of the tiles whose origin lies in chunk ``j`` of ``bounds``."""
        return _owned(self, bounds, j)

    def chunk_bounds(self, target: int) -> tuple[int, ...]:
        """Chunk boundaries ``(0, b1, ..., size)`` near ``target`` pixels per chunk.

        Inner boundaries are multiples of the stride, chunks are at least ``overlap`` long (so a
        halo strip lands in one neighbour) and the last chunk holds the flush last tile.
        """
        if self.n_tiles == 1:
            return (0, self.size)
        stride = self.stride
        step = stride * max(1, round(target / stride), math.ceil(self.overlap / stride))
        limit = self.origins[-1] // stride * stride
        return (0, *range(step, limit + 1, step), self.size)


@dataclass(frozen=True, init=False)
class TileGrid:
    """One global grid of overlapping tiles over an image of ``shape = (height, width)`` pixels.

    Tile origins follow one lattice of stride ``tile - overlap``; the last tile on each axis is
    flush with the border, and an axis shorter than the tile gets one tile of the axis' length. The
    grid depends on these three values only, never on how the pixels are chunked.

    Parameters
    ----------
    shape
        Image size ``(height, width)`` in pixels.
    tile_size
        Tile size in pixels, an int or ``(y, x)``, as ``segment`` takes it.
    overlap
        Overlap between neighbouring tiles in pixels, an int or ``(y, x)``;
        ``0 <= overlap < tile_size``; or a fraction of the tile in ``[0, 1)``, as MONAI's
        (``0.25``: a quarter of the tile, the stride ``int(tile * 0.75)``).

    Raises
    ------
    TilingError
        A size that is not a positive int, or ``overlap >= tile`` (the message suggests an overlap).

    Examples
    --------
    >>> from seamless_dask import TileGrid
    >>> grid = TileGrid((1000, 700), tile_size=256, overlap=64)
    >>> grid.grid_shape, grid.n_tiles
    ((5, 4), 20)
    >>> grid.window(3)  # the last tile of the first row is flush with the right border
    TileWindow(y=slice(0, 256, None), x=slice(444, 700, None))
    >>> grid.tiles_touching(slice(0, 10), slice(0, 200))
    [0, 1]
    """

    shape: Pair
    tile_size: Pair
    overlap: Pair
    y: AxisTiling = field(repr=False, compare=False)
    x: AxisTiling = field(repr=False, compare=False)

    def __init__(
        self,
        shape: int | Pair,
        tile_size: int | Pair | None = None,
        overlap: int | Pair = 0,
        *,
        tile: int | Pair | None = None,
    ) -> None:
        if tile is not None:  # its name before 0.2
            warnings.warn(
                "TileGrid(tile=...) is now TileGrid(tile_size=...), as segment names it",
                DeprecationWarning,
                stacklevel=2,
            )
            tile_size = tile
        if tile_size is None:
            raise TypeError("TileGrid needs tile_size: e.g. TileGrid((1000, 700), 256, 64)")
        shape_, tile_ = as_pair(shape, "shape"), as_pair(tile_size, "tile_size")
        oy, ox = as_overlap(overlap, tile_)
        overlap_ = (oy, ox)
        check_tiling(shape_, tile_, overlap_)
        for name, value in (("shape", shape_), ("tile_size", tile_), ("overlap", overlap_)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "y", AxisTiling.build(shape_[0], tile_[0], overlap_[0]))
        object.__setattr__(self, "x", AxisTiling.build(shape_[1], tile_[1], overlap_[1]))

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.TileGrid", self.shape, self.tile_size, self.overlap)

    @property
    def tile_shape(self) -> Pair:
        """Effective tile size: the requested one, shrunk to the image on axes shorter than it."""
        return self.y.tile, self.x.tile

    @property
    def effective_overlap(self) -> Pair:
        """The overlap tiles really have per axis: the requested one, 0 on an axis shorter than the
        tile (its one tile is the whole axis). Trust maps take this one, as the graph does.
        """
        return self.y.overlap, self.x.overlap

    @property
    def grid_shape(self) -> Pair:
        """Number of tiles along y and along x."""
        return self.y.n_tiles, self.x.n_tiles

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the grid."""
        return self.y.n_tiles * self.x.n_tiles

    def window(self, i: int) -> TileWindow:
        """Slices of tile ``i`` (row-major over the grid) in image pixels."""
        iy, ix = divmod(i, self.x.n_tiles)
        y0, x0 = self.y.origins[iy], self.x.origins[ix]
        return TileWindow(slice(y0, y0 + self.y.tile), slice(x0, x0 + self.x.tile))

    def windows(self) -> list[TileWindow]:
        """Every tile's window, row-major (for small grids: a 1,000,000 px scene has millions of
        tiles).
        """
        return [self.window(i) for i in range(self.n_tiles)]

    def tiles_touching(self, ys: slice, xs: slice) -> list[int]:
        """Row-major indices of the tiles that cover any pixel of the window ``(ys, xs)``."""
        rows = self.y.touching(ys.start or 0, self.shape[0] if ys.stop is None else ys.stop)
        cols = self.x.touching(xs.start or 0, self.shape[1] if xs.stop is None else xs.stop)
        return [iy * self.x.n_tiles + ix for iy in rows for ix in cols]

    def plan_chunks(self, target: int | Pair) -> ChunkPlan:
        """Chunking of the image, near ``target`` pixels per chunk, in which each tile has one owner."""
        ty, tx = as_pair(target, "chunks")
        if ty <= 0 or tx <= 0:
            raise TilingError(
                f"chunks must be positive pixel counts, got chunks={target!r}: use e.g. chunks=2048"
            )
        return ChunkPlan(self, self.y.chunk_bounds(ty), self.x.chunk_bounds(tx))


@dataclass(frozen=True)
class ChunkPlan:
    """Chunk boundaries over a :class:`TileGrid`, and which tiles each chunk owns.

    Boundaries lie on the tile lattice, so each tile is owned by the one chunk holding its origin
    and fits in that chunk extended by the overlap on its high side. Made by
    :meth:`TileGrid.plan_chunks` or
    :func:`~seamless_dask.plan`.

    Attributes
    ----------
    grid
        The tile grid.
    y_bounds, x_bounds
        Chunk boundaries ``(0, b1, ..., size)`` per axis, in pixels.

    Examples
    --------
    >>> from seamless_dask import TileGrid
    >>> plan = TileGrid((1000, 700), 256, 64).plan_chunks(400)
    >>> plan.chunks
    ((384, 616), (384, 316))
    >>> plan.owned(0, 0), plan.owner(19)
    ([0, 1, 4, 5], (1, 1))
    """

    grid: TileGrid
    y_bounds: tuple[int, ...]
    x_bounds: tuple[int, ...]

    def __dask_tokenize__(self) -> tuple:
        return (
            "seamless_dask.ChunkPlan",
            self.grid.__dask_tokenize__(),
            self.y_bounds,
            self.x_bounds,
        )

    @functools.cached_property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Chunk sizes per axis, in dask's format (computed once: the graph asks for every chunk's)."""
        return _sizes(self.y_bounds), _sizes(self.x_bounds)

    @functools.cached_property
    def extensions(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Pixels each chunk's owned tiles reach past its high edge: the overlap, 0 for the last."""
        return _extensions(self.y_bounds, self.grid.y), _extensions(self.x_bounds, self.grid.x)

    def owned(self, j: int, k: int) -> list[int]:
        """Row-major indices of the tiles whose origin lies in chunk ``(j, k)``."""
        rows = _owned(self.grid.y, self.y_bounds, j)
        cols = _owned(self.grid.x, self.x_bounds, k)
        return [iy * self.grid.x.n_tiles + ix for iy in rows for ix in cols]

    @property
    def tiles_per_axis(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Rows and columns of tiles each chunk row and chunk column owns: ``rows[j] * cols[k]`` tiles."""
        y, x = self.grid.y, self.grid.x
        return (
            tuple(len(_owned(y, self.y_bounds, j)) for j in range(len(self.y_bounds) - 1)),
            tuple(len(_owned(x, self.x_bounds, k)) for k in range(len(self.x_bounds) - 1)),
        )

    def local_tiles(self, j: int, k: int) -> ChunkTiles:
        """The tiles chunk ``(j, k)`` owns, with origins relative to the chunk's first pixel (lazily
        listed).
        """
        y, x = self.grid.y, self.grid.x
        rows = tuple(
            (i, y.origins[i] - self.y_bounds[j], y.edges(i)) for i in _owned(y, self.y_bounds, j)
        )
        cols = tuple(
            (i, x.origins[i] - self.x_bounds[k], x.edges(i)) for i in _owned(x, self.x_bounds, k)
        )
        return ChunkTiles(rows, cols, x.n_tiles)

    def owner(self, i: int) -> Pair:
        """The chunk ``(j, k)`` that owns tile ``i``."""
        iy, ix = divmod(i, self.grid.x.n_tiles)
        j = bisect.bisect_right(self.y_bounds, self.grid.y.origins[iy]) - 1
        k = bisect.bisect_right(self.x_bounds, self.grid.x.origins[ix]) - 1
        return j, k


def _sizes(bounds: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(b - a for a, b in itertools.pairwise(bounds))


def _extensions(bounds: tuple[int, ...], axis: AxisTiling) -> tuple[int, ...]:
    return (*(axis.overlap for _ in bounds[2:]), 0)


def _owned(axis: AxisTiling, bounds: tuple[int, ...], j: int) -> range:
    first = bisect.bisect_left(axis.origins, bounds[j])
    last = bisect.bisect_left(axis.origins, bounds[j + 1])
    return range(first, last)


def check_tiling(shape: tuple[int, ...], tile: tuple[int, ...], overlap: tuple[int, ...]) -> None:
    """Raise unless an image of ``shape`` can be tiled with ``tile`` and ``overlap`` (any number of
    axes), naming the rule, the value and the fix.
    """
    names = AXES.get(len(shape), "?" * len(shape))
    if min(shape) <= 0:
        raise DimensionError(
            f"the image is empty: shape ({', '.join(names)}) = {shape}; segment needs at least one "
            f"pixel on "
            f"each axis: "
            "check the selection or window that produced it"
        )
    if min(tile) <= 0:
        raise TilingError(
            f"tile_size must be a positive number of pixels, got tile_size={tile}: "
            "use the input size your model was trained on, e.g. tile_size=256"
        )
    if min(overlap) < 0:
        raise TilingError(
            f"overlap must be >= 0 pixels, got overlap={overlap}: use overlap=0 for edge-to-edge "
            f"tiles, "
            "or e.g. overlap=tile_size // 4 for seamless blending"
        )
    for axis, t, o in zip(names, tile, overlap, strict=True):
        if o >= t:
            raise TilingError(
                f"overlap must be smaller than tile_size so that tiles advance (stride = tile - "
                f"overlap > 0), "
                f"got tile_size={t}, overlap={o} on axis {axis}: use overlap <= {t - 1}, "
                f"typically tile_size // 4 = {t // 4}"
            )
