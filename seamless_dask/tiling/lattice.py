"""Tiles over any number of axes: a volume's ``(z, y, x)`` as a plane's ``(y, x)``.

The same lattice as :class:`~seamless_dask.tiling.grid.TileGrid`'s, one
:class:`~seamless_dask.tiling.grid.AxisTiling` an axis: origins ``0, S, 2S, ...`` of stride
``S = tile - overlap``, the last tile flush with the border, an axis shorter than the tile one tile
of its length. Chunk boundaries lie on the lattice, so each tile is owned by the chunk holding its
origin and fits in that chunk extended by the overlap on its high side of every axis: the graph of
:mod:`seamless_dask.graph.volume` runs each tile once, whatever the chunking. Pure geometry.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ..exceptions import TilingError
from .grid import AxisTiling, as_overlap, as_sizes, check_tiling

Edges = tuple[bool, bool]


class VolumeTile(NamedTuple):
    """A tile as its chunk sees it: its index in the lattice (one per axis), its origin inside the
    chunk's extended window, and whether it touches each axis' start and end of the image.
    """

    position: tuple[int, ...]
    origin: tuple[int, ...]
    edges: tuple[Edges, ...]


@dataclass(frozen=True)
class Lattice:
    """The tiles of an image of ``shape`` (any number of axes), ``tile_size`` and ``overlap`` per
    axis (an int for all, or a float overlap as a fraction of the tile, as for
    :class:`~seamless_dask.tiling.grid.TileGrid`).

    Examples
    --------
    >>> from seamless_dask.tiling.lattice import Lattice
    >>> lattice = Lattice.build((100, 300, 200), (64, 128, 128), (16, 32, 32))
    >>> lattice.grid_shape, lattice.n_tiles
    ((2, 3, 2), 12)
    >>> [axis.origins for axis in lattice.axes]
    [(0, 36), (0, 96, 172), (0, 72)]
    """

    shape: tuple[int, ...]
    tile_size: tuple[int, ...]
    overlap: tuple[int, ...]
    axes: tuple[AxisTiling, ...]

    @classmethod
    def build(cls, shape: tuple[int, ...], tile_size: object, overlap: object) -> Lattice:
        """The lattice, checked (a TilingError or DimensionError names the rule and the fix)."""
        n = len(shape)
        shape_ = as_sizes(shape, "shape", n)
        tile = as_sizes(tile_size, "tile_size", n)
        overlap_ = as_overlap(overlap, tile)
        check_tiling(shape_, tile, overlap_)
        axes = tuple(AxisTiling.build(*a) for a in zip(shape_, tile, overlap_, strict=True))
        return cls(shape_, tile, overlap_, axes)

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.Lattice", self.shape, self.tile_size, self.overlap)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """The tile's size per axis, shrunk to the image on axes shorter than the tile."""
        return tuple(axis.tile for axis in self.axes)

    @property
    def effective_overlap(self) -> tuple[int, ...]:
        """The overlap per axis, 0 on an axis of one tile."""
        return tuple(axis.overlap for axis in self.axes)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """How many tiles lie along each axis."""
        return tuple(axis.n_tiles for axis in self.axes)

    @property
    def n_tiles(self) -> int:
        """How many tiles the image has, each run once."""
        return math.prod(self.grid_shape)

    def plan_chunks(self, target: object) -> LatticeChunks:
        """Chunk boundaries near ``target`` pixels per axis (an int for all, or one per axis), each
        moved onto the lattice.
        """
        targets = as_sizes(target, "chunks", len(self.shape))
        if min(targets) <= 0:
            raise TilingError(
                f"chunks must be positive pixel counts, got chunks={target!r}: use e.g. chunks=128"
            )
        bounds = tuple(a.chunk_bounds(t) for a, t in zip(self.axes, targets, strict=True))
        return LatticeChunks(self, bounds)


@dataclass(frozen=True)
class LatticeChunks:
    """Chunk boundaries over a :class:`Lattice`, one tuple ``(0, b1, ..., size)`` an axis."""

    lattice: Lattice
    bounds: tuple[tuple[int, ...], ...]

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.LatticeChunks", self.lattice.__dask_tokenize__(), self.bounds)

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Chunk sizes per axis, in dask's format."""
        return tuple(tuple(b - a for a, b in itertools.pairwise(axis)) for axis in self.bounds)

    @property
    def numblocks(self) -> tuple[int, ...]:
        """How many chunks lie along each axis."""
        return tuple(len(axis) - 1 for axis in self.bounds)

    def extension(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """How far chunk ``index``'s tiles reach past its high side, per axis: the overlap, 0 for
        a last chunk (its last tile is flush with the border).
        """
        return tuple(
            0 if j == n - 1 else axis.overlap
            for j, n, axis in zip(index, self.numblocks, self.lattice.axes, strict=True)
        )

    def tiles(self, index: tuple[int, ...]) -> Iterator[VolumeTile]:
        """The tiles chunk ``index`` owns, in lattice order, origins relative to the chunk."""
        per_axis = [
            [(i, axis.origins[i] - bounds[j], axis.edges(i)) for i in axis.owned(bounds, j)]
            for axis, bounds, j in zip(self.lattice.axes, self.bounds, index, strict=True)
        ]
        for combo in itertools.product(*per_axis):
            yield VolumeTile(*(tuple(part) for part in zip(*combo, strict=True)))

    def n_owned(self, index: tuple[int, ...]) -> int:
        """How many tiles chunk ``index`` owns."""
        return math.prod(
            len(axis.owned(bounds, j))
            for axis, bounds, j in zip(self.lattice.axes, self.bounds, index, strict=True)
        )
