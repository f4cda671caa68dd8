"""``segment()``: the lazy dask/xarray graph of seamless tiled inference.

The graph has two stages, one task per chunk each (see DESIGN.md, "The data's walk"):

1. *infer*: the chunk, with a halo of ``overlap`` pixels on its high side, runs the tiles it owns
   through the model once and accumulates weighted predictions and weights over its extended window;
2. *blend*: the chunk adds the halo strips its upper, left and upper-left neighbours reached into it,
   then divides by the weight sum and decides the output.

Chunk boundaries are chosen from the tile grid (multiples of the stride), so each tile has exactly one
owner and the result does not depend on the input's chunking.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from . import blend, keys
from .exceptions import DimensionError, OptionError
from .grid import ChunkPlan, LocalTile, Pair, TileGrid, as_pair
from .runner import ModelRunner, RunnerConfig
from .weights import TileWeights, as_weights

DEFAULT_CHUNK = 2048
IN_MEMORY_CHUNK = 1024
_DROPPED_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "nodata")


@dataclass(frozen=True)
class Job:
    """Everything ``segment`` was asked to do, as one value (the options travel with the graph)."""

    runner: ModelRunner
    weights: TileWeights
    tile_size: Pair
    overlap: Pair
    output: str
    num_classes: int | None
    chunks: Pair | None
    nodata: float | None = None
    resources: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.output not in blend.OUTPUTS:
            raise OptionError(f"output must be one of {blend.OUTPUTS}, got output={self.output!r}: use e.g. 'labels'")
        n = self.num_classes
        if n is not None and (not isinstance(n, Integral) or isinstance(n, bool) or n < 1):
            raise OptionError(f"num_classes must be a positive int, got {self.num_classes!r}")
        self.weights.check_tile(self.tile_size)
        if self.nodata is not None and (isinstance(self.nodata, bool) or not isinstance(self.nodata, Real)):
            raise OptionError(f"nodata must be a number or None, got nodata={self.nodata!r}: use e.g. nodata=0")

    @property
    def binary(self) -> bool:
        """Labels come from thresholding one sigmoid channel rather than an argmax."""
        return self.runner.config.activation == "sigmoid" and self.num_classes == 1


def segment(
    data: Any,
    model: Any,
    *,
    tile_size: int | Pair = 256,
    overlap: int | Pair = 64,
    batch_size: int = 8,
    output: str = "labels",
    weights: str | TileWeights | np.ndarray = "trim",
    device: str = "auto",
    normalize: tuple[Any, Any] | None = None,
    activation: str | None = "softmax",
    num_classes: int | None = None,
    chunks: int | Pair | None = None,
    tta: str | None = None,
    amp: str | None = None,
    nodata: float | str | None = "auto",
    resources: dict[str, float] | str | None = "auto",
    trust_model: bool = False,
) -> Any:
    """Segment an image of any size with a model that sees ``tile_size`` tiles, without seams.

    Parameters
    ----------
    data
        ``xr.DataArray`` with dims ``(band, y, x)`` or ``(y, x)`` (numpy- or dask-backed): returns a lazy,
        dask-backed ``xr.DataArray``. A numpy array ``(bands, H, W)`` or ``(H, W)``: returns numpy.
        A torch tensor: returns a tensor on the same device. A dask array: returns a dask array.
    model
        ``torch.nn.Module``, TorchScript module or file, callable on NCHW float32 batches, or an import
        string ``"pkg.module:factory"``.
    tile_size, overlap
        Tile size and overlap between neighbouring tiles, in pixels, an int or ``(y, x)``.
    batch_size
        Tiles per model call.
    output
        ``"labels"``: ``(y, x)`` argmax class in the smallest unsigned dtype that holds the classes;
        ``"probabilities"``: ``(class, y, x)`` float32, activation then blend; ``"logits"``: blended raw
        model output.
    weights
        Trust map. ``"trim"`` (default): each pixel takes the prediction of the tile in which it lies
        farthest from an edge (the U-Net paper's overlap-tile strategy; exact whole-image results when
        ``overlap // 2`` covers the model's receptive field). ``"trust"`` (a tent), ``"spline"``,
        ``"gaussian"``, ``"constant"``: smooth blends. Or a positive array of the tile's shape, or a
        :class:`~seamless_dask.TileWeights`.
    device
        ``"auto"`` (CUDA when visible), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    normalize
        ``(mean, std)`` in the input's units, per band or one for all.
    activation
        ``"softmax"``, ``"sigmoid"`` or ``None``, applied per tile before blending (not for ``"logits"``).
    num_classes
        Output channels of the model; when omitted, one call on a zero tile finds it out.
    chunks
        Pixels per chunk (int or ``(y, x)``), rounded to the tile grid; default: the input's dask chunks,
        2048 for a lazily read raster, and for an image in memory at least three chunks per side up to
        1024 px (but at least two batches of tiles each), so that every core has work.
    tta
        Test-time augmentation: ``None``, ``"flips"`` (4 views) or ``"d4"`` (8 views), averaged per tile.
    amp
        Mixed precision on CUDA: ``"bf16"`` or ``"fp16"`` (``torch.autocast``); blending stays float64.
    nodata
        The input's nodata value: ``"auto"`` reads it from a DataArray (``.rio.nodata``, ``_FillValue``);
        a number sets it; ``None`` treats every value as data. A pixel that is nodata (or NaN) in every band
        is nodata in the output (labels: the dtype's maximum, 255 for uint8; probabilities: NaN); nodata
        band values are filled before the model sees them, tiles with no data are never run, and a tile's
        weight is zero on its nodata pixels.
    resources
        dask worker resources each model task needs on a ``distributed`` cluster, e.g. ``{"GPU": 1}`` so
        that model work lands on GPU workers only. ``"auto"``: ``{"GPU": 1}`` when ``device`` is CUDA, or
        when it is ``"auto"`` and a worker of the active cluster advertises a ``GPU`` resource; else none.
    trust_model
        Load model files that run code as they load (``torch.export`` ``.pt2`` files are unpickled). Off by
        default: such a file is refused. Import strings ``"pkg.module:factory"`` run their package's code by
        design, as any import does.
    """
    config = RunnerConfig(
        batch_size=batch_size,
        device=_device_for(data, device),
        normalize=normalize,
        activation=None if output == "logits" else activation,
        tta=tta,
        amp=amp,
        trust_model=trust_model,
    )
    from .cluster import shareable

    job = Job(
        runner=shareable(ModelRunner(model, config)),  # with a Client: an in-memory model goes to workers once
        weights=as_weights(weights),
        tile_size=as_pair(tile_size, "tile_size"),
        overlap=as_pair(overlap, "overlap"),
        output=output,
        num_classes=num_classes,
        chunks=None if chunks is None else as_pair(chunks, "chunks"),
        nodata=_nodata_for(data, nodata),
        resources=_resources_for(config.device, resources),
    )
    from .cluster import current_client, ensure_scheduler_plugins

    client = current_client()
    if client is not None:  # resource routing and row order on the scheduler (once per client)
        ensure_scheduler_plugins(client, required=bool(job.resources))
    if isinstance(data, xr.DataArray):
        return _segment_dataarray(data, job, _JobRecorder(data, model, job))
    if _is_tensor(data):
        result = _build(_as_bands_first(data.detach().cpu().numpy(), "tensor"), job).array.compute()
        import torch

        return torch.from_numpy(result).to(data.device)
    if isinstance(data, da.Array):
        return _build(_as_bands_first(data, "dask array"), job).array
    if isinstance(data, np.ndarray):
        return _build(_as_bands_first(data, "array"), job).array.compute()
    raise DimensionError(
        f"data must be an xarray.DataArray, a numpy array, a dask array or a torch tensor, got {type(data).__name__}: "
        "open rasters with seamless_dask.open_raster(path)"
    )


MAX_TILES = 4_000_000
MAX_CHUNKS = 250_000


def check_plannable(chunk_plan: ChunkPlan) -> None:
    """Refuse, before anything is built, a scene whose plan would not fit in this process.

    ``segment`` lists every tile of every chunk in the graph it builds here, in the client: about a
    kilobyte per tile and a few per chunk. Past these limits that alone takes gigabytes and minutes.
    """
    grid = chunk_plan.grid
    n_chunks = (len(chunk_plan.y_bounds) - 1) * (len(chunk_plan.x_bounds) - 1)
    if grid.n_tiles <= MAX_TILES and n_chunks <= MAX_CHUNKS:
        return
    h, w = grid.shape
    raise DimensionError(
        f"the scene is {h} x {w} px: {grid.n_tiles:,} tiles of {grid.tile_shape} px in {n_chunks:,} chunks, more "
        f"than the {MAX_TILES:,} tiles and {MAX_CHUNKS:,} chunks one graph is planned with (each is listed in this "
        "process before any pixel is read): segment it window by window, e.g. segment(data[:, y0:y1, x0:x1], ...) "
        "for windows of up to 300000 px a side, each written to its own region, or use larger tiles and chunks"
    )


def _check_nodata_fits(nodata: float | None, dtype: np.dtype) -> None:
    if nodata is None or (np.isnan(nodata) and not np.issubdtype(dtype, np.integer)):
        return
    if not blend.representable(nodata, dtype):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            allowed = f"whole numbers {info.min}..{info.max}"
        else:
            allowed = "finite values within the dtype's range, or NaN"
        raise OptionError(
            f"nodata={nodata!r} can never occur in {np.dtype(dtype).name} pixels ({allowed}), so nothing would be "
            f"masked: give the value the raster really uses for nodata, or nodata=None (--nodata none)"
        )


def plan(
    shape: Pair, *, tile_size: int | Pair = 256, overlap: int | Pair = 64, chunks: int | Pair = DEFAULT_CHUNK
) -> ChunkPlan:
    """The chunk plan ``segment`` uses for an image of ``shape = (height, width)``: inspect before running."""
    return TileGrid(shape, tile_size, overlap).plan_chunks(chunks)


class Built(NamedTuple):
    """The lazy output of ``segment``, the nodata value of its labels (``None``: no nodata), its classes."""

    array: da.Array
    label_nodata: int | None
    n_classes: int = 0


@dataclass(frozen=True)
class _JobRecorder:
    """Makes the job record (:mod:`seamless_dask.record`) a DataArray result carries, once its classes are known."""

    data: xr.DataArray
    model: Any
    job: Job

    def __call__(self, n_classes: int) -> str:
        from . import record

        config, weights = self.job.runner.config, self.job.weights
        options = {
            "tile_size": self.job.tile_size,
            "overlap": self.job.overlap,
            "output": self.job.output,
            "weights": weights.kind if weights.array is None else "array:" + tokenize(weights),
            "normalize": config.normalize,
            "activation": config.activation,
            "tta": config.tta,
            "amp": config.amp,
            "nodata": self.job.nodata,
            "classes": n_classes,
        }
        loaded = None
        if isinstance(self.model, str) and ":" in self.model and not self.model.endswith(".pt2"):
            loaded = ModelRunner(self.model, RunnerConfig(device="cpu")).model  # cached: loaded once per process
        return record.dumps(record.job_record(self.data, self.model, options, loaded))


def _build(image: Any, job: Job) -> Built:
    """The lazy output array for ``image`` ``(bands, H, W)``, numpy or dask."""
    bands, height, width = image.shape
    grid = TileGrid((height, width), job.tile_size, job.overlap)
    chunk_plan = grid.plan_chunks(_chunk_target(image, job, grid))
    check_plannable(chunk_plan)
    job.runner.config.check_bands(bands)
    _check_nodata_fits(job.nodata, image.dtype)
    n_classes = job.num_classes or job.runner.probe(bands, job.tile_size)
    job = dataclasses.replace(job, num_classes=n_classes)
    overlap = (grid.y.overlap, grid.x.overlap)
    inference = blend.TileInference(
        job.runner, job.weights, grid.tile_shape, n_classes, job.nodata, overlap, model_tile=job.tile_size
    )
    # One graph key holds the runner (and an in-memory model): not a copy per task.
    shared = dask.delayed(inference, pure=True, traverse=False)
    extended = _extended_blocks(image, chunk_plan)
    masked = job.nodata is not None or np.issubdtype(image.dtype, np.floating)
    recipe = _Recipe(extended, shared, chunk_plan, job, bool(masked))
    built = recipe.build()
    _RECIPES[built.array.name] = recipe
    while len(_RECIPES) > _MAX_RECIPES:
        _RECIPES.popitem(last=False)
    return built


@dataclass(frozen=True)
class _Recipe:
    """What ``_build`` made a result from, kept so that a resumed write can rebuild it with fewer tiles."""

    extended: da.Array
    shared: Any
    chunk_plan: ChunkPlan
    job: Job
    masked: bool

    def build(self, done: np.ndarray | None = None) -> Built:
        """The output graph; chunks marked ``done`` run only the tiles that reach into chunks not done."""
        plan_ = self.chunk_plan
        token = tokenize(self.extended.name, plan_, self.shared.key, done)
        sums_name = keys.infer_name(self.job.resources, token)
        layer = {
            (sums_name, j, k): (
                blend.accumulate,
                self.shared.key,
                (self.extended.name, 0, j, k),
                self.tiles(j, k, done),
            )
            for j in range(len(plan_.y_bounds) - 1)
            for k in range(len(plan_.x_bounds) - 1)
        }
        return _blend_array(layer, sums_name, self)

    def tiles(self, j: int, k: int, done: np.ndarray | None) -> Sequence[LocalTile]:
        tiles = self.chunk_plan.local_tiles(j, k)
        if done is None or not done[j, k]:
            return tiles
        (th, tw), (h, w) = self.chunk_plan.grid.tile_shape, (self.chunk_plan.chunks[0][j], self.chunk_plan.chunks[1][k])
        ny, nx = done.shape

        def missing(dj: int, dk: int) -> bool:
            return j + dj < ny and k + dk < nx and not done[j + dj, k + dk]

        return tuple(
            t
            for t in tiles
            if (t.y + th > h and missing(1, 0))
            or (t.x + tw > w and missing(0, 1))
            or (t.y + th > h and t.x + tw > w and missing(1, 1))
        )


_RECIPES: OrderedDict[str, _Recipe] = OrderedDict()
_MAX_RECIPES = 32


def restricted(array: da.Array, done: np.ndarray) -> da.Array:
    """``array`` (a ``segment`` result) rebuilt so that chunks marked ``done`` run only the tiles that the
    chunks not done need for their blend; their own output must not be computed from it.

    A result this process did not build (or one transformed since) comes back unchanged: still correct,
    it just recomputes the tiles of done neighbours.
    """
    recipe = _RECIPES.get(array.name)
    if recipe is None or done.shape != array.numblocks[-2:]:
        return array
    return recipe.build(done).array


def _extended_blocks(image: Any, chunk_plan: ChunkPlan) -> da.Array:
    """A dask array whose block ``(0, j, k)`` is chunk ``(j, k)`` of ``image`` with its high-side halo.

    The blocks overlap, so the array stands for its keys only (stage 1 reads them); its shape means
    nothing. A numpy image or a lazily loaded xarray variable (``open_raster`` with ``chunks=None``) is
    read window by window, each chunk's window once, so no input block waits in memory for a neighbour.
    A dask image is rechunked to the plan and each block gets copies of the strips it needs from its
    neighbours (dask's own ``overlap`` keeps views, which hold whole neighbour blocks in memory).
    """
    bands = image.shape[0]
    (hs, ws), (ext_y, ext_x) = chunk_plan.chunks, chunk_plan.extensions
    chunks = (
        (bands,),
        tuple(h + e for h, e in zip(hs, ext_y, strict=True)),
        tuple(w + e for w, e in zip(ws, ext_x, strict=True)),
    )
    if isinstance(image, da.Array):
        return _overlapped(image.rechunk(((bands,), *chunk_plan.chunks)), chunk_plan, chunks)
    source = "seamless-source-" + (_lazy_token(image) if isinstance(image, xr.Variable) else _numpy_token(image))
    name = "seamless-window-" + tokenize(source, chunk_plan)
    layer: dict = {source: _Lazy(image) if isinstance(image, xr.Variable) else image}
    for j, (y0, y1) in enumerate(zip(chunk_plan.y_bounds, chunk_plan.y_bounds[1:], strict=False)):
        for k, (x0, x1) in enumerate(zip(chunk_plan.x_bounds, chunk_plan.x_bounds[1:], strict=False)):
            window = (slice(y0, y1 + ext_y[j]), slice(x0, x1 + ext_x[k]))
            layer[(name, 0, j, k)] = (_read_window, source, window)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[])
    return da.Array(graph, name, chunks=chunks, dtype=image.dtype)


def _lazy_token(variable: xr.Variable) -> str:
    """A token for a lazily loaded variable. ``tokenize(variable)`` would load every pixel to hash them
    (xarray tokenizes ``Variable.data``): 2.7 GB in the client for a 20000 px scene. Its lazy backend
    array tokenizes by what it reads (file, indexer) instead."""
    return tokenize(variable.dims, variable.shape, variable.dtype.str, variable._data)


def _numpy_token(image: np.ndarray) -> str:
    """Hashing a big in-memory image costs ~0.7 ms per 256 px tile; its keys live for one compute, and
    identity plus a sample of the pixels keeps them apart from other arrays."""
    sample = image[..., :: max(1, image.shape[-2] // 16), :: max(1, image.shape[-1] // 16)]
    return tokenize(id(image), image.shape, image.dtype.str, image.__array_interface__["data"][0], sample)


class _Lazy:
    """A lazily loaded variable as a graph value. Bare, a distributed worker would measure it with
    ``dask.sizeof``, which reads every pixel of an xarray variable: 4.5 GB for a 40000 px scene."""

    def __init__(self, variable: xr.Variable) -> None:
        self.variable = variable

    def __sizeof__(self) -> int:
        return 1024


def _read_window(source: Any, window: tuple[slice, slice]) -> np.ndarray:
    """The pixels of ``window`` ``(rows, cols)`` of a ``(bands, H, W)`` numpy array or lazy variable."""
    if isinstance(source, _Lazy):
        return np.asarray(source.variable[:, window[0], window[1]].values)
    return source[:, window[0], window[1]]


def _overlapped(stacked: da.Array, chunk_plan: ChunkPlan, chunks: tuple) -> da.Array:
    ext_y, ext_x = chunk_plan.extensions
    if not max(ext_y + ext_x):
        return stacked
    token = tokenize(stacked.name, chunk_plan)
    name, strips = "seamless-extend-" + token, "seamless-strip-" + token
    layer: dict = {}
    for j in range(len(ext_y)):
        for k in range(len(ext_x)):
            below = right = corner = None
            if ext_y[j]:
                below = (strips, 0, j, k)
                layer[below] = (_strip, (stacked.name, 0, j + 1, k), slice(0, ext_y[j]), slice(None))
            if ext_x[k]:
                right = (strips, 1, j, k)
                layer[right] = (_strip, (stacked.name, 0, j, k + 1), slice(None), slice(0, ext_x[k]))
            if ext_y[j] and ext_x[k]:
                corner = (strips, 2, j, k)
                layer[corner] = (_strip, (stacked.name, 0, j + 1, k + 1), slice(0, ext_y[j]), slice(0, ext_x[k]))
            layer[(name, 0, j, k)] = (_assemble, (stacked.name, 0, j, k), below, right, corner)
    dependencies: list[Any] = [stacked]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return da.Array(graph, name, chunks=chunks, dtype=stacked.dtype)


def _strip(block: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return block[:, rows, cols].copy()  # a copy: a view would keep the whole neighbour block alive


def _assemble(
    own: np.ndarray, below: np.ndarray | None, right: np.ndarray | None, corner: np.ndarray | None
) -> np.ndarray:
    top = own if right is None else np.concatenate([own, right], axis=2)
    if below is None:
        return top
    bottom = below if corner is None else np.concatenate([below, corner], axis=2)
    return np.concatenate([top, bottom], axis=1)


def _chunk_target(image: Any, job: Job, grid: TileGrid) -> Pair:
    """Pixels per chunk side: ``chunks=``, else a dask image's own chunks, else 2048 for a lazily read raster
    (fewer, larger windows read), else, for an image in memory, :func:`in_memory_chunk` per axis."""
    if job.chunks is not None:
        return job.chunks
    if isinstance(image, da.Array):
        return image.chunks[1][0], image.chunks[2][0]
    if isinstance(image, xr.Variable):
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    batch = job.runner.config.batch_size
    return in_memory_chunk(grid.y.size, grid.y.stride, batch), in_memory_chunk(grid.x.size, grid.x.stride, batch)


def in_memory_chunk(side: int, stride: int, batch_size: int) -> int:
    """Default chunk side for an image already in memory: at least three chunks per side up to 1024 px,
    so that every core has a chunk to work on while the others blend (one chunk for the whole image runs
    one model call at a time: ``benchmarks/threads.py``), but never fewer tiles than two batches."""
    two_batches = stride * math.ceil(math.sqrt(2 * batch_size))
    return max(two_batches, min(IN_MEMORY_CHUNK, -(-side // 3)))


def _blend_array(infer: dict, sums_name: str, recipe: _Recipe) -> Built:
    """Stage 2 tasks: halo parts, settle (decide all but the bands neighbours reach), finish (add their
    halo parts to those bands and decide them), one output block per chunk.

    When the input may hold nodata (``recipe.masked``), labels get a nodata value of their own.
    """
    layer: dict = {}
    chunk_plan, job = recipe.chunk_plan, recipe.job
    labels, n_classes = job.output == "labels", int(job.num_classes or 0)
    dtype = np.dtype(np.uint8) if job.binary else blend.label_dtype(n_classes + recipe.masked)
    label_nodata = int(np.iinfo(dtype).max) if labels and recipe.masked else None
    parts, settled, out = keys.stage2_names(sums_name, tokenize(job.output, job.binary, label_nodata), job.output)
    decision = blend.Decision(job.output, job.binary, label_nodata)
    (hs, ws), (ext_y, ext_x) = chunk_plan.chunks, chunk_plan.extensions
    for j, h in enumerate(hs):
        for k, w in enumerate(ws):
            if ext_y[j] or ext_x[k]:
                layer[(parts, j, k)] = (blend.halo_parts, (sums_name, j, k), h, w)
            oy, ox = ext_y[j - 1] if j else 0, ext_x[k - 1] if k else 0
            layer[(settled, j, k)] = (blend.settle, (sums_name, j, k), (h, w), (oy, ox), decision)
            top = (_part, (parts, j - 1, k), "bottom") if oy else None
            left = (_part, (parts, j, k - 1), "right") if ox else None
            corner = (_part, (parts, j - 1, k - 1), "corner") if oy and ox else None
            key = (out, j, k) if labels else (out, 0, j, k)
            layer[key] = (blend.finish, (settled, j, k), decision, top, left, corner)
    graph = _two_layer_graph(infer, sums_name, layer, out, recipe)
    if labels:
        return Built(da.Array(graph, out, chunks=(hs, ws), dtype=dtype), label_nodata, n_classes)
    return Built(da.Array(graph, out, chunks=((n_classes,), hs, ws), dtype=np.float32), None, n_classes)


def _two_layer_graph(infer: dict, sums_name: str, blend_tasks: dict, out: str, recipe: _Recipe) -> HighLevelGraph:
    """Stage 1 in a layer of its own, so that it alone carries the worker resources the model needs.

    A materialised layer is never fused with its neighbours, so the annotation reaches the scheduler
    (annotations on fused blockwise layers are lost: dask#7036, distributed#8593).
    """
    dependencies: list[Any] = [recipe.extended, recipe.shared]
    stage1 = HighLevelGraph.from_collections(sums_name, infer, dependencies=dependencies)
    resources = recipe.job.resources
    layers = dict(stage1.layers)
    if resources:
        layers[sums_name] = MaterializedLayer(infer, annotations={"resources": dict(resources)})
    layers[out] = MaterializedLayer(blend_tasks)
    return HighLevelGraph(layers, {**stage1.dependencies, out: {sums_name}})


def _part(parts: blend.HaloParts, which: str) -> np.ndarray:
    return getattr(parts, which)


def _segment_dataarray(data: xr.DataArray, job: Job, recorder: _JobRecorder) -> xr.DataArray:
    bands_first = _dataarray_bands_first(data)
    check_pixel_dtype(bands_first.dtype, "image")
    # dask-backed: its dask array; in memory: numpy; lazily loaded (open_raster(chunks=None)): the lazy
    # variable, which stage 1 reads window by window.
    if bands_first.chunks is not None:
        image = bands_first.data
    else:
        image = bands_first.values if bands_first.variable._in_memory else bands_first.variable
    result, label_nodata, n_classes = _build(image, job)
    dims = ("y", "x") if job.output == "labels" else ("class", "y", "x")
    coords = {name: coord for name, coord in data.coords.items() if set(coord.dims) <= {"y", "x"}}
    if job.output != "labels":
        coords["class"] = np.arange(result.shape[0])
    attrs = {key: value for key, value in data.attrs.items() if key not in _DROPPED_ATTRS}
    attrs.update(
        seamless_tile_size=list(job.tile_size),
        seamless_overlap=list(job.overlap),
        seamless_weights=job.weights.kind,
        seamless_job=recorder(n_classes),
    )
    out = xr.DataArray(result, dims=dims, coords=coords, attrs=attrs, name=job.output)
    return _with_geo(out, data, label_nodata if job.output == "labels" else np.nan)


def _with_geo(out: xr.DataArray, source: xr.DataArray, nodata: float | None) -> xr.DataArray:
    """``out`` with the CRS and transform of ``source`` (when it has them) and its own nodata value."""
    import rioxarray  # noqa: F401  (registers .rio)

    crs = source.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
        if source.sizes["y"] > 1 and source.sizes["x"] > 1:
            out = out.rio.write_transform(source.rio.transform())
    return out.rio.write_nodata(nodata, encoded=False) if nodata is not None else out


def _resources_for(device: str, resources: dict[str, float] | str | None) -> tuple[tuple[str, float], ...]:
    """The worker resources of model tasks, as a hashable value (see ``segment``'s ``resources``)."""
    if resources is None:
        return ()
    if isinstance(resources, dict):
        return tuple(sorted(resources.items()))
    if resources != "auto":
        raise OptionError(f"resources must be 'auto', None or a dict like {{'GPU': 1}}, got {resources!r}")
    if device.startswith("cuda"):
        return (("GPU", 1),)
    if device == "auto":
        from .cluster import cluster_has_gpus

        return (("GPU", 1),) if cluster_has_gpus() else ()
    return ()


def _nodata_for(data: Any, nodata: float | str | None) -> float | None:
    """The nodata value ``segment`` works with; ``"auto"`` reads it from a DataArray's metadata."""
    if isinstance(nodata, str):
        if nodata != "auto":
            raise OptionError(f"nodata must be 'auto', a number or None, got nodata={nodata!r}")
        if not isinstance(data, xr.DataArray):
            return None
        import rioxarray  # noqa: F401

        found = data.rio.nodata
        if found is None:
            found = data.rio.encoded_nodata
        if found is not None and not blend.representable(float(found), data.dtype):
            warnings.warn(
                f"the input's metadata says nodata={found}, which its {data.dtype} pixels can never hold: "
                "treating every value as data; pass nodata=<value> if the raster has another nodata value",
                UserWarning,
                stacklevel=3,
            )
            return None
        return None if found is None else float(found)
    return nodata


def _dataarray_bands_first(data: xr.DataArray) -> xr.DataArray:
    dims = tuple(str(d) for d in data.dims)
    if dims == ("y", "x"):
        return data.expand_dims("band")
    if len(dims) == 3 and dims[1:] == ("y", "x"):
        return data
    if {"y", "x"} <= set(dims) and len(dims) in (2, 3):
        band = [d for d in dims if d not in ("y", "x")]
        order = ", ".join(repr(d) for d in [*band, "y", "x"])
        raise DimensionError(f"expected dims (band, 'y', 'x') or ('y', 'x'), got {dims}: use data.transpose({order})")
    if len(dims) in (2, 3):
        rename = f"{{{dims[-2]!r}: 'y', {dims[-1]!r}: 'x'}}"
        raise DimensionError(
            f"expected dims (band, 'y', 'x') or ('y', 'x'), got {dims}: name the spatial dims y and x, "
            f"e.g. data.rename({rename})"
        )
    raise DimensionError(
        f"expected a 2-D (y, x) or 3-D (band, y, x) image, got {len(dims)} dims {dims}: "
        "select one time step or level first, e.g. data.isel(time=0)"
    )


def _as_bands_first(image: Any, kind: str) -> Any:
    """``(H, W)`` or ``(bands, H, W)`` numeric image as ``(bands, H, W)``."""
    if image.dtype == bool:
        image = image.astype(np.uint8)
    check_pixel_dtype(image.dtype, kind)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise DimensionError(
            f"expected a {kind} of shape (H, W) or (bands, H, W), got {image.ndim} dims {tuple(image.shape)}"
        )
    if image.shape[-1] <= 4 < image.shape[0] and image.shape[1] > 4:
        raise DimensionError(
            f"expected bands first (bands, H, W), got shape {tuple(image.shape)}, which looks channels-last: "
            "use np.moveaxis(image, -1, 0) (or tensor.permute(2, 0, 1))"
        )
    return image


def check_pixel_dtype(dtype: np.dtype, kind: str) -> None:
    """Raise unless pixels of ``dtype`` are real numbers a model can take (complex ones would lose their
    imaginary part without a word when cast to float32)."""
    if np.issubdtype(dtype, np.complexfloating):
        raise DimensionError(
            f"the {kind} has complex pixels ({np.dtype(dtype).name}); a model takes real numbers: pass the part you "
            "mean, e.g. data.real, abs(data) (amplitude) or np.angle(data) (phase), as bands of a real image"
        )
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or np.dtype(dtype) == np.bool_):
        raise DimensionError(f"the {kind} has dtype {dtype}; expected integer or float pixels: cast it first")


def _is_tensor(data: Any) -> bool:
    return type(data).__module__.startswith("torch") and hasattr(data, "detach")


def _device_for(data: Any, device: str) -> str:
    """``"auto"`` on a tensor means the tensor's own device."""
    if device == "auto" and _is_tensor(data) and data.device.type != "cpu":
        return str(data.device)
    return device
