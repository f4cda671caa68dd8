"""Blending: weighted tile predictions summed over a chunk, the halos overlap-added, the sums
decided.

Pure numpy; the model is reached only through a runner's ``predict_stream``. These functions are the
bodies of the tasks that :mod:`seamless_dask.graph.build` builds for each chunk:

1. :func:`infer_chunk` (stage 1) runs the tiles a chunk owns and sums ``weight * prediction`` and
   ``weight`` over the chunk extended by the overlap on its high side (float64, so the sum does not
   depend on the order in which chunks add their parts), a strip of rows at a time
   (:func:`row_sums`). As the strips come it *settles* the chunk (:func:`settle_rows`): decided
   everywhere its upper and left neighbours do not reach, with the sums of those thin bands kept,
   and the strips it owes the chunks below, right and below-right split off (:class:`HaloParts`, as
   wide as the weights reach past the chunk: :attr:`Frame.halo`).
2. :func:`finish` adds the neighbours' strips to those bands and decides them
   (:mod:`seamless_dask.blend.decide`: divide by the weight sum, then probabilities, logits or
   labels): the overlap-add.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from dask.base import tokenize

from ..exceptions import ModelOutputError
from .decide import Decision
from .tiles import TilePadding, checked_finite, mask_nodata, tile_pixels

if TYPE_CHECKING:
    from ..model.runner import ModelRunner
    from ..tiling.grid import LocalTile
    from ..tiling.weights import Support, TileWeights


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
    padding: str = "flush"  # how a tile smaller than the model's is padded (TilePadding)
    cval: float = 0.0  # padding="constant"'s value
    exact: bool = False  # dtype="float64": the halos handed between chunks stay float64

    @property
    def channels(self) -> int:
        """Channels of the sums: ``weight * prediction`` per class (and per moment), then the weight."""
        return self.n_classes * self.moments + 1

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
            self.padding,
            self.cval,
            self.exact,
        )


def infer_chunk(
    inference: TileInference,
    block: np.ndarray,
    frame: Frame,
    decision: Decision | None,
    tiles: Sequence[LocalTile],
) -> ChunkSums:
    """Stage 1 of a chunk: run ``tiles`` over ``block`` (its extended window, ``(bands, H, W)``) and
    hand on the chunk settled and the halo parts it owes its neighbours (:func:`settle_rows`).

    The weighted sums are made a strip of rows at a time (:func:`row_sums`): the task holds a tile's
    height of float64 sums, not the chunk's, so that a chunk's memory does not grow by ``(classes +
    1) * 8`` bytes a pixel, and large chunks (fewer tasks for the scheduler) cost what their input
    and output cost. ``decision=None`` (a chunk already written, run again only for its neighbours'
    halos) decides nothing.
    """
    return settle_rows(
        row_sums(inference, block, tiles), frame, inference.channels, decision, inference.exact
    )


def infer_nothing(
    inference: TileInference,
    shape: tuple[int, int],
    frame: Frame,
    decision: Decision | None,
) -> ChunkSums:
    """Stage 1 of a chunk that runs no tile (outside a region, or done on resume): zero sums and
    weights over its core and halo ``shape``, and no window read.
    """
    channels, rows = inference.channels, 256
    strips = (
        (y0, np.zeros((channels, min(rows, shape[0] - y0), shape[1])))
        for y0 in range(0, shape[0], rows)
    )
    return settle_rows(strips, frame, channels, decision, inference.exact)


def row_sums(
    inference: TileInference, block: np.ndarray, tiles: Sequence[LocalTile]
) -> Iterator[tuple[int, Any]]:
    """The weighted sums of ``tiles``' predictions over ``block`` ``(bands, H, W)``, top to bottom,
    as strips ``(y0, sums)`` that no later tile changes; together they cover rows ``0 .. H``.

    ``sums`` is float64 ``(n_classes + 1, rows, W)``: channels ``[:n_classes]`` hold ``sum(weight *
    prediction)`` and the last ``sum(weight)`` (with ``moments=2``, ``sum(weight * prediction**2)``
    in between). Tiles are added in lattice order, so each pixel's additions come in one order
    whatever the chunking (as the float64 sums need). Each tile goes through the model exactly once,
    except tiles whose pixels are all nodata, which never reach it; a tile's weight is zero on its
    nodata pixels.
    """
    (th, tw), runner = inference.tile_shape, inference.runner
    # a ChunkTiles, expanded here in the task (already in row order)
    tiles = sorted(tiles, key=lambda t: t.y)
    height, width = block.shape[1:]
    fill = runner.config.fill_values(block.shape[0])
    block, valid = mask_nodata(block, inference.nodata, fill)
    if valid is not None:
        tiles = [t for t in tiles if valid[t.y : t.y + th, t.x : t.x + tw].any()]
    rows = _Rows(np.zeros((inference.channels, min(th, height), width)))
    padding = TilePadding.to_fit(
        (th, tw), inference.model_tile or (th, tw), fill, inference.padding, inference.cval
    )
    batches: deque[list[LocalTile]] = deque()  # made, not yet predicted (one ahead on a GPU)

    def stacks() -> Iterator[np.ndarray]:
        start = 0
        while start < len(tiles):
            batches.append(tiles[start : start + MODEL_SHARE.batch(runner.config.batch_size)])
            start += len(batches[-1])
            yield padding.pad(
                np.stack([tile_pixels(block, valid, t, (th, tw)) for t in batches[-1]])
            )

    with MODEL_SHARE.joined():
        predictions = runner.predict_stream(stacks())
        yield from _sum_predictions(
            inference, predictions, batches, rows, valid=valid, padding=padding
        )
    yield from rows.final_before(height)


def _sum_predictions(
    inference: TileInference,
    predictions: Iterator[np.ndarray],
    batches: deque,
    rows: _Rows,
    *,
    valid: Any,
    padding: TilePadding,
) -> Iterator[tuple[int, np.ndarray]]:
    """Add each batch's predictions into ``rows``, handing on the rows that no later tile reaches."""
    (th, tw), n_classes = inference.tile_shape, inference.n_classes
    for raw in predictions:
        batch = batches.popleft()
        if raw.shape[1] != n_classes:
            raise ModelOutputError(
                f"the model returned {raw.shape[1]} channels but {n_classes} were expected "
                "(num_classes, or the first call's output): pass the right num_classes, or make "
                "the model's "
                "channel count independent of its input"
            )
        preds = padding.crop(raw)
        if not np.isfinite(preds).all():
            preds = checked_finite(preds, batch, valid, (th, tw))
        if inference.moments == 2:
            preds = np.concatenate([preds, preds * preds], axis=1)
        for pred, t in zip(preds, batch, strict=True):
            yield from rows.final_before(t.y)  # no tile left starts above t.y
            _add_tile(rows.sums, pred, t, inference, valid)


class ModelShare:
    """The stage-1 tasks running the model in this process now, and the batch each takes:
    ``batch_size`` tiles are in the model at once in a process, shared by the tasks side by side
    (two threads: half a batch each). Two model calls at once keep two cores busy, but each holds
    its batch's activations: split this way they hold one batch's worth between them
    (``benchmarks/peers.py``, README: the memory of in-memory images). With ``resources={"GPU": 1}``
    a worker runs one model task at a time: full batches.

    The share follows the most tasks seen side by side since the model was last idle, not the tasks
    running at this instant: while one task ends and the next starts, the other would otherwise take
    a whole batch beside the newcomer's half.
    """

    def __init__(self) -> None:
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    @contextmanager
    def joined(self) -> Iterator[None]:
        """Count the calling task among those running the model while the block runs."""
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                self.most = self.most if self.running else 0

    def batch(self, batch_size: int) -> int:
        """The tiles of the next model call of one of the running tasks."""
        return max(1, batch_size // max(1, self.most))


MODEL_SHARE = ModelShare()


class _Rows:
    """A tile's height of sums, rows ``base .. base + len``, moving down a chunk as its tiles are
    added.
    """

    def __init__(self, sums: np.ndarray) -> None:
        self.sums, self.base = sums, 0

    def final_before(self, y: int) -> Iterator[tuple[int, np.ndarray]]:
        """Hand on rows ``base .. y`` (final: no tile left starts above ``y``), then hold rows from
        ``y``.
        """
        held = self.sums.shape[1]
        while self.base < y:
            n = min(y - self.base, held)
            yield self.base, self.sums[:, :n].copy()
            self.sums[:, : held - n] = self.sums[:, n:]  # numpy copies overlapping views correctly
            self.sums[:, held - n :] = 0
            self.base += n


class Frame(NamedTuple):
    """A chunk's ``core`` size ``(h, w)``, its ``pending`` bands ``(oy, ox)`` (the rows and columns
    the chunks above and to the left reach with their halos) and its own ``halo`` ``(hy, hx)``: how
    far past its core its tiles' weights reach
    (:meth:`~seamless_dask.tiling.weights.TileWeights.reach`; 0 on the image's last row or column).
    """

    core: tuple[int, int]
    pending: tuple[int, int]
    halo: tuple[int, int]


class ChunkSums(NamedTuple):
    """What stage 1 hands on for a chunk: the chunk settled, and the halo parts its neighbours are
    owed.
    """

    settled: Settled
    parts: HaloParts


def settle_rows(
    strips: Iterable[tuple[int, np.ndarray]],
    frame: Frame,
    channels: int,
    decision: Decision | None,
    exact: bool = False,
) -> ChunkSums:
    """A chunk's :class:`ChunkSums` from the strips of its sums (:func:`row_sums`) over its window,
    ``channels`` deep.

    The chunk's core ``frame.core = (h, w)`` is decided at once, except that the sums of its pending
    bands ``frame.pending = (oy, ox)`` (the top rows and left columns that the chunks above and to
    the left still reach) are kept for :func:`finish`; the ``frame.halo = (hy, hx)`` past the core
    is owed to the chunks below, right and below-right (the window's rows and columns beyond it hold
    zero sums: no weight reaches them, and they are not kept). Waiting for neighbours then holds
    thin bands of sums, never an accumulator (I4). Bands and halos are float32: sums of one or two
    float32 predictions ("trim") are exact in float32; smooth maps round by ~1e-7 relative.
    ``exact`` (``dtype="float64"``): they are float64, twice the bytes, and round nothing.
    """
    (h, w), (oy, ox), (hy, hx) = frame.core, frame.pending, frame.halo
    sizes = [(oy, w), (h - oy, ox), (hy, w), (h, hx), (hy, hx)]
    kind = np.float64 if exact else np.float32
    top, left, bottom, right, corner = (np.zeros((channels, *size), kind) for size in sizes)
    block: np.ndarray | None = None
    for y0, sums in strips:
        y1, stop = y0 + sums.shape[1], min(y0 + sums.shape[1], h)
        if y0 < stop:  # rows of the core
            own = sums[:, : stop - y0]
            if decision is not None:
                decided = decision(own[:, :, :w])
                if block is None:
                    block = np.empty((*decided.shape[:-2], h, w), decided.dtype)
                block[..., y0:stop, :] = decided
            right[:, y0:stop] = own[:, :, w : w + hx]
            top[:, y0 : min(stop, oy)] = own[:, : max(0, min(stop, oy) - y0), :w]
            first = max(y0, oy)
            if first < stop:
                left[:, first - oy : stop - oy] = own[:, first - y0 :, :ox]
        first, last = max(y0, h), min(y1, h + hy)
        if first < last:  # rows of the halo below
            bottom[:, first - h : last - h] = sums[:, first - y0 : last - y0, :w]
            corner[:, first - h : last - h] = sums[:, first - y0 : last - y0, w : w + hx]
    return ChunkSums(
        Settled(block, top if oy else None, left if ox else None), HaloParts(bottom, right, corner)
    )


def _add_tile(
    acc: np.ndarray, pred: np.ndarray, t: LocalTile, inference: TileInference, valid: Any
) -> None:
    """Stage 1's tile: ``acc`` holds the rows from the tile's top (:class:`_Rows`), ``valid`` the
    chunk's.
    """
    support = inference.weights.support(
        inference.tile_shape, t.edges_y, t.edges_x, inference.overlap
    )
    add_weighted(acc, pred, support, (0, t.x), valid, valid_at=(t.y, t.x))


def add_weighted(
    sums: np.ndarray,
    prediction: np.ndarray,
    support: Support,
    at: tuple[int, int],
    valid: Any = None,
    *,
    valid_at: tuple[int, int] = (0, 0),
) -> None:
    """The one accumulation kernel of the overlap-add (stage 1 and :class:`~.stream.TileBlender`
    use it): ``sums[:-1] += weight * prediction`` and ``sums[-1] += weight`` for a tile whose
    top-left lies at ``at`` in ``sums``, only where its trust map (``support``, the map's non-zero
    box) is non-zero; ``valid`` (a 0/1 mask whose ``valid_at`` is the tile's top-left) takes
    nodata pixels out of the weight. ``sums`` is float64 ``(classes + 1, rows, cols)``.
    """
    (y, x), n = at, len(prediction)
    rows = slice(y + support.rows.start, y + support.rows.stop)
    cols = slice(x + support.cols.start, x + support.cols.stop)
    pred = prediction[:, support.rows, support.cols]
    if valid is None and support.flat:  # "trim" inside the image's data: plain additions
        sums[:n, rows, cols] += pred
        sums[n, rows, cols] += 1.0
        return
    w = support.values
    if valid is not None:
        vy, vx = valid_at
        w = (
            w
            * valid[
                vy + support.rows.start : vy + support.rows.stop,
                vx + support.cols.start : vx + support.cols.stop,
            ]
        )
    sums[:n, rows, cols] += pred * w
    sums[n, rows, cols] += w


class Settled(NamedTuple):
    """A chunk's output, decided everywhere its neighbours above and to the left do not reach, and
    the sums of the bands they do reach, which :func:`finish` completes.
    """

    # None: nothing decided (a chunk run again only for its neighbours' halos)
    block: np.ndarray | None
    top: np.ndarray | None  # sums (classes + 1, oy, w) of the rows the chunk above reaches
    # sums (classes + 1, h - oy, ox) of the columns the chunk to the left reaches
    left: np.ndarray | None


def finish(
    chunk: ChunkSums,
    decision: Decision,
    top: np.ndarray | None = None,
    left: np.ndarray | None = None,
    corner: np.ndarray | None = None,
) -> np.ndarray:
    """The chunk's output: its settled block (``chunk.settled``) with the pending bands re-decided
    after adding the halo parts of the chunk above (``top``), to the left (``left``) and above-left
    (``corner``).

    Additions follow one order (own, top, left, corner) whatever the chunking, as the float64 sums
    need.
    """
    settled = chunk.settled
    assert settled.block is not None, "a chunk decided nothing: only its halo parts were asked for"
    if settled.top is None and settled.left is None:
        return settled.block
    # never write into a task's input: a retried task would see it changed
    block = settled.block.copy()
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
