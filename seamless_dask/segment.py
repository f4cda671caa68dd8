"""``segment()``: seamless tiled inference over an image of any size, as a lazy result.

This module is the front: it turns the user's data and options into a
:class:`~seamless_dask.graph.build.SegmentJob` (input coercion in :mod:`seamless_dask.inputs`), has
:mod:`seamless_dask.graph.build` build the graph, and gives the result the input's type back: for a
DataArray, with its coords, CRS, transform, a nodata value of its own and the job record
(:mod:`seamless_dask.graph.record`) that makes a resumed write provably the same job.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .cluster.workers import (
    cluster_has_gpus,
    current_client,
    ensure_scheduler_plugins,
    set_malloc_option,
    shareable,
)
from .graph import record
from .graph.build import SegmentJob, build_graph
from .graph.chunk_size import DEFAULT_CHUNK
from .graph.volume import is_volume, segment_volume
from .inputs import (
    SegmentInput,
    as_input,
    resources_for,
    stacked_steps,
    time_slices,
    time_steps,
)
from .model.loading import ModelSpec
from .model.outputs import Heads
from .model.runner import ModelRunner, RunnerConfig
from .options import (
    AMP,
    OPTION_NAMES,
    TTA,
    Activation,
    Dtype,
    Output,
    Padding,
    SegmentOptions,
    WeightsKind,
    output_kind,
)
from .result import JobRecorder, segment_dataarray
from .tiling.grid import ChunkPlan, Pair, TileGrid, as_overlap, as_pair
from .tiling.weights import TileWeights, as_weights

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack


@overload
def segment(
    data: np.ndarray, model: ModelSpec, **options: Unpack[SegmentOptions]
) -> np.ndarray: ...


@overload
def segment(
    data: xr.DataArray | xr.Dataset, model: ModelSpec, **options: Unpack[SegmentOptions]
) -> xr.DataArray: ...


@overload
def segment(data: da.Array, model: ModelSpec, **options: Unpack[SegmentOptions]) -> da.Array: ...


@overload
def segment(
    data: torch.Tensor, model: ModelSpec, **options: Unpack[SegmentOptions]
) -> torch.Tensor: ...


def segment(
    data: Any,
    model: ModelSpec,
    *,
    tile_size: int | Pair = 256,
    overlap: int | Pair | float | tuple[float, float] = 64,
    batch_size: int = 8,
    output: Output = "labels",
    weights: WeightsKind | TileWeights | np.ndarray = "trim",
    device: str = "auto",
    normalize: tuple[Any, ...] | Literal["imagenet", "percentile"] | None = None,
    activation: Activation | None = "softmax",
    num_classes: int | None = None,
    chunks: int | Pair | None = None,
    tta: TTA | None = None,
    amp: AMP | None = None,
    nodata: float | str | None = "auto",
    resources: dict[str, float] | str | None = "auto",
    trust_model: bool = False,
    dtype: Dtype | None = None,
    padding: Padding = "flush",
    cval: float = 0.0,
    head: str | int | Sequence[str | int] | dict[str | int, str] | None = None,
    process_fn: Callable[[Any, Any], Any] | str | None = None,
    bands: Sequence[Any] | None = None,
    channel_axis: int | str | None = None,
    region: Any = None,
    region_crs: Any = None,
    class_names: Sequence[str] | None = None,
    palette: Any = None,
    resolution: float | tuple[float, float] | None = None,
    output_resolution: Literal["input", "model"] = "input",
) -> Any:
    """Segment an image of any size with a model that sees ``tile_size`` tiles, without seams.

    Parameters
    ----------
    data
        ``xr.DataArray`` with dims ``(band, y, x)`` or ``(y, x)`` (numpy- or dask-backed): returns a
        lazy, dask-backed ``xr.DataArray``. A STAC load: an ``xr.Dataset`` with one variable per
        band (odc-stac), or a ``(time, band, y, x)`` DataArray (stackstac); a ``time`` dim is mapped
        over, lazily, one image per step, and comes back as the result's leading dim. A numpy array
        ``(bands, H, W)`` or ``(H, W)``: returns numpy. A torch tensor: returns a tensor on the same
        device. A dask array: returns a dask array.
    model
        ``torch.nn.Module``, TorchScript module or file, callable on NCHW float32 batches, or an
        import string ``"pkg.module:factory"``.
    tile_size, overlap
        Tile size and overlap between neighbouring tiles, in pixels, an int or ``(y, x)``; a float
        overlap in ``[0, 1)`` is a fraction of the tile, as MONAI's ``overlap=0.25`` (the stride is
        ``int(tile * 0.75)``; the job record holds the pixels it came to).
    batch_size
        Tiles in the model at once in one process: a model task alone calls the model with this
        many; tasks running side by side share them (two threads: half each), so that memory does
        not grow with threads.
    output
        ``"labels"``: ``(y, x)`` argmax class in the smallest unsigned dtype that holds the classes;
        ``"probabilities"``: ``(class, y, x)`` float32, activation then blend; ``"logits"``: blended
        raw model output; ``"uncertainty"``: ``(measure, y, x)`` float32, ``"disagreement"`` (the
        weighted variance of the probabilities of the tiles covering each pixel, summed over
        classes: high where tiles disagree, 0 where one tile decides) and ``"entropy"`` of the
        blended probabilities (nats).
    weights
        Trust map. ``"trim"`` (default): each pixel takes the prediction of the tile in which it
        lies farthest from an edge (the U-Net paper's overlap-tile strategy; exact whole-image
        results when ``overlap // 2`` covers the model's receptive field). ``"trust"`` (a tent),
        ``"spline"``, ``"gaussian"``, ``"constant"``: smooth blends. Or a positive array of the
        tile's shape, or a
        :class:`~seamless_dask.TileWeights`. With ``"trim"``, a copy of an in-memory torch model is run once
        on a random tile to measure its receptive field (:func:`~seamless_dask.receptive_field`),
        and a
        :class:`~seamless_dask.ReceptiveFieldWarning` says which overlap would be exact when ``overlap // 2``
        falls short.
    device
        ``"auto"`` (CUDA when visible), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    normalize
        ``(mean, std)`` in the input's units, per band or one for all; or ``"imagenet"``:
        torchvision's ImageNet statistics for 3 RGB bands, scaled to the dtype's range (x 255 for
        uint8, x 65535 for uint16; floats are taken to be in [0, 1]); or ``"percentile"`` (or
        ``("percentile", low, high)``, default 1 and 99.8): each band scaled by the scene's own
        percentiles, ``(x - low) / (high - low)``, as Cellpose and StarDist normalise, but once for
        the scene, not per tile (which draws lines between tiles). Estimated when ``segment`` is
        called, from up to 16 chunks drawn with a fixed seed (nodata and pixels outside ``region``
        left out); the values are the job record's ``normalize``, so a resumed job uses the same.
    activation
        ``"softmax"``, ``"sigmoid"`` or ``None``, applied per tile before blending (not for
        ``"logits"``).
    num_classes
        Output channels of the model; when omitted, one call on a zero tile finds it out.
    chunks
        Pixels per chunk (int or ``(y, x)``), rounded to the tile grid; default: the input's dask
        chunks, 2048 for a lazily read raster, and for an image in memory at least three chunks per
        side up to 1024 px (but at least two batches of tiles each), so that every core has work.
    tta
        Test-time augmentation: ``None``, ``"flips"`` (4 views) or ``"d4"`` (8 views), averaged per
        tile.
    amp
        Mixed precision on CUDA: ``"bf16"`` or ``"fp16"`` (``torch.autocast``); blending stays
        float64.
    nodata
        The input's nodata value: ``"auto"`` reads it from a DataArray (``.rio.nodata``,
        ``_FillValue``); a number sets it; ``None`` treats every value as data. A pixel that is
        nodata (or NaN) in every band is nodata in the output (labels: the dtype's maximum, 255 for
        uint8; probabilities: NaN); nodata band values are filled before the model sees them, tiles
        with no data are never run, and a tile's weight is zero on its nodata pixels.
    resources
        dask worker resources each model task needs on a ``distributed`` cluster, e.g. ``{"GPU":
        1}`` so that model work lands on GPU workers only. ``"auto"``: ``{"GPU": 1}`` when
        ``device`` is CUDA, or when it is ``"auto"`` and a worker of the active cluster advertises a
        ``GPU`` resource; else none.
    bands
        For a Dataset, the variables to stack as bands, in order (default: every variable with ``y``
        and ``x`` dims); for a DataArray with a ``band`` coordinate, the band names or numbers to
        select.
    channel_axis
        Where the bands are, when not first: an axis index for numpy, dask and tensors
        (``channel_axis=-1`` for an HWC image or an NHWC batch, as pytorch-toolbelt and tiler take
        them), a dim name (or index) for a DataArray, which becomes ``band`` (a DataArray's dims
        are otherwise found by name: ``(y, x, band)`` is read as it is). The result keeps its own
        layout: classes first.
    region
        An area of interest: a shapely geometry (any polygon or multipolygon) or GeoJSON-like
        mapping, in the input's CRS when it has one, else in pixel coordinates (x = column, y =
        row); or a boolean raster (numpy, dask, xarray) over the image's extent at any resolution
        (a slide's thumbnail: each of its pixels stands for a block of the image's); or
        ``"tissue"``: a slide's tissue, Otsu's threshold on the saturation of a thumbnail of at
        most 1024 px, as the pathology toolkits find it; or a callable ``accept(y0, x0, y1, x1)``
        asked of each tile's box (pixels), True to run it. Only tiles that touch the region run,
        with their real context from outside it, so inside it the result equals the whole-scene
        result; pixels whose centre lies outside it are nodata; chunks that it does not touch are
        never read.
    region_crs
        The CRS ``region`` is given in (e.g. ``"EPSG:4326"`` for GeoJSON), reprojected to the
        input's.
    class_names, palette
        One name and one colour (``(r, g, b)``, ``(r, g, b, a)`` or ``"#rrggbb"``) per class,
        carried to every output (a DataArray result's
        ``attrs["class_names"]``/``["class_colors"]``): the COG's colour table and category names,
        the OME-Zarr's ``image-label``, the zarr's attributes, the quicklook's legend. Default
        colours: :func:`~seamless_dask.classes.default_palette`.
    trust_model
        Load model files that run code as they load (``torch.export`` ``.pt2`` files are unpickled).
        Off by default: such a file is refused. Import strings ``"pkg.module:factory"`` run their
        package's code by design, as any import does.
    dtype
        The stored dtype of a soft output. ``None`` (default): float32. ``"float64"``: the blend's
        float64 sums divided and kept (a float64 model, one whose weights are float64, is fed
        float64 tiles and its outputs keep their precision), for float64 work such as comparing
        with whole-image inference at 1e-12. ``"float16"``: half the
        store, about 3 significant digits (probabilities to within 5e-4). ``"uint8"`` or
        ``"uint16"`` (probabilities only): quantised to 254 (65534) steps of [0, 1], a quarter (a
        half) of the store, within half a step (0.002 for uint8) of the float32 result, as Raster
        Vision stores scores; the dtype's maximum (255) is nodata, and ``attrs["scale_factor"]``
        (1/254) and ``attrs["add_offset"]`` (0) say how to read them, as CF and GDAL do: xarray
        decodes a zarr store of them into float probabilities (``xr.open_zarr``), GDAL reads the
        COG's band scale. Compute ``result * result.attrs["scale_factor"]`` (where
        ``result != 255``) to decode one in memory.
    resolution, output_resolution
        The model's pixel size, ``(y, x)`` or one for both, in the input's units (the CRS's: metres
        for a UTM scene; µm for a slide's ``attrs["pixel_size"]``), when it differs from the
        input's: the image is resampled lazily to it (a whole factor averages blocks, nodata left
        out, as GDAL's ``average``; another averages by its whole part and interpolates the rest),
        the model runs on that grid (tiles, overlap and weights count its pixels, and the exactness
        guarantee holds there), and the result is mapped back to the input's grid, each pixel the
        model pixel under its centre (``output_resolution="input"``), or kept at the model's
        (``"model"``, with that grid's coords, transform or pixel size). Both are in the job
        record. See :mod:`seamless_dask.result`.
    padding, cval
        What pads an image smaller than ``tile_size`` (on an axis) up to the tile the model takes,
        centred as MONAI centres it: ``"flush"`` (default) the fill value (the normalisation mean,
        0 once normalised; else 0), ``"constant"`` ``cval`` in the input's units (MONAI's
        ``padding_mode="constant", cval=...``), ``"reflect"`` (MONAI's and torch's, the edge pixel
        not repeated), ``"replicate"`` (the edge repeated) or ``"wrap"`` (tiler's). Elsewhere the
        last tile is placed flush with the border, so every tile sees real pixels only; the docs'
        benchmarks say which padding is closest to whole-image inference. In the job record when
        not ``"flush"``.
    head
        Segment with another output of a model that returns several: a dict key (torchvision's
        ``"aux"``) or a tuple index. ``None``: the dict's ``"out"``, or the tuple's first item.
        Several heads in one pass of the model: a list of keys (each of ``output``'s kind) or a
        dict of key to kind, ``{"out": "labels", "aux": "probabilities"}`` (labels,
        probabilities or logits): every head is activated and blended with each tile run once,
        and the result is an ``xr.Dataset`` of one variable a head (``head_0`` for index 0; a
        dict of arrays for numpy, dask and tensors), each equal to segmenting that head alone
        and carrying its own job record, so each writes to a store of its own. Heads must be
        at the input's resolution.
    process_fn
        MONAI's ``process_fn``: ``process_fn(predictions, tiles) -> predictions``, called on each
        batch of tiles between the model and the blend, on the model's device, with the
        predictions as they would be blended (activated; TTA's views averaged) and the batch the
        model saw; it returns ``(N, classes, h, w)`` (any number of classes: ``num_classes``
        follows). A function, or an import string ``"pkg.module:function"`` (the command line's
        ``--process-fn``; what remote workers can import). In the job record by name, so that a
        resumed job with another is refused.

    Returns
    -------
    xarray.DataArray, numpy.ndarray, dask.array.Array or torch.Tensor
        The input's kind: ``(y, x)`` labels or ``(class, y, x)`` probabilities/logits (a leading
        ``time`` dim for a time stack). A DataArray result is lazy, with the input's ``y``/``x``
        coords, CRS, transform, a nodata value and the job record (``attrs["seamless_job"]``); a
        dask result is lazy; numpy and torch results are computed (a tensor on the input's device).

    Raises
    ------
    DimensionError
        Dims other than ``(band, y, x)``/``(y, x)`` (the message says how to transpose), complex
        pixels, or an input of an unknown type.
    TilingError
        ``overlap >= tile_size``, or a scene too large to plan at this tile size.
    OptionError
        An unknown ``output``, ``activation``, ``tta``, ``amp`` or ``device``, or a nodata value the
        dtype cannot hold.
    ModelError
        The model cannot be loaded, or its output has the wrong shape (at the probe call, before any
        work).

    Examples
    --------
    >>> import numpy as np, seamless_dask as sd
    >>> from seamless_dask.demo import context_model, synthetic_scene
    >>> scene = synthetic_scene(600)  # (band, y, x) float32 DataArray, 10 m pixels
    >>> labels = sd.segment(scene, context_model(), tile_size=256, overlap=64)
    >>> labels.dims, labels.dtype, type(labels.data).__name__  # lazy: nothing has run yet
    (('y', 'x'), dtype('uint8'), 'Array')
    >>> window = labels[:100, :100].compute()  # runs only the tiles that window needs
    >>> whole = sd.segment(scene.values, context_model(), tile_size=256, overlap=64)  # numpy in, numpy out
    >>> bool((window.values == whole[:100, :100]).all())
    True
    """
    if is_volume(data, tile_size):  # (C, Z, Y, X): the overlap-add over every axis
        options, client = {k: v for k, v in locals().items() if k in OPTION_NAMES}, current_client()
        gpus = client is not None and resources == "auto" and device == "auto"
        gpus = gpus and cluster_has_gpus(client)
        needs = resources_for(str(device), resources, cluster_has_gpus=gpus)
        if client is not None:  # resource routing on the scheduler (once per client)
            ensure_scheduler_plugins(client, required=bool(needs))
        return segment_volume(data, model, options, resources=needs)
    if head is not None and not isinstance(head, (str, int, Heads)):  # several heads, one pass
        return _several_heads(data, model, {k: v for k, v in locals().items() if k in OPTION_NAMES})
    if resolution is not None:  # the model's grid first, then this same call on it
        options = {k: v for k, v in locals().items() if k in OPTION_NAMES}
        from .result import at_resolution

        return at_resolution(segment, data, model, options)
    given = as_input(
        data,
        bands=bands,
        channel_axis=channel_axis,
        nodata=nodata,
        normalize=normalize,
        device=device,
        region=region,
        region_crs=region_crs,
        class_names=class_names,
        palette=palette,
        tiles=(tile_size, overlap),
    )
    config = RunnerConfig(
        batch_size=batch_size,
        device=given.device,
        normalize=given.normalize,
        activation=activation if output_kind(output).activated else None,
        tta=tta,
        amp=amp,
        trust_model=trust_model,
        head=head,
        process_fn=process_fn,
    )

    client = current_client()  # the one place segment asks the cluster anything
    gpus = client is not None and resources == "auto" and config.device == "auto"
    gpus = gpus and cluster_has_gpus(client)
    job = SegmentJob(
        # with a Client: an in-memory model goes to workers once
        runner=shareable(ModelRunner(model, config), client),
        weights=as_weights(weights),
        tile_size=as_pair(tile_size, "tile_size"),
        overlap=as_pair(as_overlap(overlap, as_pair(tile_size, "tile_size")), "overlap"),
        output=output,
        num_classes=num_classes,
        chunks=None if chunks is None else as_pair(chunks, "chunks"),
        nodata=given.nodata,
        resources=resources_for(config.device, resources, cluster_has_gpus=gpus),
        region=given.region,
        dtype=dtype,
        padding=padding,
        cval=cval,
    )

    if client is not None:  # resource routing and row order on the scheduler (once per client)
        ensure_scheduler_plugins(client, required=bool(job.resources))
    return _run(given, model, job)


def _several_heads(data: Any, model: ModelSpec, options: dict[str, Any]) -> Any:
    """``segment`` of several heads: their activated channels blended side by side in one pass of
    the model, then one result a head (:func:`.result.split_heads`).
    """
    import torch

    from .blend import heads as several

    kinds = several.head_kinds(options["head"], options["output"])
    act = options["activation"]
    heads = Heads((key, None if kind == "logits" else act) for key, kind in kinds.items())
    given = as_input(data, bands=options["bands"], channel_axis=options["channel_axis"])
    one = given.data if given.kind == "dataarray" else given.pixels(0 if given.batch else None)
    bands = one.sizes["band"] if isinstance(one, xr.DataArray) else one.shape[0]
    runner = ModelRunner(model, RunnerConfig(device=options["device"], activation=None))
    zeros = torch.zeros((1, bands, *as_pair(options["tile_size"], "tile_size")))
    with torch.no_grad():
        sizes = heads.channels(runner.model(zeros.to(runner.device)))
    options.update(head=heads, output="logits", activation=None, num_classes=sum(sizes))
    binary = [n == 1 and act == "sigmoid" for n in sizes]
    stacked = segment(data, model, **options)
    parts = several.split_heads(stacked, kinds, sizes, binary)
    if not isinstance(stacked, xr.DataArray):
        return parts
    for key, kind in kinds.items():  # each head's own job record: a store of its own
        job = json.loads(stacked.attrs[record.ATTR])
        job["options"].update(head=key, output=kind, heads=list(kinds))
        parts[several.head_name(key)].attrs[record.ATTR] = record.dumps(job)
    return xr.Dataset(parts)


def _run(given: SegmentInput, model: ModelSpec, job: SegmentJob) -> Any:
    """The result of ``job`` on ``given``, of the input's kind: a lazy DataArray (a time stack
    step by step) or dask array, a computed numpy array or tensor (on the input's device).
    """
    data = given.data
    if given.kind == "dataarray":
        return _segment_steps(data, model, job, given)
    if given.batch is not None:  # (N, bands, H, W): N images in one graph, stacked again
        array = da.stack([build_graph(given.pixels(i), job).array for i in range(given.batch)])
    else:
        array = build_graph(given.pixels(), job).array
    if given.kind == "dask":
        return array
    result = _compute_here(array)
    if given.kind == "tensor":
        import torch

        return torch.from_numpy(result).to(data.device)
    return result


def _segment_steps(
    data: xr.DataArray, model: ModelSpec, job: SegmentJob, given: SegmentInput
) -> xr.DataArray:
    """A DataArray's lazy result; leading dims (``time``, ``sample``) one image a step, each step
    mapped over again while it has more, the results stacked along them as they were.
    """
    steps = given.steps if data is given.data else time_steps(data)
    if steps is None:
        return segment_dataarray(data, job, JobRecorder(data, model, job, given.classes))
    per_step = [_segment_steps(d, model, job, given) for d in time_slices(data, steps)]
    return stacked_steps(per_step, data[steps])


def _compute_here(array: da.Array) -> np.ndarray:
    """Compute the result of an image given in memory, in this process (by default on dask's
    threads).

    glibc gives each thread that allocates a heap arena of its own, and each arena keeps the
    high-water mark of the model activations freed in it: one arena for the process lowers the
    peak of an image in memory without slowing it (``benchmarks/peers.py``; the figures are in
    docs/benchmarks.md). It is set once, for the arenas made afterwards, on Linux;
    ``dask.config.set({"seamless_dask.one_malloc_arena": False})`` leaves this process's allocator
    alone.
    """
    if dask.config.get("seamless_dask.one_malloc_arena", True):
        _one_malloc_arena()
    return array.compute()


@functools.cache
def _one_malloc_arena() -> None:
    m_arena_max = -8
    set_malloc_option(m_arena_max, 1)


def plan(
    shape: Pair,
    *,
    tile_size: int | Pair = 256,
    overlap: int | Pair = 64,
    chunks: int | Pair = DEFAULT_CHUNK,
) -> ChunkPlan:
    """The chunk plan ``segment`` uses for an image of ``shape = (height, width)``: inspect before
    running.

    Parameters
    ----------
    shape
        ``(height, width)`` in pixels.
    tile_size, overlap
        As for :func:`segment`.
    chunks
        Requested pixels per chunk side; boundaries are moved onto the tile lattice.

    Returns
    -------
    ChunkPlan
        The chunks, the tile grid and which chunk owns each tile.

    Examples
    --------
    >>> import seamless_dask as sd
    >>> p = sd.plan((40_000, 40_000), tile_size=512, overlap=128, chunks=4096)
    >>> p.grid.n_tiles, len(p.chunks[0]), p.chunks[0][:2]
    (10816, 10, (4224, 4224))
    """
    return TileGrid(shape, tile_size, overlap).plan_chunks(chunks)
