"""Sliding-window inference over a volume (or a plane, or a line) that fits on one device: the tiles
of a :class:`~seamless_dask.tiling.lattice.Lattice` of any number of spatial axes, blended with the
trust maps ``segment`` uses, as MONAI's ``sliding_window_inference`` does in memory.

The lazy path for volumes larger than memory (a dask graph streamed along z, as scenes are along y)
is not built yet: docs/guide.md, "Volumes", says what is. This is its in-memory counterpart, with the
same lattice (each tile once, the last one flush with the border), the same maps
(:meth:`~seamless_dask.TileWeights.for_volume_tile`) and sums in float64.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..exceptions import DimensionError
from ..tiling.lattice import Lattice
from ..tiling.weights import TileWeights, as_weights


class VolumeTiler:
    """The tiles of ``(N, C, *shape)`` tensors and the trust-weighted mean of their predictions.

    In memory, as MONAI's ``sliding_window_inference`` is: it holds a weight map of the whole
    ``shape`` (float64) and the output; a volume larger than memory goes through
    :func:`~seamless_dask.segment` with a tile of three sizes, lazily, chunk by chunk.

    Parameters
    ----------
    shape
        The spatial size, one value an axis: ``(D, H, W)`` for a volume.
    tile_size, overlap
        One value for every axis or one an axis; a float overlap is a fraction of the tile, as
        MONAI's ``overlap`` (its stride ``int(tile * (1 - overlap))``). An axis shorter than the
        tile gets one tile of the axis's size.
    weights
        A kind (``"trim"``, ``"trust"``, ``"gaussian"``, ``"spline"``, ``"constant"``, ``"hann"``) or
        a :class:`~seamless_dask.TileWeights`; ``TileWeights("gaussian", sigma=0.125,
        border_aware=False, floor=1e-3)`` is MONAI's ``mode="gaussian"``, ``"constant"`` with
        ``border_aware=False`` its ``mode="constant"``.

    Examples
    --------
    >>> import torch
    >>> from seamless_dask import VolumeTiler
    >>> tiler = VolumeTiler((40, 64, 50), tile_size=(16, 32, 32), overlap=(4, 8, 8), weights="trust")
    >>> tiler.grid_shape, tiler.n_tiles
    ((3, 3, 2), 18)
    >>> x = torch.rand(1, 2, 40, 64, 50)
    >>> torch.allclose(tiler.run(x, lambda tiles: tiles, batch_size=4), x.double())
    True
    """

    def __init__(self, shape: Any, tile_size: Any, overlap: Any = 0, weights: Any = "trim") -> None:
        self.lattice = Lattice.build(tuple(shape), tile_size, overlap)
        self.weights: TileWeights = as_weights(weights)
        if self.weights.array is not None:
            raise DimensionError(
                "VolumeTiler takes a weights kind or a TileWeights, not an array: maps of any "
                "number of axes are built from one profile an axis"
            )
        self.weights.check_cover(self.lattice.axes)
        self.shape = self.lattice.shape
        self.tile_shape = self.lattice.tile_shape
        axes = self.lattice.axes
        self.origins = list(itertools.product(*(axis.origins for axis in axes)))
        self._positions = list(itertools.product(*(range(axis.n_tiles) for axis in axes)))
        self._maps: dict[tuple, torch.Tensor] = {}
        total = torch.zeros(self.shape, dtype=torch.float64)
        for position, origin in zip(self._positions, self.origins, strict=True):
            total[self._box(origin)] += self._map(position)
        if bool((total <= 0).any()):
            where = tuple(int(v) for v in torch.nonzero(total <= 0)[0])
            raise DimensionError(
                f"no tile gives weight to voxel {where} with weights {self.weights.spec!r}: use "
                "a map that is positive everywhere, e.g. weights='trust'"
            )
        self.weight_sum = total

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Tiles along each axis."""
        return self.lattice.grid_shape

    @property
    def n_tiles(self) -> int:
        """Tiles of one image (each run once)."""
        return self.lattice.n_tiles

    def _box(self, origin: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(o, o + t) for o, t in zip(origin, self.tile_shape, strict=True))

    def _map(self, position: tuple[int, ...]) -> torch.Tensor:
        edges = tuple(axis.edges(i) for axis, i in zip(self.lattice.axes, position, strict=True))
        key = edges if self.weights.border_aware else ()
        if key not in self._maps:
            values = self.weights.for_volume_tile(
                self.tile_shape, edges, self.lattice.effective_overlap
            )
            self._maps[key] = torch.from_numpy(np.asarray(values, dtype=np.float64))
        return self._maps[key]

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 + len(self.shape) or tuple(x.shape[2:]) != self.shape:
            raise DimensionError(
                f"expected an (N, C, {', '.join(map(str, self.shape))}) tensor, got "
                f"{tuple(x.shape)}: build the VolumeTiler with the tensor's spatial shape"
            )

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, *shape)`` -> ``(N * n_tiles, C, *tile)``: image-major, then the lattice in C
        order (the last axis fastest).
        """
        self._check(x)
        tiles = [x[(slice(None), slice(None), *self._box(o))] for o in self.origins]
        return torch.stack(tiles, 1).reshape(-1, x.shape[1], *self.tile_shape)

    def merge(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N * n_tiles, K, *tile)`` in :meth:`split`'s order -> ``(N, K, *shape)`` float64: each
        voxel the trust-weighted mean of the tiles that cover it.
        """
        if tiles.shape[0] % self.n_tiles or tuple(tiles.shape[2:]) != self.tile_shape:
            raise DimensionError(
                f"merge expects (N * {self.n_tiles}, K, {', '.join(map(str, self.tile_shape))}) "
                f"tiles, got {tuple(tiles.shape)}: pass the model's outputs for every tile of "
                "split(x), in split's order"
            )
        n, k = tiles.shape[0] // self.n_tiles, tiles.shape[1]
        stacked = tiles.reshape(n, self.n_tiles, k, *self.tile_shape)
        out = torch.zeros((n, k, *self.shape), dtype=torch.float64, device=tiles.device)
        for i in range(self.n_tiles):
            self._add(out, stacked[:, i], i)
        return out / self.weight_sum.to(tiles.device)

    def run(
        self,
        x: torch.Tensor,
        model: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int = 4,
    ) -> torch.Tensor:
        """``model`` over every tile of ``x``, ``batch_size`` tiles at a time, blended as they come:
        only one batch of predictions is held, never every tile's. ``(N, K, *shape)`` float64.
        """
        self._check(x)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DimensionError(f"batch_size must be a positive int, got {batch_size!r}")
        jobs = [(image, i) for image in range(x.shape[0]) for i in range(self.n_tiles)]
        out: torch.Tensor | None = None
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            tiles = torch.stack(
                [x[image][(slice(None), *self._box(self.origins[i]))] for image, i in batch]
            )
            pred = model(tiles)
            if not isinstance(pred, torch.Tensor) or tuple(pred.shape[2:]) != self.tile_shape:
                raise DimensionError(
                    f"the model gave {getattr(pred, 'shape', type(pred).__name__)} for tiles of "
                    f"{tuple(tiles.shape)}: it must return (tiles, classes, "
                    f"{', '.join(map(str, self.tile_shape))})"
                )
            if out is None:
                out = torch.zeros(
                    (x.shape[0], pred.shape[1], *self.shape),
                    dtype=torch.float64,
                    device=pred.device,
                )
            for row, (image, i) in enumerate(batch):
                self._add(out[image : image + 1], pred[row : row + 1], i)
        assert out is not None  # a lattice has at least one tile
        return out / self.weight_sum.to(out.device)

    def _add(self, out: torch.Tensor, pred: torch.Tensor, i: int) -> None:
        weight = self._map(self._positions[i]).to(out.device)
        out[(slice(None), slice(None), *self._box(self.origins[i]))] += pred.double() * weight
