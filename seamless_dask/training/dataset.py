"""Training on tiles of huge images: a torch ``Dataset`` on the same tile grid as ``segment``.

Tiles are read window by window from the images as they are (a lazily opened GeoTIFF/COG or zarr, a
dask or numpy array), in the ``DataLoader``'s worker processes, and never written to disk. The
preprocessing is the inference path's own, so a model sees the same inputs in training and in
``segment``: the same tile windows (``TileGrid``: one lattice, last tiles flush with the border),
nodata filled per tile from the nearest valid pixel, and the same ``normalize=(mean, std)``.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from ..blend.tiles import TilePadding, mask_nodata, nearest_valid_fill
from ..exceptions import DimensionError, OptionError
from ..inputs import bands_first, bands_first_dataarray, nodata_for
from ..model.runner import RunnerConfig
from ..tiling.grid import Pair, TileGrid, TileWindow, as_pair

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


class TileDataset:
    """Tiles of one or more images (with label rasters, for training) as a map-style torch
    ``Dataset``.

    Tiles follow ``segment``'s grid and are read window by window (never the whole scene). Each item
    is a dict: ``"image"`` float32 tensor ``(bands, th, tw)``, ``"valid"`` bool ``(th, tw)``,
    ``"label"`` int64 ``(th, tw)`` when labels are given, always of the full ``tile_size`` so that
    the default collate stacks them: a tile of an image thinner than the tile is centred and padded
    as ``segment`` pads it for the model (normalised 0), with ``valid`` False and the label
    ``ignore_index`` on the padding; ``"scene"`` and ``"tile"`` (indices into ``images`` and its
    ``TileGrid``) and ``"window"`` ``(y0, x0)``.

    Parameters
    ----------
    images
        One image or a sequence of them: a path (opened lazily with
        :func:`seamless_dask.open_raster`), an ``xr.DataArray`` ``(band, y, x)`` or ``(y, x)``, or a
        numpy/dask array ``(bands, H, W)`` or ``(H, W)``.
    labels
        Label rasters ``(y, x)`` of the same shapes (and, for georeferenced rasters, the same
        transform), one per image; ``None`` for inference-style items.
    tile_size, overlap
        The tile grid, as in ``segment`` (``overlap`` only sets how far apart tiles start; 0 = no
        overlap).
    normalize
        ``(mean, std)`` in the input's units, per band or one for all, as in ``segment``.
    nodata
        The images' nodata value: ``"auto"`` (read from a DataArray), a number, or ``None``. Nodata
        pixels are filled as ``segment`` fills them and come back as ``valid = False``.
    label_nodata
        Label value(s) to ignore: ``"auto"`` (the label raster's nodata), a number or ``None``.
        Those pixels, and pixels where the image has no data, get ``ignore_index`` in ``"label"``.
    transform
        Called on each sample dict (e.g. flips applied to ``"image"`` and ``"label"`` alike) before
        it is returned.


    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import TileDataset
    >>> image, labels = np.zeros((3, 100, 90), "uint8"), np.ones((100, 90), "uint8")
    >>> tiles = TileDataset(image, labels, tile_size=64, overlap=16)
    >>> len(tiles), tiles[0]["image"].shape, tiles[0]["label"].dtype
    (4, torch.Size([3, 64, 64]), torch.int64)
    """

    def __init__(
        self,
        images: Any,
        labels: Any = None,
        *,
        tile_size: int | Pair = 256,
        overlap: int | Pair = 0,
        normalize: tuple[Any, Any] | None = None,
        nodata: float | str | None = "auto",
        label_nodata: float | str | None = "auto",
        ignore_index: int = IGNORE_INDEX,
        transform: Callable[[dict], dict] | None = None,
    ) -> None:
        self.images = [_as_image(image, f"images[{i}]") for i, image in enumerate(_as_list(images))]
        label_list = None if labels is None else _as_list(labels)
        if label_list is not None and len(label_list) != len(self.images):
            raise OptionError(
                f"labels must give one raster per image: got {len(label_list)} for "
                f"{len(self.images)} images"
            )
        self.labels = (
            None
            if label_list is None
            else [_as_labels(lab, f"labels[{i}]") for i, lab in enumerate(label_list)]
        )
        self.grids = [TileGrid(image.shape[1:], tile_size, overlap) for image in self.images]
        self.tile_size = as_pair(tile_size, "tile_size")
        self.config = RunnerConfig(normalize=normalize)
        for image in self.images:
            self.config.check_bands(image.shape[0])
        self.nodata = [nodata_for(image, nodata) for image in self.images]
        self.label_nodata = (
            [None] * len(self.images)
            if self.labels is None
            else [nodata_for(lab, label_nodata) for lab in self.labels]
        )
        self.ignore_index = ignore_index
        self.transform = transform
        if self.labels is not None:
            for i, (image, lab) in enumerate(zip(self.images, self.labels, strict=True)):
                _check_aligned(image, lab, i)
        self.tiles: list[tuple[int, int]] = [
            (s, t) for s, grid in enumerate(self.grids) for t in range(grid.n_tiles)
        ]
        self._pid = os.getpid()

    def _in_this_process(self) -> None:
        """In a ``DataLoader`` worker (a forked process), open lazily read rasters anew: a GDAL
        dataset handle inherited across ``fork`` is shared with the parent, and concurrent reads
        through it fail.
        """
        if self._pid == os.getpid():
            return
        self.images = [_reopened(image) for image in self.images]
        if self.labels is not None:
            self.labels = [_reopened(labels) for labels in self.labels]
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.tiles)

    def window(self, index: int) -> tuple[int, TileWindow]:
        """The scene and window of item ``index``."""
        scene, tile = self.tiles[_checked_index(index, len(self))]
        return scene, self.grids[scene].window(tile)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene, tile = self.tiles[_checked_index(index, len(self))]
        return self.item_at(scene, self.grids[scene].window(tile), tile)

    def item_at(self, scene: int, win: TileWindow, tile: int = -1) -> dict[str, Any]:
        """The item of any window of ``scene`` (on the lattice or not, e.g. drawn by
        :class:`RandomTiles`).
        """
        import torch

        pixels, valid = self._read_image(scene, win)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(self._padded(pixels, 0))),
            "valid": torch.from_numpy(self._padded(valid[None], 0)[0] > 0),
            "scene": scene,
            "tile": tile,
            "window": (win.y.start, win.x.start),
        }
        if self.labels is not None:
            label = self._padded(self._read_label(scene, win, valid)[None], self.ignore_index)[0]
            sample["label"] = torch.from_numpy(label.astype(np.int64))
        return self.transform(sample) if self.transform is not None else sample

    def _padded(self, array: np.ndarray, fill: float) -> np.ndarray:
        """``array`` ``(bands, h, w)`` padded to the tile size as ``segment`` pads tiles for the model."""
        fills = np.full(array.shape[0], fill, np.float32)
        return TilePadding.to_fit(array.shape[1:], self.tile_size, fills).pad(array[None])[0]

    def with_data(self, min_valid: float = 1e-9) -> TileDataset:
        """A copy without the tiles whose fraction of valid pixels is below ``min_valid``.

        By default, without the tiles that hold no data at all. Reads every tile once.
        """
        if not 0 <= min_valid <= 1:
            raise OptionError(
                f"min_valid is a fraction of a tile's pixels in [0, 1], got {min_valid}"
            )
        kept = []
        for scene, tile in self.tiles:
            _, valid = self._read_image(scene, self.grids[scene].window(tile), fill=False)
            if valid.mean() >= min_valid:
                kept.append((scene, tile))
        subset = copy.copy(self)
        subset.tiles = kept
        return subset

    def _read_image(
        self, scene: int, win: TileWindow, fill: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        self._in_this_process()
        block = read_window(self.images[scene], win)
        fill_values = self.config.fill_values(block.shape[0])
        masked = mask_nodata(block, self.nodata[scene], fill_values)
        valid = np.ones(block.shape[1:], bool) if masked.valid is None else masked.valid
        if not fill:
            return masked.pixels, valid
        pixels = (
            masked.pixels
            if masked.valid is None
            else nearest_valid_fill(masked.pixels, masked.valid)
        )
        if self.config.normalize is not None:
            mean, std = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in self.config.normalize)
            pixels = (pixels - mean) / std
        return pixels.astype(np.float32, copy=False), valid

    def _read_label(self, scene: int, win: TileWindow, valid: np.ndarray) -> np.ndarray:
        assert self.labels is not None
        raw = read_window(self.labels[scene], win)[0]
        label = raw.astype(np.int64)
        ignore = ~valid
        nodata = self.label_nodata[scene]
        if nodata is not None:
            ignore |= raw == nodata
        if np.issubdtype(raw.dtype, np.floating):
            ignore |= np.isnan(raw)
        label[ignore] = self.ignore_index
        return label


def _as_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        if not value:
            raise OptionError("images must hold at least one image")
        return list(value)
    return [value]


def _as_image(image: Any, what: str) -> Any:
    """``(bands, H, W)``: a DataArray (lazy stays lazy), or a numpy/dask array."""
    if isinstance(image, (str, os.PathLike)):
        from ..io import open_raster

        image = open_raster(image)
    if isinstance(image, xr.DataArray):
        return bands_first_dataarray(image)
    if hasattr(image, "shape") and hasattr(image, "dtype"):
        return bands_first(image, f"{what} array")
    raise DimensionError(
        f"{what} must be a path, a DataArray or an array, got {type(image).__name__}"
    )


def _as_labels(labels: Any, what: str) -> Any:
    labels = _as_image(labels, what)
    if labels.shape[0] != 1:
        raise DimensionError(
            f"{what} must be one band of class indices (y, x), got {labels.shape[0]} bands"
        )
    return labels


def _check_aligned(image: Any, labels: Any, i: int) -> None:
    if tuple(image.shape[1:]) != tuple(labels.shape[1:]):
        raise DimensionError(
            f"labels[{i}] is {tuple(labels.shape[1:])} px but images[{i}] is "
            f"{tuple(image.shape[1:])}: "
            "give label rasters on the images' own pixel grid"
        )
    if isinstance(image, xr.DataArray) and isinstance(labels, xr.DataArray):
        import rioxarray  # noqa: F401

        if image.rio.crs is not None and labels.rio.crs is not None:
            a, b = image.rio.transform(), labels.rio.transform()
            if not a.almost_equals(b) or image.rio.crs != labels.rio.crs:
                raise DimensionError(
                    f"labels[{i}] is not on images[{i}]'s grid (transform {tuple(b)[:6]} vs "
                    f"{tuple(a)[:6]}, CRS "
                    f"{labels.rio.crs} vs {image.rio.crs}): reproject it first, e.g. "
                    f"labels.rio.reproject_match(image)"
                )


def _reopened(data: Any) -> Any:
    """``data`` with its file handles opened anew: a pickle round trip re-creates xarray's file
    managers from their arguments (and a dask graph's); in-memory arrays are returned as they are,
    without a copy.
    """
    lazy = isinstance(data, xr.DataArray) and (
        data.chunks is not None or not data.variable._in_memory
    )
    return pickle.loads(pickle.dumps(data)) if lazy or hasattr(data, "dask") else data


def read_window(data: Any, win: TileWindow) -> np.ndarray:
    """The pixels of ``win`` (``(bands, th, tw)``), read from the source only now."""
    window = data[:, win.y, win.x]
    if hasattr(
        window, "compute"
    ):  # lazy: compute, never np.asarray (array-expr has no __array__, dask#11922)
        window = window.compute()
    return np.asarray(window.values if isinstance(window, xr.DataArray) else window)


def _checked_index(index: int, length: int) -> int:
    if not -length <= index < length:
        raise IndexError(f"tile index {index} out of range for a dataset of {length} tiles")
    return index % length
