"""The lazy graph of seamless tiled inference: one task per chunk and stage, built by hand.

For each chunk ``(j, k)`` of the plan (:class:`~seamless_dask.tiling.grid.ChunkPlan`), three tasks:

1. *infer* (stage 1, :func:`blend.infer_chunk`): the chunk's extended window
   (:mod:`seamless_dask.graph.windows`) runs the tiles the chunk owns through the model, once, sums
   weighted predictions and weights a strip of rows at a time, and settles the chunk: decided
   everywhere its upper and left neighbours do not reach;
2. *halo* (``_parts``): the strips of that sum owed to the chunks below, right and below-right;
3. *output* (:func:`blend.finish`): their strips added to the bands they reach, which are then
   decided.

Chunk boundaries lie on the tile lattice, so each tile has exactly one owner and the result does not
depend on the input's chunking. Key names are made in :mod:`seamless_dask.graph.keys`; arrays come
out through
:mod:`seamless_dask.graph.layers`, on either of dask's array engines.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, NamedTuple

import dask
import numpy as np
from dask.base import tokenize

from ..blend import accumulate as blend
from ..blend import decide
from ..exceptions import OptionError
from ..inputs import check_nodata_fits
from ..model import receptive
from ..model.runner import ModelRunner
from ..options import PADDINGS, Output, OutputKind, output_kind, stored_dtype
from ..tiling.grid import ChunkPlan, ChunkTiles, Pair, TileGrid
from ..tiling.region import Region
from ..tiling.weights import TileWeights
from . import keys
from .chunk_size import check_chunk_fits, check_plannable, check_tile_fits, chunk_target
from .layers import ChunkLayer, GraphNode, NamedGraph, graph_with, new_array, ref, task
from .windows import Windows, extended_windows


@dataclass(frozen=True)
class SegmentJob:
    """Everything ``segment`` was asked to do, as one value (the options travel with the graph)."""

    runner: ModelRunner
    weights: TileWeights
    tile_size: Pair
    overlap: Pair
    output: Output
    num_classes: int | None
    chunks: Pair | None
    nodata: float | None = None
    resources: tuple[tuple[str, float], ...] = ()
    region: Region | None = None  # only tiles touching it run; pixels outside it are nodata
    padding: str = "flush"  # what pads an image smaller than the tile (blend.tiles.TilePadding)
    cval: float = 0.0
    dtype: str | None = (
        None  # a soft output's stored dtype (options.stored_dtype); None: the default
    )

    @property
    def kind(self) -> OutputKind:
        """What the output is (:class:`~seamless_dask.options.OutputKind`); checks its name."""
        return output_kind(self.output)

    def __post_init__(self) -> None:
        n = self.num_classes
        if self.kind.needs_probabilities and self.runner.config.activation is None:
            raise OptionError(
                "output='uncertainty' measures how much tiles disagree on probabilities, but "
                "activation=None: "
                "use activation='softmax' (or 'sigmoid' for one channel)"
            )
        if n is not None and (not isinstance(n, Integral) or isinstance(n, bool) or n < 1):
            raise OptionError(f"num_classes must be a positive int, got {self.num_classes!r}")
        self.weights.check_tile(self.tile_size)
        if self.padding not in PADDINGS:
            raise OptionError(
                f"padding must be one of {PADDINGS}, got padding={self.padding!r}: use e.g. "
                "'reflect', or 'constant' with cval="
            )
        if (
            isinstance(self.cval, bool)
            or not isinstance(self.cval, Real)
            or not np.isfinite(self.cval)
        ):
            raise OptionError(f"cval must be a finite number, got cval={self.cval!r}: e.g. cval=0")
        object.__setattr__(self, "dtype", stored_dtype(self.kind, self.dtype))
        if self.nodata is not None and (
            isinstance(self.nodata, bool) or not isinstance(self.nodata, Real)
        ):
            raise OptionError(
                f"nodata must be a number or None, got nodata={self.nodata!r}: use e.g. nodata=0"
            )

    @property
    def binary(self) -> bool:
        """Labels come from thresholding one sigmoid channel rather than an argmax."""
        return self.runner.config.activation == "sigmoid" and self.num_classes == 1


class SegmentGraph(NamedTuple):
    """The lazy output of ``segment``, the nodata value of its labels (``None``: no nodata), its
    classes.
    """

    array: Any
    label_nodata: int | None
    n_classes: int = 0


def build_graph(image: Any, job: SegmentJob) -> SegmentGraph:
    """The lazy output array for ``image`` ``(bands, H, W)``: numpy, a lazily loaded variable, or dask."""
    bands, height, width = image.shape
    grid = TileGrid((height, width), job.tile_size, job.overlap)
    job.weights.check_cover((grid.y, grid.x))  # a zero-edged map leaves no pixel without a tile
    chunk_plan = grid.plan_chunks(
        chunk_target(image, job.chunks, job.runner.config.batch_size, grid)
    )
    check_plannable(chunk_plan)
    check_tile_fits(bands, (height, width), job.tile_size, job.runner.config.batch_size)
    job.runner.config.check_bands(bands)
    check_nodata_fits(job.nodata, image.dtype)
    n_classes = job.num_classes or job.runner.probe(bands, job.tile_size)
    job = dataclasses.replace(job, num_classes=n_classes)
    check_chunk_fits(bands, chunk_plan, n_classes * job.kind.moments)
    overlap = grid.effective_overlap
    if (
        job.weights.kind == "trim" and grid.n_tiles > 1
    ):  # "trim" is exact only when its margins cover the model's field
        receptive.check_overlap(job.runner.spec, bands, job.tile_size, overlap)
    inference = blend.TileInference(
        job.runner,
        job.weights,
        grid.tile_shape,
        n_classes,
        job.nodata,
        overlap,
        model_tile=job.tile_size,
        moments=job.kind.moments,
        padding=job.padding,
        cval=float(job.cval),
        exact=job.dtype == "float64",
    )
    masked = (
        job.nodata is not None or np.issubdtype(image.dtype, np.floating) or job.region is not None
    )
    # The runner (and an in-memory model inside it) is one key of the graph, not a copy per task.
    model_key = dask.delayed(inference, pure=True, traverse=False)
    windows = extended_windows(image, chunk_plan, reads_apart=bool(job.resources))
    plan = InferencePlan(windows, model_key, chunk_plan, job, bool(masked))
    built = plan.build()
    RESUME_PLANS.remember(built.array, plan)
    return built


@dataclass(frozen=True)
class InferencePlan:
    """What a ``segment`` result is built from: the extended windows, the model's key, the chunk
    plan and the job. It builds the graph, and rebuilds it for a resumed write with fewer tiles
    (:meth:`build`).
    """

    windows: Windows
    model_key: Any  # a Delayed holding the blend.TileInference
    chunk_plan: ChunkPlan
    job: SegmentJob
    masked: bool  # the input may hold nodata: labels get a nodata value of their own

    def build(self, done: np.ndarray | None = None) -> SegmentGraph:
        """The output graph; chunks marked ``done`` run only the tiles that reach into chunks not
        done.

        Its tasks are made as dask asks for them (:class:`~seamless_dask.graph.layers.ChunkLayer`),
        not here.
        """
        plan, decision = self.chunk_plan, self.decision()
        token = tokenize(
            self.windows.token, plan, self.model_key.key, done, self.job.region, decision
        )
        infer = keys.infer_name(self.job.resources, token)
        (hs, ws), (halo_y, halo_x) = plan.chunks, self.halos
        model = ref(self.model_key.key)

        def make(key: tuple) -> GraphNode:
            j, k = key[-2:]
            tiles = self.tiles(j, k, done)
            pending = (halo_y[j - 1] if j else 0, halo_x[k - 1] if k else 0)
            frame = blend.Frame((hs[j], ws[k]), pending, (halo_y[j], halo_x[k]))
            # a done chunk: its halos only
            decided = None if done is not None and done[j, k] else decision
            if tiles:
                return task(
                    key, blend.infer_chunk, model, self.windows.node(j, k), frame, decided, tiles
                )
            # no tile to run (outside a region, or done on resume): its window is never read
            shape = (hs[j] + halo_y[j], ws[k] + halo_x[k])
            return task(key, blend.infer_nothing, model, shape, frame, decided)

        def tiles_of(j: int, k: int) -> int:
            return len(self.tiles(j, k, done))

        resources = {"resources": dict(self.job.resources)} if self.job.resources else None
        stage1 = ChunkLayer(
            (len(hs), len(ws)), lambda j, k: [(infer, j, k)], make, resources, tiles_of
        )
        TILE_COUNTS.remember(infer, tiles_of)
        return self._blend(stage1, infer, decision)

    @functools.cached_property
    def reach(self) -> Pair:
        """How far past the next tile's origin a tile's weights reach: the overlap, or half of it
        for ``"trim"``, whose margins are zero
        (:meth:`~seamless_dask.tiling.weights.TileWeights.reach`).
        """
        grid = self.chunk_plan.grid
        return self.job.weights.reach(grid.tile_shape, grid.effective_overlap)

    @functools.cached_property
    def halos(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per chunk row and column, how far its halo strips reach past it: the chunk plan's
        extension (the overlap its window is read with; 0 for the last) cut to :attr:`reach` (strips
        of zero sums are never kept).
        """
        (ext_y, ext_x), (reach_y, reach_x) = self.chunk_plan.extensions, self.reach
        return tuple(min(e, reach_y) for e in ext_y), tuple(min(e, reach_x) for e in ext_x)

    def tiles(self, j: int, k: int, done: np.ndarray | None) -> ChunkTiles:
        """The tiles chunk ``(j, k)`` runs: all it owns, or, once it is ``done``, only those
        reaching into neighbours that are not. Listed here only when a region or a resume selects
        some of them (a cost in proportion to what runs); otherwise the chunk's rows and columns of
        the lattice stand for them.
        """
        plan, region = self.chunk_plan, self.job.region
        tiles = plan.local_tiles(j, k)
        (th, tw), y0, x0 = plan.grid.tile_shape, plan.y_bounds[j], plan.x_bounds[k]
        (h, w), (ext_y, ext_x) = (
            (plan.chunks[0][j], plan.chunks[1][k]),
            (plan.extensions[0][j], plan.extensions[1][k]),
        )
        if (
            region is not None
            and not region.touching(np.array([(y0, x0, y0 + h + ext_y, x0 + w + ext_x)]))[0]
        ):
            # its tiles cover its extended box: none touches
            return dataclasses.replace(tiles, keep=frozenset())
        resumed = done is not None and done[j, k]
        if region is None and not resumed:
            return tiles
        kept = list(tiles)
        if region is not None:
            boxes = np.array([(y0 + t.y, x0 + t.x, y0 + t.y + th, x0 + t.x + tw) for t in kept])
            kept = [t for t, touches in zip(kept, region.touching(boxes), strict=True) if touches]
        if resumed:
            assert done is not None
            ny, nx = done.shape

            def missing(dj: int, dk: int) -> bool:
                return j + dj < ny and k + dk < nx and not done[j + dj, k + dk]

            # where a tile's weights end: its last row and column of non-zero weight, past its chunk
            # or not
            (lap_y, lap_x), (reach_y, reach_x) = (
                plan.grid.effective_overlap,
                self.reach,
            )
            end_y, end_x = th - (lap_y - reach_y), tw - (lap_x - reach_x)
            kept = [
                t
                for t in kept
                if (t.y + end_y > h and missing(1, 0))
                or (t.x + end_x > w and missing(0, 1))
                or (t.y + end_y > h and t.x + end_x > w and missing(1, 1))
            ]
        return dataclasses.replace(tiles, keep=frozenset(t.grid_index for t in kept))

    def decision(self) -> decide.Decision:
        """How this job's sums become its output: labels (with a nodata value when the input may
        hold nodata), probabilities, logits or uncertainty.
        """
        job = self.job
        label_nodata = (
            int(np.iinfo(self.label_dtype()).max) if job.kind.is_labels and self.masked else None
        )
        return decide.Decision(job.output, job.binary, label_nodata, job.dtype)

    def label_dtype(self) -> np.dtype:
        """The labels' dtype: the smallest that holds the classes (and the nodata value when masked)."""
        n_classes = int(self.job.num_classes or 0)
        return (
            np.dtype(np.uint8) if self.job.binary else decide.label_dtype(n_classes + self.masked)
        )

    def _blend(self, stage1: ChunkLayer, infer: str, decision: decide.Decision) -> SegmentGraph:
        """Stage 2 (halo parts, output blocks), and the whole graph as an array.

        Stage 1 is a layer of its own, so that it alone carries the worker resources the model needs
        (and, since annotations on fused layers are lost, dask#7036, distributed#8593, its key names
        carry them).
        """
        job, chunk_plan = self.job, self.chunk_plan
        labels, n_classes, label_nodata = (
            job.kind.is_labels,
            int(job.num_classes or 0),
            decision.label_nodata,
        )
        names = keys.stage2_names(infer, tokenize(decision), job.output)
        stage2 = _Stage2(chunk_plan, self.halos, infer, names, decision, job.region)
        (hs, ws), out = chunk_plan.chunks, names[1]
        layer = ChunkLayer((len(hs), len(ws)), stage2.keys_of, stage2.make)
        below = NamedGraph(
            graph_with(infer, stage1, [*self.windows.dependencies, self.model_key]), infer
        )
        graph = graph_with(out, layer, [below])
        if labels:
            return SegmentGraph(
                new_array(graph, out, (hs, ws), self.label_dtype()), label_nodata, n_classes
            )
        bands = job.kind.bands(n_classes)
        dtype = np.dtype(job.dtype or np.float32)
        return SegmentGraph(new_array(graph, out, ((bands,), hs, ws), dtype), None, n_classes)


@dataclass(frozen=True)
class _Stage2:
    """The tasks of stage 2 for each chunk: its halo parts (where it has neighbours below or right),
    and its output block (its settled block finished with the parts of the chunks above and to the
    left).
    """

    plan: ChunkPlan
    halos: tuple[tuple[int, ...], tuple[int, ...]]  # InferencePlan.halos
    infer: str
    names: tuple[str, str]  # halo parts, output
    decision: decide.Decision
    region: Region | None

    def keys_of(self, j: int, k: int) -> list:
        (halo_y, halo_x), (parts, out) = self.halos, self.names
        own = [(parts, j, k)] if halo_y[j] or halo_x[k] else []
        return [
            *own,
            (out, j, k) if output_kind(self.decision.output).is_labels else (out, 0, j, k),
        ]

    def make(self, key: tuple) -> GraphNode:
        (parts, _), plan = self.names, self.plan
        j, k = key[-2:]
        (h, w) = (plan.chunks[0][j], plan.chunks[1][k])
        if key[0] == parts:
            return task(key, _parts, ref((self.infer, j, k)))
        halo_y, halo_x = self.halos
        oy, ox = halo_y[j - 1] if j else 0, halo_x[k - 1] if k else 0
        top = task(None, _part, ref((parts, j - 1, k)), "bottom") if oy else None
        left = task(None, _part, ref((parts, j, k - 1)), "right") if ox else None
        corner = task(None, _part, ref((parts, j - 1, k - 1)), "corner") if oy and ox else None
        y0, x0 = plan.y_bounds[j], plan.x_bounds[k]
        clip = self.region is not None and not self.region.covers_box(y0, x0, y0 + h, x0 + w)
        finished = task(
            None if clip else key,
            blend.finish,
            ref((self.infer, j, k)),
            self.decision,
            top,
            left,
            corner,
        )
        return (
            task(key, decide.clip_to_region, finished, self.region, (y0, x0), self.decision)
            if clip
            else finished
        )


def _parts(chunk: blend.ChunkSums) -> blend.HaloParts:
    """The halo parts of a chunk's stage-1 result, a key of their own: the neighbours that wait for
    them do not hold the chunk's settled block.
    """
    return chunk.parts


def _part(parts: blend.HaloParts, which: str) -> np.ndarray:
    return getattr(parts, which)


class ResumePlans:
    """The :class:`InferencePlan` of each recent ``segment`` result, by its dask name, so that a
    resumed write can rebuild the result with fewer tiles (:meth:`restricted`). A strong mapping,
    bounded: the oldest of ``size`` are forgotten (a forgotten plan costs a resume only the tiles of
    done neighbours, never a wrong pixel). Writers reach it through :func:`resumed_array` only.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.plans: OrderedDict[str, InferencePlan] = OrderedDict()

    def remember(self, array: Any, plan: InferencePlan) -> None:
        """Keep what rebuilds ``array`` for a resumed write (until ``size`` newer ones are kept)."""
        self.plans[array.name] = plan
        while len(self.plans) > self.size:
            self.plans.popitem(last=False)

    def restricted(self, array: Any, done: np.ndarray) -> Any:
        """``array`` (a ``segment`` result) rebuilt so that chunks marked ``done`` run only the
        tiles that the chunks not done need for their blend; their own output must not be computed
        from it.

        A result this process did not build (or one transformed since) comes back unchanged: still
        correct, it just recomputes the tiles of done neighbours.
        """
        plan = self.plans.get(array.name)
        if plan is None or done.shape != array.numblocks[-2:]:
            return array
        return plan.build(done).array


RESUME_PLANS = ResumePlans()


class TileCounts:
    """``tiles_of(j, k)`` of the recent model layers, by name, for graphs that no longer hold the
    layer (dask's array-expr engine flattens a graph into a dict). Bounded as :class:`ResumePlans`.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.counts: OrderedDict[str, Callable[..., int]] = OrderedDict()

    def remember(self, name: str, tiles_of: Callable[..., int]) -> None:
        """Keep ``tiles_of`` for the model layer ``name``."""
        self.counts[name] = tiles_of
        while len(self.counts) > self.size:
            self.counts.popitem(last=False)


TILE_COUNTS = TileCounts()


def planned_tiles(obj: Any) -> dict[Any, int]:
    """The graph's contract with progress: ``{model task's key: tiles it runs}`` for every model
    task in ``obj``'s graph, from the plan (the layer's ``tiles_of``), one entry a chunk. No task is
    made or read, and the input's layers are never listed.
    """
    graph = obj.__dask_graph__()
    layers = getattr(graph, "layers", None)
    counts: dict[Any, int] = {}
    for name, layer in (layers or {"": graph}).items():
        tiles_of = getattr(layer, "tiles_of", None)
        if tiles_of is not None and str(name).startswith(keys.PREFIX):
            ny, nx = layer.numblocks
            counts.update({(name, j, k): tiles_of(j, k) for j in range(ny) for k in range(nx)})
        elif not hasattr(layer, "is_materialized") or layer.is_materialized():
            # listed already (dask's array-expr engine flattens our layers into one): look the
            # model layers up by name
            for key in layer:
                if keys.model_key(key) == key and (count := TILE_COUNTS.counts.get(key[0])):
                    counts[key] = count(*key[1:])  # a plane's (j, k), a volume's (i, j, k)
    return counts
    for name, layer in layers.items():
        tiles_of = getattr(layer, "tiles_of", None)
        if tiles_of is None or not str(name).startswith(keys.PREFIX):
            continue
        ny, nx = layer.numblocks
        counts.update({(name, j, k): tiles_of(j, k) for j in range(ny) for k in range(nx)})
    return counts


def resumed_array(array: Any, done: np.ndarray) -> Any:
    """The graph's one contract with the writers: ``array`` (a ``segment`` result) as a resumed write
    computes it, given ``done`` (a bool per chunk, the store's done-markers). Chunks marked done run
    only the tiles their missing neighbours need; with nothing done, or for an array this process did
    not build, ``array`` itself.
    """
    return RESUME_PLANS.restricted(array, done) if done.any() else array
