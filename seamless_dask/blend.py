"""Blending: accumulate weighted tile predictions over a chunk, overlap-add the halos, normalise.

Pure numpy; the model is reached only through a runner's ``predict_stream``. These functions are the bodies
of the tasks that :mod:`seamless_dask.graph` builds for each chunk:

1. :func:`accumulate` (stage 1) runs the tiles a chunk owns and sums ``weight * prediction`` and ``weight``
   over the chunk extended by the overlap on its high side (float64, so the sum does not depend on the order
   in which chunks add their parts).
2. :func:`halo_parts` splits off the strips that sum owes the chunks below, right and below-right.
3. :func:`settle` decides the chunk at once everywhere its upper and left neighbours do not reach: a *settled*
   chunk is final except for those thin bands, whose sums it keeps.
4. :func:`finish` adds the neighbours' strips to those bands and decides them (:func:`decide`: divide by the
   weight sum, then probabilities, logits or labels): the overlap-add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from dask.base import tokenize

from .exceptions import ModelOutputError

if TYPE_CHECKING:
    from .grid import LocalTile
    from .runner import ModelRunner
    from .weights import TileWeights

OUTPUTS = ("labels", "probabilities", "logits")


class HaloParts(NamedTuple):
    """The parts of an extended accumulator that belong to the neighbours below, right and diagonal."""

    bottom: np.ndarray
    right: np.ndarray
    corner: np.ndarray


@dataclass(frozen=True)
class TileInference:
    """What every chunk does in stage 1: run its tiles through ``runner``, weight them, sum them.

    One instance is one key of the dask graph, shared by all stage-1 tasks, so the runner (and an
    in-memory model inside it) is serialised once rather than once per task.
    """

    runner: ModelRunner
    weights: TileWeights
    tile_shape: tuple[int, int]
    n_classes: int
    nodata: float | None = None
    overlap: tuple[int, int] = (0, 0)
    model_tile: tuple[int, int] | None = None  # the tile the model is given; None: ``tile_shape``

    def __dask_tokenize__(self) -> tuple:
        return (
            "seamless_dask.TileInference",
            tokenize(self.runner, self.weights),
            self.tile_shape,
            self.n_classes,
            repr(self.nodata),  # repr: nan must tokenize equal to nan
            self.overlap,
            self.model_tile,
        )


class MaskedBlock(NamedTuple):
    """A block ready for the model: nodata filled, plus where any band holds data (``None``: everywhere)."""

    pixels: np.ndarray
    valid: np.ndarray | None


def mask_nodata(block: np.ndarray, nodata: float | None, fill: np.ndarray) -> MaskedBlock:
    """Fill nodata (and non-finite: NaN, +-inf) band values of ``block`` ``(bands, h, w)`` with ``fill``.

    A pixel is valid where at least one band holds data. Filling matters: a raw nodata value such as
    -9999, a NaN or an inf inside a tile would reach the valid pixels beside it through the model's
    receptive field (an inf turns a whole tile's logits into NaN). A band missing at a valid pixel gets
    ``fill`` (the normalisation mean, else 0); pixels with no data at all are later filled per tile from
    their nearest valid pixel (see ``_tile_pixels``).
    """
    missing = ~np.isfinite(block) if np.issubdtype(block.dtype, np.floating) else None
    if nodata is not None and not np.isnan(nodata) and representable(nodata, block.dtype):
        equal = block == np.asarray(nodata).astype(block.dtype)
        missing = equal if missing is None else missing | equal
    if missing is None or not missing.any():
        return MaskedBlock(block, None)
    filled = np.where(missing, fill.astype(np.float32)[:, None, None], block.astype(np.float32, copy=False))
    return MaskedBlock(filled, ~missing.all(axis=0))


def representable(value: float, dtype: np.dtype) -> bool:
    """Whether pixels of ``dtype`` can hold ``value`` (a nodata value they could never equal is a mistake)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    if np.issubdtype(dtype, np.floating):
        return bool(np.isnan(value)) or abs(value) <= np.finfo(dtype).max
    return True


def accumulate(inference: TileInference, block: np.ndarray, tiles: Sequence[LocalTile]) -> np.ndarray:
    """Weighted sum of the predictions of ``tiles`` over ``block`` ``(bands, h, w)``.

    Returns float64 ``(n_classes + 1, h, w)``: channels ``[:n_classes]`` hold ``sum(weight * prediction)``
    and the last channel ``sum(weight)``. Each tile goes through the model exactly once, except tiles
    whose pixels are all nodata, which never reach it; a tile's weight is zero on its nodata pixels.
    """
    (th, tw), n_classes, runner = inference.tile_shape, inference.n_classes, inference.runner
    acc = np.zeros((n_classes + 1, *block.shape[1:]), dtype=np.float64)
    block, valid = mask_nodata(block, inference.nodata, runner.config.fill_values(block.shape[0]))
    if valid is not None:
        tiles = [t for t in tiles if valid[t.y : t.y + th, t.x : t.x + tw].any()]
    batch_size = runner.config.batch_size
    batches = [tiles[start : start + batch_size] for start in range(0, len(tiles), batch_size)]
    padding = TilePadding.to_fit((th, tw), inference.model_tile or (th, tw), runner.config.fill_values(block.shape[0]))
    stacks = (padding.pad(np.stack([_tile_pixels(block, valid, t, (th, tw)) for t in batch])) for batch in batches)
    for batch, raw in zip(batches, runner.predict_stream(stacks), strict=True):
        if raw.shape[1] != n_classes:
            raise ModelOutputError(
                f"the model returned {raw.shape[1]} channels but {n_classes} were expected "
                "(num_classes, or the first call's output): pass the right num_classes, or make the model's "
                "channel count independent of its input"
            )
        preds = padding.crop(raw)
        if not np.isfinite(preds).all():
            preds = _checked_finite(preds, batch, valid, (th, tw))
        for pred, t in zip(preds, batch, strict=True):
            _add_tile(acc, pred, t, inference, valid)
    return acc


@dataclass(frozen=True)
class TilePadding:
    """How a tile smaller than the model's tile is padded up to it, and its prediction cropped back.

    A tile shrinks to the image on an axis shorter than the tile size (see :mod:`seamless_dask.grid`), but
    many networks only take sides divisible by 8, 16 or 32 (U-Nets, encoder-decoders), or the size they
    were trained on. Such a tile is centred in the model's tile, as MONAI's ``sliding_window_inference``
    does, and padded with ``fill`` per band: the normalisation mean (0 once normalised, the value a
    network's own zero padding shows it beyond an image border), else 0.
    """

    before: tuple[int, int]
    after: tuple[int, int]
    fill: np.ndarray

    @classmethod
    def to_fit(cls, tile: tuple[int, int], model_tile: tuple[int, int], fill: np.ndarray) -> TilePadding:
        extra = [max(0, m - t) for t, m in zip(tile, model_tile, strict=True)]
        before = (extra[0] // 2, extra[1] // 2)
        return cls(before, (extra[0] - before[0], extra[1] - before[1]), fill)

    @property
    def needed(self) -> bool:
        return any(self.before + self.after)

    def pad(self, stack: np.ndarray) -> np.ndarray:
        """``stack`` ``(n, bands, h, w)`` padded to the model's tile."""
        if not self.needed:
            return stack
        (by, bx), (ay, ax) = self.before, self.after
        n, bands, h, w = stack.shape
        out = np.empty((n, bands, h + by + ay, w + bx + ax), dtype=np.result_type(stack.dtype, np.float32))
        out[...] = self.fill.astype(out.dtype)[None, :, None, None]
        out[:, :, by : by + h, bx : bx + w] = stack
        return out

    def crop(self, preds: np.ndarray) -> np.ndarray:
        """Predictions ``(n, classes, H, W)`` for padded tiles, cropped back to the tiles."""
        if not self.needed:
            return preds
        (by, bx), (ay, ax) = self.before, self.after
        return preds[:, :, by : preds.shape[2] - ay, bx : preds.shape[3] - ax]


def _checked_finite(
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
                f"the model returned non-finite values (NaN or inf) on {int(bad.sum())} pixels with data of tile "
                f"{t.grid_index} (row-major index in the tile grid; TileGrid(...).window({t.grid_index}) gives its "
                "pixels): fix the model (e.g. a division by zero, or an fp16 overflow: try amp=None), or mark "
                "such inputs as nodata; seamless_dask never turns them into a class"
            )
    return np.nan_to_num(preds, nan=0.0, posinf=0.0, neginf=0.0)


def _add_tile(acc: np.ndarray, pred: np.ndarray, t: LocalTile, inference: TileInference, valid: Any) -> None:
    """``acc += weight * pred`` and ``acc[-1] += weight`` over the tile, only where its weight is non-zero."""
    support = inference.weights.support(inference.tile_shape, t.edges_y, t.edges_x, inference.overlap)
    rows = slice(t.y + support.rows.start, t.y + support.rows.stop)
    cols = slice(t.x + support.cols.start, t.x + support.cols.stop)
    pred = pred[:, support.rows, support.cols]
    n = len(pred)
    if valid is None and support.flat:  # "trim" inside the image's data: plain additions
        acc[:n, rows, cols] += pred
        acc[n, rows, cols] += 1.0
        return
    w = support.values if valid is None else support.values * valid[rows, cols]
    acc[:n, rows, cols] += pred * w
    acc[n, rows, cols] += w


def _tile_pixels(block: np.ndarray, valid: np.ndarray | None, t: LocalTile, shape: tuple[int, int]) -> np.ndarray:
    """The tile's pixels; where no band has data, the nearest pixel of the same tile that has.

    What the model sees beyond a scene's footprint is then a continuation of the scene, not a frame of
    constant fill, so valid pixels beside a nodata border are not pulled toward a "dark border" class.
    Filling from the tile alone keeps every tile's input, hence the result, independent of chunking.
    """
    rows, cols = slice(t.y, t.y + shape[0]), slice(t.x, t.x + shape[1])
    pixels = block[:, rows, cols]
    if valid is None:
        return pixels
    inside = valid[rows, cols]
    return pixels if inside.all() else nearest_valid_fill(pixels, inside)


def nearest_valid_fill(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``pixels`` ``(bands, h, w)`` with each pixel where ``valid`` is False taken from its nearest valid one
    (all of them unchanged when none is valid)."""
    if not valid.any():
        return pixels
    from scipy.ndimage import distance_transform_edt

    nearest = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    return pixels[:, nearest[0], nearest[1]]


def halo_parts(acc: np.ndarray, h: int, w: int) -> HaloParts:
    """Split off what an accumulator of a chunk of core size ``(h, w)`` owes its neighbours."""
    # float32 copies: strips wait for their neighbours along a whole front of chunks, so they are most of
    # what a run holds (I4); a copy, not a view, frees the accumulator at once. Sums of one or two float32
    # predictions ("trim") are exact in float32; smooth maps round by ~1e-7 relative.
    return HaloParts(
        bottom=acc[:, h:, :w].astype(np.float32),
        right=acc[:, :h, w:].astype(np.float32),
        corner=acc[:, h:, w:].astype(np.float32),
    )


class Settled(NamedTuple):
    """A chunk's output, decided everywhere its neighbours above and to the left do not reach, and the
    sums of the bands they do reach, which :func:`finish` completes."""

    block: np.ndarray
    top: np.ndarray | None  # sums (classes + 1, oy, w) of the rows the chunk above reaches
    left: np.ndarray | None  # sums (classes + 1, h - oy, ox) of the columns the chunk to the left reaches


@dataclass(frozen=True)
class Decision:
    """How sums become the output (see :func:`decide`)."""

    output: str
    binary: bool
    label_nodata: int | None = None

    def __call__(self, sums: np.ndarray) -> np.ndarray:
        return decide(sums, self.output, self.binary, self.label_nodata)


def settle(acc: np.ndarray, core: tuple[int, int], pending: tuple[int, int], decision: Decision) -> Settled:
    """Decide the chunk's ``core = (h, w)`` at once, keeping the sums of its ``pending = (oy, ox)`` bands.

    Only the top ``oy`` rows and the left ``ox`` columns still get halo strips from the chunks above and to
    the left. Deciding the rest now lets the extended accumulator go as soon as the chunk's own tiles are
    done: waiting for neighbours holds a thin band of sums instead of the whole accumulator (I4).
    """
    (h, w), (oy, ox) = core, pending
    sums = acc[:, :h, :w]
    top = sums[:, :oy].astype(np.float32) if oy else None  # float32 for the wait, as halo_parts
    left = sums[:, oy:, :ox].astype(np.float32) if ox else None
    return Settled(decision(sums), top, left)


def finish(
    settled: Settled,
    decision: Decision,
    top: np.ndarray | None = None,
    left: np.ndarray | None = None,
    corner: np.ndarray | None = None,
) -> np.ndarray:
    """The chunk's output: its settled block with the pending bands re-decided after adding the halo parts
    of the chunk above (``top``), to the left (``left``) and above-left (``corner``).

    Additions follow one order (own, top, left, corner) whatever the chunking, as the float64 sums need.
    """
    if settled.top is None and settled.left is None:
        return settled.block
    block = settled.block.copy()  # never write into a task's input: a retried task would see it changed
    if settled.top is not None:
        sums = settled.top.astype(np.float64)
        if top is not None:
            sums += top
        oy = sums.shape[1]
        if left is not None:
            sums[:, :, : left.shape[2]] += left[:, :oy]
        if corner is not None:
            sums[:, : corner.shape[1], : corner.shape[2]] += corner
        block[..., :oy, :] = decision(sums)
    if settled.left is not None:
        oy = block.shape[-2] - settled.left.shape[1]
        sums = settled.left.astype(np.float64)
        if left is not None:
            sums += left[:, oy:]
        block[..., oy:, : sums.shape[2]] = decision(sums)
    return block


def decide(sums: np.ndarray, output: str, binary: bool, label_nodata: int | None = None) -> np.ndarray:
    """Normalise blended sums ``(classes + 1, h, w)`` and return the requested output.

    ``"probabilities"`` and ``"logits"``: float32 ``(classes, h, w)``, NaN where no tile had data;
    ``"labels"``: ``(h, w)`` class indices in :func:`label_dtype`, ``label_nodata`` where no tile had data
    (pixels that are nodata in every band). ``binary`` (one sigmoid channel) labels p >= 0.5 as 1.
    """
    n_classes = sums.shape[0] - 1
    if output == "labels":
        if binary:
            labels = (sums[0] >= 0.5 * sums[n_classes]).astype(np.uint8)
        else:
            labels = _argmax_classes(sums[:n_classes], n_classes if label_nodata is None else n_classes + 1)
        if label_nodata is not None:
            labels[sums[n_classes] == 0] = label_nodata
        return labels
    out = np.empty(sums[:n_classes].shape, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):  # divides in float64, writes float32: no temporary
        return np.divide(sums[:n_classes], sums[n_classes], out=out, casting="unsafe")


def _argmax_classes(scores: np.ndarray, n_values: int) -> np.ndarray:
    """``np.argmax(scores, axis=0)`` (first class wins ties), one pass per class.

    numpy's argmax over the leading axis of a ``(classes, h, w)`` array strides across memory: for
    2 x 2048 x 2048 float64 it took 1.2 s, this 0.06 s.
    """
    best = scores[0].copy()
    index = np.zeros(best.shape, dtype=label_dtype(n_values))
    for c in range(1, len(scores)):
        better = scores[c] > best
        index[better] = c
        np.maximum(best, scores[c], out=best)
    return index


def label_dtype(n_classes: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds values ``0 .. n_classes - 1``.

    With a nodata value, ask for ``n_classes + 1`` values: nodata is the dtype's maximum (255 for uint8).
    """
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
