"""What the model is given, tile by tile, and what it may give back.

Nodata and non-finite band values are filled before the model sees them (:func:`mask_nodata`);
pixels with no data at all take their nearest valid pixel of the same tile
(:func:`nearest_valid_fill`), so a dark or -9999 frame does not pull the valid pixels beside it; a
tile thinner than the model's tile is padded for it and its prediction cropped back
(:class:`TilePadding`); a prediction that is NaN or infinite on a pixel with data fails the job
(:func:`checked_finite`), never becomes class 0. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..exceptions import ModelOutputError

if TYPE_CHECKING:
    from ..tiling.grid import LocalTile


class MaskedBlock(NamedTuple):
    """A block ready for the model: nodata filled, plus where any band holds data (``None``:
    everywhere).
    """

    pixels: np.ndarray
    valid: np.ndarray | None


def mask_nodata(block: np.ndarray, nodata: float | None, fill: np.ndarray) -> MaskedBlock:
    """Fill nodata (and non-finite: NaN, +-inf) band values of ``block`` ``(bands, h, w)`` with
    ``fill``.

    A pixel is valid where at least one band holds data. Filling matters: a raw nodata value such as
    -9999, a NaN or an inf inside a tile would reach the valid pixels beside it through the model's
    receptive field (an inf turns a whole tile's logits into NaN). A band missing at a valid pixel
    gets ``fill`` (the normalisation mean, else 0); pixels with no data at all are later filled per
    tile from their nearest valid pixel (see :func:`tile_pixels`).
    """
    missing = ~np.isfinite(block) if np.issubdtype(block.dtype, np.floating) else None
    if nodata is not None and not np.isnan(nodata) and representable(nodata, block.dtype):
        equal = block == np.asarray(nodata).astype(block.dtype)
        missing = equal if missing is None else missing | equal
    if missing is None or not missing.any():
        return MaskedBlock(block, None)
    per_band = fill.astype(np.float32).reshape(-1, *(1,) * (block.ndim - 1))  # a plane or a volume
    kind = np.float64 if block.dtype == np.float64 else np.float32  # float64 pixels stay float64
    filled = np.where(missing, per_band.astype(kind), block.astype(kind, copy=False))
    return MaskedBlock(filled, ~missing.all(axis=0))


def representable(value: float, dtype: np.dtype) -> bool:
    """Whether pixels of ``dtype`` can hold ``value`` (a nodata value they could never equal is a
    mistake).
    """
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    if np.issubdtype(dtype, np.floating):
        return bool(np.isnan(value)) or abs(value) <= np.finfo(dtype).max
    return True


NUMPY_MODES: dict[str, Any] = {"reflect": "reflect", "replicate": "edge", "wrap": "wrap"}


@dataclass(frozen=True)
class TilePadding:
    """How a tile smaller than the model's tile is padded up to it, and its prediction cropped back.

    A tile shrinks to the image on an axis shorter than the tile size (see
    :mod:`seamless_dask.tiling.grid`), but many networks only take sides divisible by 8, 16 or 32
    (U-Nets, encoder-decoders), or the size they were trained on. Such a tile is centred in the
    model's tile, as MONAI's ``sliding_window_inference`` does, and padded as ``mode`` says:
    ``"flush"`` (the default) with ``fill`` per band, the normalisation mean (0 once normalised, the
    value a network's own zero padding shows it beyond an image border), else 0; ``"constant"``
    with ``cval`` (MONAI's ``padding_mode="constant", cval=...``, in the input's units);
    ``"reflect"`` (mirrored, the edge pixel not repeated: MONAI's and torch's ``reflect``),
    ``"replicate"`` (the edge pixel repeated) or ``"wrap"`` (the far side: tiler's and numpy's).
    """

    before: tuple[int, ...]  # one an axis: a plane's (y, x), a volume's (z, y, x)
    after: tuple[int, ...]
    fill: np.ndarray
    mode: str = "flush"

    @classmethod
    def to_fit(
        cls,
        tile: tuple[int, ...],
        model_tile: tuple[int, ...],
        fill: np.ndarray,
        mode: str = "flush",
        cval: float = 0.0,
    ) -> TilePadding:
        """The padding that brings ``tile`` up to ``model_tile``, centred, as ``mode`` says."""
        extra = [max(0, m - t) for t, m in zip(tile, model_tile, strict=True)]
        before = tuple(e // 2 for e in extra)
        if mode == "constant":
            fill = np.full(len(fill), cval, dtype=np.float64)
        return cls(before, tuple(e - b for e, b in zip(extra, before, strict=True)), fill, mode)

    @property
    def needed(self) -> bool:
        """Whether the tile must be padded at all."""
        return any(self.before + self.after)

    def pad(self, stack: np.ndarray) -> np.ndarray:
        """``stack`` ``(n, bands, h, w)`` (``(n, bands, d, h, w)``) padded to the model's tile."""
        if not self.needed:
            return stack
        widths = ((0, 0), (0, 0), *zip(self.before, self.after, strict=True))
        dtype = np.result_type(stack.dtype, np.float32)
        if self.mode in NUMPY_MODES:
            return np.pad(stack.astype(dtype), widths, mode=NUMPY_MODES[self.mode])
        out = np.empty([s + b + a for s, (b, a) in zip(stack.shape, widths, strict=True)], dtype)
        out[...] = self.fill.astype(dtype).reshape(1, -1, *(1,) * len(self.before))
        out[self._inside(stack.shape[2:])] = stack
        return out

    def crop(self, preds: np.ndarray) -> np.ndarray:
        """Predictions ``(n, classes, ...)`` for padded tiles, cropped back to the tiles."""
        if not self.needed:
            return preds
        tile = [p - b - a for p, b, a in zip(preds.shape[2:], self.before, self.after, strict=True)]
        return preds[self._inside(tile)]

    def _inside(self, tile: Sequence[int]) -> tuple[slice, ...]:
        return (
            slice(None),
            slice(None),
            *(slice(b, b + t) for b, t in zip(self.before, tile, strict=True)),
        )


def checked_finite(
    preds: np.ndarray, batch: Sequence[LocalTile], valid: np.ndarray | None, shape: tuple[int, int]
) -> np.ndarray:
    """``preds`` with non-finite values zeroed where no band holds data (their weight is zero, but
    ``0 * nan`` is still NaN); raises for the first tile that has them on a pixel with data.

    A NaN would otherwise lose every comparison of the argmax and come out as class 0, silently.
    """
    for pred, t in zip(preds, batch, strict=True):
        bad = ~np.isfinite(pred).all(axis=0)
        if valid is not None:
            bad &= valid[t.y : t.y + shape[0], t.x : t.x + shape[1]]
        if bad.any():
            raise ModelOutputError(
                f"the model returned non-finite values (NaN or inf) on {int(bad.sum())} pixels "
                f"with data of tile "
                f"{t.grid_index} (row-major index in the tile grid; "
                f"TileGrid(...).window({t.grid_index}) gives its "
                "pixels): fix the model (e.g. a division by zero, or an fp16 overflow: try "
                "amp=None), or mark "
                "such inputs as nodata; seamless_dask never turns them into a class"
            )
    return np.nan_to_num(preds, nan=0.0, posinf=0.0, neginf=0.0)


def tile_pixels(
    block: np.ndarray, valid: np.ndarray | None, t: LocalTile, shape: tuple[int, int]
) -> np.ndarray:
    """The tile's pixels; where no band has data, the nearest pixel of the same tile that has.

    What the model sees beyond a scene's footprint is then a continuation of the scene, not a frame
    of constant fill, so valid pixels beside a nodata border are not pulled toward a "dark border"
    class. Filling from the tile alone keeps every tile's input, hence the result, independent of
    chunking.
    """
    rows, cols = slice(t.y, t.y + shape[0]), slice(t.x, t.x + shape[1])
    pixels = block[:, rows, cols]
    if valid is None:
        return pixels
    inside = valid[rows, cols]
    return pixels if inside.all() else nearest_valid_fill(pixels, inside)


def nearest_valid_fill(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``pixels`` ``(bands, h, w)`` (or a volume's ``(bands, d, h, w)``) with each pixel where
    ``valid`` is False taken from its nearest
    valid one (all of them unchanged when none is valid).
    """
    if not valid.any():
        return pixels
    from scipy.ndimage import distance_transform_edt

    nearest = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return pixels[(slice(None), *nearest)]
