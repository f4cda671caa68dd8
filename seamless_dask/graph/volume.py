"""Volumes, lazily: ``segment(volume, model3d, tile_size=(64, 128, 128))`` on a ``(C, Z, Y, X)``
numpy, dask or tensor array (or a ``(band, z, y, x)`` / ``(z, y, x)`` DataArray) builds a dask graph of
the overlap-add over every axis (:mod:`seamless_dask.blend.volume`): two tasks a chunk and one for
each part a chunk owes a neighbour, each tile run once, the same result for every chunking.

What the planes' path has and this one not yet: the regions and resampling to the model's
resolution. On a cluster, the model's tasks go to GPU workers as a plane's do
(their key names carry the resources) and a write goes out in waves of chunk rows.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from ..blend import decide
from ..blend.volume import VolumeInference, finish_volume, part_of, volume_sums
from ..classes import as_classes, check_class_count
from ..exceptions import DimensionError, OptionError
from ..inputs import check_pixel_dtype, nodata_for
from ..model.receptive import check_volume_overlap
from ..model.runner import ModelRunner, RunnerConfig
from ..options import output_kind
from ..tiling.grid import as_sizes
from ..tiling.lattice import Lattice
from ..tiling.weights import as_weights
from . import keys, record
from .build import TILE_COUNTS
from .layers import block_keys, graph_with, items, new_array, ref, task, value

# segment's options a volume does not take yet, with their defaults
NOT_FOR_VOLUMES = {
    "region": None, "resolution": None, "bands": None, "channel_axis": None,
}  # fmt: skip
VOLUME_DIMS = ("z", "y", "x")


def is_volume(data: Any, tile_size: Any) -> bool:
    """Whether ``segment`` was given a volume: a tile of three sizes.

    A DataArray with a z dim and one tile size is ambiguous (a 2-D model's z-stack, or a 3-D
    model's volume): the planes' path refuses it, naming both fixes.
    """
    return isinstance(tile_size, (tuple, list)) and len(tile_size) == 3


def segment_volume(
    data: Any, model: Any, options: dict[str, Any], *, resources: tuple[tuple[str, float], ...] = ()
) -> Any:
    """``segment(data, model, **options)`` of a volume: the result of the input's kind, lazy for a
    DataArray or a dask array, ``(z, y, x)`` labels or ``(class, z, y, x)`` soft outputs.
    ``resources``: the worker resources its model tasks need (``inputs.resources_for`` of
    ``segment``'s ``resources`` and the cluster in use, as for planes).
    """
    given = {k: options[k] for k in NOT_FOR_VOLUMES if options[k] != NOT_FOR_VOLUMES[k]}
    if given:
        raise OptionError(
            f"{', '.join(f'{k}={v!r}' for k, v in given.items())}: not for volumes yet (they take "
            "tile_size, overlap, chunks, weights, output, dtype, nodata, normalize, activation, "
            "batch_size, device, amp, tta, head, process_fn, padding, cval, class_names, "
            "palette and resources); segment planes "
            "for the others"
        )
    kind = output_kind(options["output"])
    if kind.name == "uncertainty":
        raise OptionError("output='uncertainty' is not for volumes yet: use 'probabilities'")
    pixels, frame = _pixels(data)
    check_pixel_dtype(pixels.dtype, "volume")
    tile = as_sizes(options["tile_size"], "tile_size", 3)
    lattice = Lattice.build(tuple(pixels.shape[1:]), tile, options["overlap"])
    chunks = options["chunks"] if options["chunks"] is not None else tuple(2 * t for t in tile)
    plan = lattice.plan_chunks(chunks)
    config = RunnerConfig(
        batch_size=options["batch_size"], device=options["device"],
        normalize=options["normalize"] if options["normalize"] != "imagenet" else None,
        activation=options["activation"] if kind.activated else None, tta=options["tta"],
        amp=options["amp"], trust_model=options["trust_model"], head=options["head"],
        process_fn=options["process_fn"],
    )  # fmt: skip
    if options["normalize"] == "imagenet":
        raise OptionError("normalize='imagenet' is for RGB planes: give (mean, std) per band")
    runner = ModelRunner(model, config)
    config.check_bands(pixels.shape[0])
    n_classes = options["num_classes"] or runner.probe(pixels.shape[0], tile)
    nodata = nodata_for(data, options["nodata"]) if isinstance(data, xr.DataArray) else (
        None if options["nodata"] in ("auto", None) else float(options["nodata"])
    )  # fmt: skip
    masked = nodata is not None or np.issubdtype(pixels.dtype, np.floating)
    binary = config.activation == "sigmoid" and n_classes == 1
    labels_dtype = np.dtype(np.uint8) if binary else decide.label_dtype(n_classes + masked)
    label_nodata = int(np.iinfo(labels_dtype).max) if masked else None
    decision = decide.Decision(kind.name, binary, label_nodata, options["dtype"])
    weights = as_weights(options["weights"])
    weights.check_cover(lattice.axes)
    if weights.kind == "trim" and lattice.n_tiles > 1:  # exact only where margins cover the field
        check_volume_overlap(model, pixels.shape[0], lattice.tile_shape, lattice.effective_overlap)
    inference = VolumeInference(
        runner, weights, plan, n_classes, tile, nodata, options["padding"], float(options["cval"]),
        exact=options["dtype"] == "float64",
    )  # fmt: skip
    dtype = labels_dtype if kind.is_labels else np.dtype(options["dtype"] or np.float32)
    array = _graph(pixels, inference, decision, dtype, kind.is_labels, resources=resources)
    out = _as_input_kind(array, data, frame, kind, label_nodata)
    classes = as_classes(options["class_names"], options["palette"])
    if classes is not None:
        check_class_count(classes, n_classes)
    if isinstance(out, xr.DataArray):
        if classes is not None and kind.carries_classes:  # the viewers' names and colours
            out.attrs.update(classes.attrs())
        # what makes a resumed write provably the same job
        out.attrs[record.ATTR] = _record(frame, model, options, weights.spec, n_classes)
    return out


def _record(frame: Any, model: Any, options: dict[str, Any], weights: str, n_classes: int) -> str:
    """The job record of a volume: the input, the model (its weights), and what changes pixels."""
    keys = ("tile_size", "overlap", "output", "normalize", "activation", "tta", "head", "amp",
            "nodata", "dtype", "padding", "cval")  # fmt: skip
    chosen = {k: options[k] for k in keys}
    chosen.update(weights=weights, classes=n_classes, volume=True)
    if options["process_fn"] is not None:
        chosen["process_fn"] = record.function_name(options["process_fn"])
    if options["class_names"]:  # they go into the store's metadata: part of the job
        chosen["class_names"] = list(options["class_names"])
    loaded = None
    if isinstance(model, str) and not os.path.isfile(model):  # an import string: pin its weights
        loaded = ModelRunner(model, RunnerConfig(device="cpu")).model
    return record.dumps(record.job_record(frame, model, chosen, loaded))


def _pixels(data: Any) -> tuple[Any, Any]:
    """``(C, Z, Y, X)`` pixels, lazily where they were, and what the result is dressed as."""
    if isinstance(data, xr.DataArray):
        dims = tuple(map(str, data.dims))
        if sorted(dims) == sorted(VOLUME_DIMS):
            data = data.expand_dims("band")
        elif sorted(dims) != sorted(("band", *VOLUME_DIMS)):
            raise DimensionError(
                f"a volume is a DataArray of dims band, z, y, x (in any order; an OME-Zarr z-stack "
                f"opens as z, band, y, x) or z, y, x, got dims {dims}: rename its dims to these"
            )
        data = data.transpose("band", *VOLUME_DIMS)
        return data.data, data
    # a tensor: its pixels on the host, the result back on its device
    pixels = data.detach().cpu().numpy() if hasattr(data, "detach") else data
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4:
        raise DimensionError(
            f"a volume is (C, Z, Y, X) or (Z, Y, X), got shape {tuple(pixels.shape)} with a "
            "tile_size of three sizes: give one channel axis first, or a tile of two for planes"
        )
    return pixels, data


def _graph(
    pixels: Any, inference: VolumeInference, decision: decide.Decision, dtype: np.dtype,
    labels: bool, *, resources: tuple[tuple[str, float], ...] = (),
) -> da.Array:  # fmt: skip
    """The overlap-add as a hand-built graph (both of dask's array engines take it): per chunk a
    stage-1 task that cuts its window out of the input blocks it overlaps, a task a part it owes,
    and the output task that adds its parts in C order of their sources, whatever the chunking.
    """
    plan = inference.plan
    image = pixels if isinstance(pixels, da.Array) else da.from_array(pixels, chunks=pixels.shape)
    token = tokenize(image, inference, decision, dtype, resources)
    model, sums, part, out = keys.volume_names(token, resources)
    blocks, starts = block_keys(image), [np.cumsum((0, *c)) for c in image.chunks]
    graph: dict = {model: value(model, inference)}
    indices = list(itertools.product(*(range(n) for n in plan.numblocks)))
    owed: dict[tuple[int, ...], list[Any]] = {index: [] for index in indices}
    for index in indices:
        window = inference.window(index)
        ranges = [
            [j for j in range(len(s) - 1) if s[j] < w.stop and s[j + 1] > w.start]
            for s, w in zip(starts[1:], window, strict=True)
        ]
        pieces = list(itertools.product(*ranges))
        origins = [tuple(int(s[j]) for s, j in zip(starts[1:], p, strict=True)) for p in pieces]
        refs = items([ref(blocks[(0, *p)]) for p in pieces])
        key = (sums, *index)
        graph[key] = task(key, stage1, ref(model), index, window, origins, refs)
        for target in inference.targets(index):
            owed_key = (part, *index, *target)
            graph[owed_key] = task(owed_key, part_of, ref(key), target)
            owed[target].append(ref(owed_key))
    for index in indices:
        core = tuple(c[i] for c, i in zip(plan.chunks, index, strict=True))
        key = (out, *index) if labels else (out, 0, *index)
        graph[key] = task(key, finish_volume, decision, core, *owed[index])
    chunks = plan.chunks if labels else ((inference.n_classes,), *plan.chunks)
    TILE_COUNTS.remember(sums, lambda *index: plan.n_owned(index))  # the tile progress bar's
    return new_array(graph_with(out, graph, [image]), out, chunks, dtype)


def stage1(
    inference: VolumeInference, index: tuple[int, ...], window: tuple[slice, ...],
    origins: list[tuple[int, ...]], pieces: list[np.ndarray],
) -> dict:  # fmt: skip
    """Chunk ``index``'s window cut out of the input blocks it overlaps, then its stage 1."""
    shape = (pieces[0].shape[0], *(w.stop - w.start for w in window))
    block = np.empty(shape, np.result_type(*pieces))
    for origin, piece in zip(origins, pieces, strict=True):
        src = tuple(
            slice(max(w.start - o, 0), min(w.stop - o, n))
            for w, o, n in zip(window, origin, piece.shape[1:], strict=True)
        )
        dst = tuple(
            slice(s.start + o - w.start, s.stop + o - w.start)
            for s, o, w in zip(src, origin, window, strict=True)
        )
        block[(slice(None), *dst)] = piece[(slice(None), *src)]
    return volume_sums(inference, block, index)


def _as_input_kind(
    array: da.Array, data: Any, frame: Any, kind: Any, label_nodata: int | None
) -> Any:
    labels = kind.is_labels
    if isinstance(frame, xr.DataArray):
        dims = VOLUME_DIMS if labels else ("class", *VOLUME_DIMS)
        coords = {d: frame[d] for d in VOLUME_DIMS if d in frame.coords}
        out = xr.DataArray(array, dims=dims, coords=coords, name=kind.name)
        if labels and label_nodata is not None:
            out.attrs["_FillValue"] = label_nodata
        return out
    if isinstance(data, da.Array):
        return array
    result = array.compute()
    if hasattr(data, "detach"):
        import torch

        return torch.from_numpy(result).to(data.device)
    return result
