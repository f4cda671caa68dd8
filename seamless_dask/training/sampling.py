"""Random training tiles: a fixed number of windows per epoch anywhere in the scenes, seeded,
optionally weighted.

:class:`RandomTiles` wraps a :class:`~seamless_dask.TileDataset` as a map-style dataset of ``n`` items whose
item ``i`` of epoch ``e`` is a window drawn from ``(seed, e, i)`` alone: the same draw in any
``DataLoader`` worker process and on any rank, so ``num_workers > 0`` and ``DistributedSampler``
(which shards the indices) work as for any map-style dataset, and a run is reproducible. Windows
start anywhere (not only on the lattice), are always ``tile_size`` (padded as ``segment`` pads where
a scene is smaller), and only they are read.

Weights (``"valid"``: the fraction of pixels with data; ``"classes"``: class frequencies in the
labels, rare classes up-weighted) are estimated once from a strided sample of each scene (one pixel
in ``step`` per axis, ``step`` about an eighth of the tile), then a draw picks a lattice cell by
weight and a window uniformly within it, so windows still start anywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..blend.tiles import mask_nodata
from ..exceptions import OptionError
from ..tiling.grid import TileWindow
from .dataset import TileDataset, read_window


class RandomTiles:
    """``n`` random windows of ``dataset``'s scenes per epoch, as a map-style torch dataset.

    Parameters
    ----------
    dataset
        The :class:`TileDataset` whose scenes, labels, preprocessing and ``tile_size`` are used.
    n
        Items per epoch.
    seed
        With the epoch (:meth:`set_epoch`) and the index, all a draw depends on.
    weight
        ``None`` (uniform over pixels of all scenes), ``"valid"`` (by the fraction of pixels with
        data), or ``"classes"`` (by class frequency in the labels, each class weighted by
        ``class_weights``, by default the inverse of its frequency, so that rare classes are drawn
        as often as common ones).
    class_weights
        One weight per class for ``weight="classes"``.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import RandomTiles, TileDataset
    >>> tiles = RandomTiles(TileDataset(np.zeros((3, 500, 400), "uint8"), tile_size=64), n=100, seed=1)
    >>> len(tiles), tuple(tiles[0]["image"].shape), tiles[0]["window"] == tiles[0]["window"]
    (100, (3, 64, 64), True)
    """

    def __init__(
        self,
        dataset: TileDataset,
        n: int,
        *,
        seed: int = 0,
        weight: str | None = None,
        class_weights: Any = None,
    ) -> None:
        if n < 1:
            raise OptionError(f"n is the number of tiles per epoch, >= 1, got n={n}")
        if weight not in (None, "valid", "classes"):
            raise OptionError(f"weight must be None, 'valid' or 'classes', got weight={weight!r}")
        if weight == "classes" and dataset.labels is None:
            raise OptionError(
                "weight='classes' draws by class frequency in the labels: give the TileDataset "
                "labels"
            )
        self.dataset, self.n, self.seed, self.weight, self.epoch = dataset, n, seed, weight, 0
        self.class_weights = (
            None if class_weights is None else np.asarray(class_weights, np.float64)
        )
        # per lattice cell: scene, y0, y1, x0, x1, cumulative weight
        self._cells: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Draw a new set of windows (call it each epoch, as with ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def window(self, index: int) -> tuple[int, TileWindow]:
        """The scene and window of item ``index`` in this epoch."""
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} tiles per epoch")
        rng = np.random.default_rng([self.seed, self.epoch, index % self.n])
        cells = self._weighted_cells()
        scene, y0, y1, x0, x1 = cells[
            np.searchsorted(cells[:, 5], rng.random() * cells[-1, 5], side="right")
        ][:5]
        th, tw = self.dataset.grids[int(scene)].tile_shape
        top, left = int(rng.integers(y0, y1 + 1)), int(rng.integers(x0, x1 + 1))
        return int(scene), TileWindow(slice(top, top + th), slice(left, left + tw))

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, win = self.window(index)
        return self.dataset.item_at(scene, win)

    def _weighted_cells(self) -> np.ndarray:
        """Lattice cells (ranges of window origins, one per lattice tile) and the cumulative draw
        weight.
        """
        if self._cells is not None:
            return self._cells
        rows = []
        for scene, grid in enumerate(self.dataset.grids):
            (height, width), (th, tw) = grid.shape, grid.tile_shape
            ys, xs = (
                _origin_ranges(grid.y.origins, height - th),
                _origin_ranges(grid.x.origins, width - tw),
            )
            weights = self._scene_weights(scene, ys, xs)
            for i, (y0, y1) in enumerate(ys):
                for j, (x0, x1) in enumerate(xs):
                    rows.append((scene, y0, y1, x0, x1, weights[i, j]))
        cells = np.array(rows, dtype=np.float64)
        if cells[:, 5].sum() <= 0:
            raise OptionError(
                f"no window has any weight with weight={self.weight!r}: every sampled pixel is "
                f"empty"
            )
        cells[:, 5] = np.cumsum(cells[:, 5])
        self._cells = cells
        return cells

    def _scene_weights(
        self, scene: int, ys: list[tuple[int, int]], xs: list[tuple[int, int]]
    ) -> np.ndarray:
        """The draw weight of each cell: its area of origins (uniform), times its valid or class score."""
        area = np.outer([y1 - y0 + 1 for y0, y1 in ys], [x1 - x0 + 1 for x0, x1 in xs]).astype(
            np.float64
        )
        # each scene in proportion to its pixels
        area *= np.prod(self.dataset.grids[scene].shape) / area.sum()
        if self.weight is None:
            return area
        grid, ds = self.dataset.grids[scene], self.dataset
        step = max(1, min(grid.tile_shape) // 8)
        sample = _strided(ds.images[scene], step)
        # the rule TileDataset reads by
        masked = mask_nodata(sample, ds.nodata[scene], np.zeros(sample.shape[0]))
        valid = np.ones(sample.shape[1:], bool) if masked.valid is None else masked.valid
        score = valid.astype(np.float64)
        if self.weight == "classes":
            assert ds.labels is not None
            labels = _strided(ds.labels[scene], step)[0]
            keep = (
                valid & (labels != ds.label_nodata[scene])
                if ds.label_nodata[scene] is not None
                else valid
            )
            classes = labels[keep].astype(np.int64)
            counts = np.bincount(classes, minlength=1).astype(np.float64)
            inverse = np.where(counts > 0, 1 / np.maximum(counts, 1), 0)
            per_class = self.class_weights if self.class_weights is not None else inverse
            score = np.zeros(labels.shape)
            score[keep] = per_class[np.clip(classes, 0, len(per_class) - 1)]
        out = np.empty((len(ys), len(xs)))
        th, tw = grid.tile_shape
        for i, (y0, _) in enumerate(ys):
            for j, (x0, _) in enumerate(xs):
                out[i, j] = score[
                    y0 // step : (y0 + th) // step + 1, x0 // step : (x0 + tw) // step + 1
                ].mean()
        return area * out


def _origin_ranges(origins: tuple[int, ...], last: int) -> list[tuple[int, int]]:
    """Split the window origins ``0..last`` into one range per lattice origin (the last cell ends at
    ``last``).
    """
    starts = list(origins[:-1]) or [0]
    ends = [*starts[1:], max(0, last) + 1]
    return [(a, max(a, b - 1)) for a, b in zip(starts, ends, strict=True)]


def _strided(data: Any, step: int) -> np.ndarray:
    """``data`` ``(bands, H, W)`` at one pixel in ``step`` per axis (lazy rasters read only those)."""
    return read_window(data, TileWindow(slice(None, None, step), slice(None, None, step)))
