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
from .tiles import TilePadding, checked_finite, mask_nodata, tile_pixels

if TYPE_CHECKING:
    from .grid import LocalTile
    from .region import Region
    from .runner import ModelRunner
    from .weights import TileWeights


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
    moments: int = 1  # 2: also sum weight * prediction**2, for output="uncertainty"

    def __dask_tokenize__(self) -> tuple:
        return (
            "seamless_dask.TileInference",
            tokenize(self.runner, self.weights),
            self.tile_shape,
            self.n_classes,
            repr(self.nodata),  # repr: nan must tokenize equal to nan
            self.overlap,
            self.model_tile,
            self.moments,
        )


def accumulate(inference: TileInference, block: np.ndarray, tiles: Sequence[LocalTile]) -> np.ndarray:
    """Weighted sum of the predictions of ``tiles`` over ``block`` ``(bands, h, w)``.

    Returns float64 ``(n_classes + 1, h, w)``: channels ``[:n_classes]`` hold ``sum(weight * prediction)``
    and the last channel ``sum(weight)`` (with ``moments=2``, ``sum(weight * prediction**2)`` in between).
    Each tile goes through the model exactly once, except tiles whose pixels are all nodata, which never
    reach it; a tile's weight is zero on its nodata pixels.
    """
    (th, tw), n_classes, runner = inference.tile_shape, inference.n_classes, inference.runner
    tiles = list(tiles)  # a ChunkTiles: its rows and columns of the lattice, expanded here, in the task
    acc = np.zeros((n_classes * inference.moments + 1, *block.shape[1:]), dtype=np.float64)
    fill = runner.config.fill_values(block.shape[0])
    block, valid = mask_nodata(block, inference.nodata, fill)
    if valid is not None:
        tiles = [t for t in tiles if valid[t.y : t.y + th, t.x : t.x + tw].any()]
    batch_size = runner.config.batch_size
    batches = [tiles[start : start + batch_size] for start in range(0, len(tiles), batch_size)]
    padding = TilePadding.to_fit((th, tw), inference.model_tile or (th, tw), fill)
    stacks = (padding.pad(np.stack([tile_pixels(block, valid, t, (th, tw)) for t in batch])) for batch in batches)
    for batch, raw in zip(batches, runner.predict_stream(stacks), strict=True):
        if raw.shape[1] != n_classes:
            raise ModelOutputError(
                f"the model returned {raw.shape[1]} channels but {n_classes} were expected "
                "(num_classes, or the first call's output): pass the right num_classes, or make the model's "
                "channel count independent of its input"
            )
        preds = padding.crop(raw)
        if not np.isfinite(preds).all():
            preds = checked_finite(preds, batch, valid, (th, tw))
        if inference.moments == 2:
            preds = np.concatenate([preds, preds * preds], axis=1)
        for pred, t in zip(preds, batch, strict=True):
            _add_tile(acc, pred, t, inference, valid)
    return acc


def no_tiles(inference: TileInference, shape: tuple[int, int]) -> np.ndarray:
    """The accumulator of a chunk that runs no tile (outside a region): zero sums, zero weight."""
    return np.zeros((inference.n_classes * inference.moments + 1, *shape), dtype=np.float64)


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
    sums of the bands they do reach, which :func:`finish` completes.
    """

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
        """Decide ``sums`` (``(classes + 1, y, x)``: weighted sums, then the weight) into this output's block."""
        return decide(sums, self.output, self.binary, self.label_nodata)


def clip_to_region(block: np.ndarray, region: Region, origin: tuple[int, int], decision: Decision) -> np.ndarray:
    """``block`` with nodata on the pixels whose centre lies outside ``region`` (NaN for probabilities)."""
    inside = region.mask(*origin, block.shape[-2:])
    if inside.all():
        return block
    block = block.copy()
    block[..., ~inside] = np.nan if decision.label_nodata is None else decision.label_nodata
    return block


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
    ``"uncertainty"``: float32 ``(2, h, w)``, the tiles' disagreement and the blend's entropy;
    ``"labels"``: ``(h, w)`` class indices in :func:`label_dtype`, ``label_nodata`` where no tile had data
    (pixels that are nodata in every band). ``binary`` (one sigmoid channel) labels p >= 0.5 as 1.
    """
    if output == "uncertainty":
        return _uncertainty(sums, binary)
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


def _uncertainty(sums: np.ndarray, binary: bool) -> np.ndarray:
    """``(2, h, w)`` float32 from sums of ``w * p``, ``w * p**2`` and ``w``: how much the tiles covering each
    pixel disagree (their weighted variance, summed over classes) and the entropy of the blend (nats).

    One sigmoid channel counts as the two classes ``1 - p`` and ``p``. NaN where no tile had data.
    """
    n = (sums.shape[0] - 1) // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[:n] / sums[-1]
        variance = np.clip(sums[n:-1] / sums[-1] - mean * mean, 0, None).sum(axis=0)
        probs = np.concatenate([1 - mean, mean]) if binary else mean
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=0)
    out = np.stack([variance * (2 if binary else 1), entropy]).astype(np.float32)
    out[:, sums[-1] == 0] = np.nan
    return out


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
