"""The task bodies of a volume's overlap-add, over any number of spatial axes (``(z, y, x)`` first).

Stage 1 (:func:`volume_sums`) runs the tiles a chunk owns, each once, and sums their weighted
predictions in float64 over the chunk's window (the chunk and the overlap its tiles reach past its
high side on every axis); it hands each chunk that window touches, itself included, the part that
falls in that chunk's core: its own in float64, a neighbour's in float32 (half the bytes waiting
between chunks and sent between workers; float64 with ``dtype="float64"``), as a plane's halos.
Stage 2 (:func:`finish_volume`) adds a chunk's parts in one fixed order and decides them. As in the
planes' path (:mod:`.accumulate`), no tile is ever run twice; unlike it, a stage-1 task holds its
whole window's sums (a volume chunk's rows are not streamed).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.base import tokenize

from ..exceptions import ModelOutputError
from ..model.runner import ModelRunner
from ..tiling.lattice import LatticeChunks
from ..tiling.weights import TileWeights
from .decide import Decision
from .tiles import TilePadding, mask_nodata, nearest_valid_fill


@dataclass(frozen=True)
class VolumeInference:
    """What every chunk of a volume does in stage 1: one key of the graph, shared by its tasks."""

    runner: ModelRunner
    weights: TileWeights
    plan: LatticeChunks
    n_classes: int
    model_tile: tuple[int, ...]
    nodata: float | None = None
    padding: str = "flush"
    cval: float = 0.0
    exact: bool = False  # dtype="float64": the parts owed to neighbours stay float64

    def __dask_tokenize__(self) -> tuple:
        return (
            "seamless_dask.VolumeInference",
            tokenize(self.runner, self.weights),
            self.plan.__dask_tokenize__(),
            self.n_classes,
            self.model_tile,
            repr(self.nodata),
            self.padding,
            self.cval,
            self.exact,
        )

    def origin(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """Where chunk ``index`` starts, per axis."""
        return tuple(b[i] for b, i in zip(self.plan.bounds, index, strict=True))

    def window(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """Chunk ``index``'s window: its core and the overlap its tiles reach past it."""
        reach = self.plan.extension(index)
        return tuple(
            slice(b[i], min(b[i + 1] + r, b[-1]))
            for b, i, r in zip(self.plan.bounds, index, reach, strict=True)
        )

    def targets(self, index: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The chunks whose core chunk ``index``'s window touches, itself first, in C order."""
        window = self.window(index)
        per_axis = []
        for b, w in zip(self.plan.bounds, window, strict=True):
            per_axis.append([j for j in range(len(b) - 1) if b[j] < w.stop and b[j + 1] > w.start])
        return list(itertools.product(*per_axis))


def volume_sums(
    inference: VolumeInference, block: np.ndarray, index: tuple[int, ...]
) -> dict[tuple[int, ...], tuple[tuple[int, ...], np.ndarray]]:
    """Stage 1 of chunk ``index``: its tiles through the model, once each, weighted and summed over
    ``block`` (its window, ``(bands, *window)``); ``{target: (offset in target's core, part)}``.
    """
    runner, plan = inference.runner, inference.plan
    lattice = plan.lattice
    tile = lattice.tile_shape
    masked = mask_nodata(block, inference.nodata, runner.config.fill_values(block.shape[0]))
    pixels, valid = masked.pixels, masked.valid
    k = inference.n_classes
    sums = np.zeros((k + 1, *block.shape[1:]), np.float64)
    padding = TilePadding.to_fit(
        tile, inference.model_tile, runner.config.fill_values(block.shape[0]),
        inference.padding, inference.cval,
    )  # fmt: skip
    tiles = list(plan.tiles(index))
    batch_size = runner.config.batch_size
    for start in range(0, len(tiles), batch_size):
        batch, stack = [], []
        for t in tiles[start : start + batch_size]:
            box = tuple(slice(o, o + s) for o, s in zip(t.origin, tile, strict=True))
            inside = None if valid is None else valid[box]
            if inside is not None and not inside.any():
                continue  # a tile with no data never reaches the model
            part = pixels[(slice(None), *box)]
            if inside is not None and not inside.all():
                part = nearest_valid_fill(part, inside)
            batch.append((t, box, inside))
            stack.append(part)
        if not batch:
            continue
        preds = padding.crop(runner.predict(padding.pad(np.stack(stack))))
        for pred, (t, box, inside) in zip(preds, batch, strict=True):
            _add(sums, pred, t, box=box, inside=inside, inference=inference)
    return _parts(inference, sums, index)


def _add(
    sums: np.ndarray, pred: np.ndarray, t: Any, *, box: tuple[slice, ...], inside: Any,
    inference: VolumeInference,
) -> None:  # fmt: skip
    lattice = inference.plan.lattice
    bad = ~np.isfinite(pred).all(axis=0)
    if inside is not None:
        bad &= inside
    if bad.any():
        raise ModelOutputError(
            f"the model returned non-finite values (NaN or inf) on {int(bad.sum())} voxels with "
            f"data of the tile at lattice position {t.position}: fix the model (or try amp=None), "
            "or mark such inputs as nodata; seamless_dask never turns them into a class"
        )
    weight = inference.weights.for_volume_tile(
        lattice.tile_shape, t.edges, lattice.effective_overlap
    ).astype(np.float64)
    if inside is not None:
        weight = weight * inside
    k = len(pred)
    sums[(slice(0, k), *box)] += np.nan_to_num(pred) * weight
    sums[k][box] += weight


def _parts(
    inference: VolumeInference, sums: np.ndarray, index: tuple[int, ...]
) -> dict[tuple[int, ...], tuple[tuple[int, ...], np.ndarray]]:
    window = inference.window(index)
    parts = {}
    for target in inference.targets(index):
        lo = inference.origin(target)
        hi = tuple(b[j + 1] for b, j in zip(inference.plan.bounds, target, strict=True))
        start = [max(w.start, a) for w, a in zip(window, lo, strict=True)]
        stop = [min(w.stop, b) for w, b in zip(window, hi, strict=True)]
        box = tuple(
            slice(s - w.start, e - w.start) for s, e, w in zip(start, stop, window, strict=True)
        )
        offset = tuple(s - a for s, a in zip(start, lo, strict=True))
        # a copy: a view would keep the whole window alive until the target is finished
        kind = np.float64 if inference.exact or target == index else np.float32
        parts[target] = (offset, sums[(slice(None), *box)].astype(kind))
    return parts


def part_of(parts: dict, target: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """The part of a chunk's sums that ``target`` is owed (a task of its own in the graph)."""
    return parts[target]


def finish_volume(
    decision: Decision, core: tuple[int, ...], *parts: tuple[tuple[int, ...], np.ndarray]
) -> np.ndarray:
    """Stage 2 of a chunk of ``core`` shape: its parts added in the order given, then decided."""
    channels = parts[0][1].shape[0]
    sums = np.zeros((channels, *core), np.float64)
    for offset, part in parts:
        box = tuple(slice(o, o + n) for o, n in zip(offset, part.shape[1:], strict=True))
        sums[(slice(None), *box)] += part
    return decision(sums)
