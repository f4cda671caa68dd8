"""``to_zarr``: one region write per chunk, a done-marker per region, resumable, only into stores it
made.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Literal, overload

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from ..cluster import progress as bars
from ..cluster.progress import Progress
from ..exceptions import DimensionError, OptionError, RasterError
from ..graph import record
from ..graph.build import resumed_array
from ..graph.layers import block_keys, graph_with
from ._target import Target, as_target, check_not_an_input, claim

DONE = "_seamless/done"  # one uint8 per chunk region, 1 once written: the resume marker
LAYOUT = "seamless_layout"  # group attribute: what only a store seamless_dask made has


@overload
def to_zarr(
    result: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = ...,
    overwrite: bool = ...,
    compute: Literal[True] = ...,
    progress: Progress = ...,
    storage_options: dict | None = ...,
    zarr_format: int = ...,
) -> int: ...


@overload
def to_zarr(
    result: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = ...,
    overwrite: bool = ...,
    compute: Literal[False],
    progress: Progress = ...,
    storage_options: dict | None = ...,
    zarr_format: int = ...,
) -> Delayed: ...


def to_zarr(
    result: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    progress: Progress = False,
    storage_options: dict | None = None,
    zarr_format: int = 2,
) -> int | Delayed:
    """Write a segmentation result to a zarr store, one task per chunk, from wherever the chunk is
    computed.

    A template (coords, CRS, nodata as both zarr ``fill_value`` and CF ``_FillValue``, the job
    record) is written first, then each chunk region by its own task, with no locks (zarr chunks
    equal the result's chunks), and a done-marker per region. An existing store is never touched
    unless seamless_dask wrote it.

    Parameters
    ----------
    result
        A ``(y, x)`` labels or ``(class, y, x)`` DataArray, as :func:`~seamless_dask.segment`
        returns it.
    store
        A local path or an fsspec URL (``s3://bucket/labels.zarr``, ``gs://``, ``az://``,
        ``memory://``).
    resume
        Keep the store that is there and compute only the regions whose marker is missing, after
        checking that it was started by the same job (same input, model and options: the record
        ``segment`` attaches).
    overwrite
        Replace the store, if it is one seamless_dask wrote.
    compute
        ``True``: write now, on the active scheduler, under an exclusive claim on the store (a
        second writer is refused). ``False``: return a Delayed that writes when computed; the caller
        then holds the target (see :func:`seamless_dask.io.claim`).
    progress
        A tile progress bar while writing (``compute=True``), or a callable called as
        ``progress(done, total)`` in tiles (``seamless_dask.progress.compute``).
    storage_options
        Options for the store's fsspec filesystem (credentials, endpoint).
    zarr_format
        2 (default): what GDAL, and so QGIS, reads, with the CRS (a ``_CRS`` attribute), the
        geotransform (from the ``x``/``y`` coordinates) and nodata (the ``fill_value``). 3 for zarr
        v3 readers.

    Returns
    -------
    int or dask.delayed.Delayed
        The number of regions written; or, with ``compute=False``, a Delayed that returns it.

    Raises
    ------
    OptionError
        ``resume`` and ``overwrite`` together, or an unknown ``zarr_format``.
    RasterError
        The store exists without ``overwrite``/``resume``; it is not one seamless_dask wrote; it was
        started by another job (the message lists what differs); or it is, holds or lies in the
        result's input.

    Examples
    --------
    >>> import numpy as np, xarray as xr, seamless_dask as sd
    >>> from seamless_dask.testing import Brightness
    >>> labels = sd.segment(xr.DataArray(np.zeros((3, 64, 64), "uint8"), dims=("band", "y", "x")), Brightness())
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())  # any folder of yours
    >>> path = tmp / "labels.zarr"
    >>> sd.to_zarr(labels, path)
    1
    >>> sd.open_raster(path).dtype
    dtype('uint8')
    """
    target = as_target(store, storage_options)
    if resume and overwrite:
        raise OptionError(
            "resume=True continues the store that is there and overwrite=True replaces it: pass "
            "one of them "
            "(--resume or --overwrite)"
        )
    if zarr_format not in (2, 3):
        raise OptionError(
            f"zarr_format must be 2 (GDAL, QGIS) or 3, got zarr_format={zarr_format!r}"
        )
    if not compute:
        return _prepare(result, target, resume, overwrite, zarr_format)
    with claim(target):
        written = bars.compute(
            _prepare(result, target, resume, overwrite, zarr_format), progress=progress
        )
        mark_complete(target.url, storage_options=target.storage_options)
    return written


def _prepare(
    result: Any, target: Target, resume: bool, overwrite: bool, zarr_format: int = 2
) -> Delayed:
    result = as_result(result)
    check_not_an_input(target, inputs_of(result), "output")
    chunks = regular_chunks(result.data.chunks)
    if (
        chunks != result.data.chunks
    ):  # a rechunk would give the result another name, and resume its plan
        result = result.chunk(dict(zip(result.dims, chunks, strict=True)))
    exists = target.exists()
    if exists and not (resume or overwrite):
        raise RasterError(
            f"{target.url!r} exists: pass resume=True to finish it, or overwrite=True to replace it"
        )
    found = our_store(target) if exists else {}
    if resume and exists:
        done = _check_resumable(target, result, chunks, found)
    else:
        target.check_parent()
        _write_template(result, target, chunks, zarr_format)
        done = np.zeros(tuple(len(c) for c in chunks[-spatial_axes(result) :]), dtype=bool)
    return _zarr_writes(result, target, done)


def _open_group(target: Target, mode: str) -> Any:
    import zarr

    return zarr.open_group(target.url, mode=mode, storage_options=target.storage_options or None)  # type: ignore[arg-type]


def _open_array(target: Target, name: str, mode: str) -> Any:
    import zarr

    return zarr.open_array(
        target.url, path=name, mode=mode, storage_options=target.storage_options or None
    )


def mark_complete(path: str | os.PathLike, *, storage_options: dict | None = None) -> None:
    """Record in the store that every region is written (``to_zarr`` does it when it computes)."""
    target = as_target(path, storage_options)
    done = np.asarray(_open_array(target, DONE, "r")[...])
    if not done.all():
        raise RasterError(
            f"{target.url!r} still misses {int((~done.astype(bool)).sum())} regions: resume it"
        )
    _open_group(target, "r+").attrs["seamless_complete"] = True


def is_complete(path: str | os.PathLike, *, storage_options: dict | None = None) -> bool:
    """Whether a store written by :func:`to_zarr` holds every region."""
    return bool(
        _open_group(as_target(path, storage_options), "r").attrs.get("seamless_complete", False)
    )


def as_result(result: Any) -> xr.DataArray:
    """``result`` checked to be a ``(y, x)`` or ``(class, y, x)`` DataArray (a volume's ``(z, y, x)``
    or ``(class, z, y, x)``), dask-backed and named.
    """
    if not isinstance(result, xr.DataArray):
        raise DimensionError(
            f"expected the xarray.DataArray that segment() returns, got {type(result).__name__}"
        )
    spatial = spatial_axes(result)
    if result.dims[-2:] != ("y", "x") or result.ndim not in (spatial, spatial + 1):
        raise DimensionError(
            f"expected dims ('y', 'x') or (class, 'y', 'x') (a volume's with 'z' before 'y'), got "
            f"{result.dims}"
        )
    if result.chunks is None:
        result = result.chunk()
    return result.rename(result.name or "data")


def spatial_axes(result: xr.DataArray) -> int:
    """How many spatial axes ``result`` has: 3 for a volume's ``(z, y, x)``, else 2."""
    return 3 if result.dims[-3:] == ("z", "y", "x") else 2


def job_of(result: xr.DataArray) -> dict[str, Any]:
    """The job record of a ``segment`` result; for another array, its dask graph's name stands for it."""
    text = result.attrs.get(record.ATTR)
    return json.loads(text) if isinstance(text, str) else {"result": result.data.name}


def inputs_of(result: xr.DataArray) -> dict[str, str]:
    """``{"input": path or URL}`` of the raster a ``segment`` result was computed from (empty if
    unknown).
    """
    path = job_of(result).get("input", {}).get("path")
    return {"input": path} if path else {}


def our_store(target: Target) -> dict:
    """The attributes of the store at ``target``, which must be one seamless_dask wrote."""
    reason = ""
    try:
        attrs = dict(_open_group(target, "r").attrs)
    except Exception as error:  # not zarr at all: a folder, a file, a store of another layout
        attrs, reason = {}, f" ({type(error).__name__})"
    if LAYOUT not in attrs:
        raise RasterError(
            f"{target.url!r} exists and is not a zarr store seamless_dask wrote{reason}: it is "
            f"left as it is; "
            "remove it yourself, or choose another output"
        )
    return attrs


def regular_chunks(chunks: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks on a regular grid that zarr can hold, as close to ``chunks`` as possible.

    segment's chunks are regular except that the last one may be longer (it holds the flush tile):
    that chunk then covers two zarr chunks, still written by one task, so no zarr chunk has two
    writers.
    """
    out = []
    for axis in chunks:
        step = axis[0]
        edges = np.cumsum(axis)[:-1]
        if np.all(edges % step == 0) and all(c == step for c in axis[:-1]):
            out.append(axis)
        else:
            size = sum(axis)
            out.append((step,) * (size // step) + ((size % step,) if size % step else ()))
    return tuple(out)


def _write_template(
    result: xr.DataArray, target: Target, chunks: tuple[tuple[int, ...], ...], zarr_format: int = 2
) -> None:
    """The store's metadata: written by xarray (its own encoding of attributes, fill value and
    dimension names) from a one-pixel slice of ``result``, then grown to the full shape.

    Given the lazy result itself, xarray's ``to_zarr(compute=False)`` builds the store graph of
    every chunk, at a client cost that grows with the scene (``benchmarks/plan_scale.py --write``);
    it stores no array-expr array at all.
    """
    import zarr

    s = spatial_axes(result)
    spatial = result.dims[-s:]
    nodata = result.attrs.get("_FillValue")
    corner = np.full(
        (*result.shape[:-s], *(1,) * s), 0 if nodata is None else nodata, dtype=result.dtype
    )
    ds = result.isel(dict.fromkeys(spatial, slice(0, 1))).copy(data=corner).to_dataset()
    var = ds[result.name]
    var.encoding.update(chunks=tuple(axis[0] for axis in chunks))
    if (
        nodata is not None
    ):  # in the encoding, as xarray wants it (it stays an attribute when read back)
        var.attrs.pop("_FillValue")
        var.encoding.update(
            _FillValue=nodata, **({"fill_value": nodata} if zarr_format == 3 else {})
        )
    coords = [name for name in ds.coords if set(spatial) & set(ds[name].dims)]
    for name in coords:  # in one chunk each, as xarray writes them whole
        ds[name].encoding["chunks"] = tuple(result[name].shape)
    if (
        result.rio.crs is not None
    ):  # GDAL's Zarr driver reads the CRS from here (and the transform from x/y)
        var.attrs["_CRS"] = {"wkt": result.rio.crs.to_wkt()}
    options: dict[str, Any] = (
        {"storage_options": target.storage_options} if target.storage_options else {}
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        # mode="w" replaces a store only after our_store said seamless_dask wrote it
        ds.to_zarr(target.url, mode="w", consolidated=False, zarr_format=zarr_format, **options)
        sliced = _open_group(target, "r+")
        sliced[result.name].resize(result.shape)
        for name in coords:
            sliced[name].resize(result[name].shape)
            sliced[name][...] = result[name].values
        zarr.consolidate_metadata(sliced.store)
        # opened again: the group opened before consolidating would write the done array and
        # attributes outside the consolidated metadata (tried: zarr v3 readers then lose a
        # coordinate)
        group = _open_group(target, "r+")
        grid = tuple(len(c) for c in chunks[-s:])
        group.create_array(DONE, shape=grid, chunks=(1,) * s, dtype="uint8", fill_value=0)
        group.attrs.update(
            {
                LAYOUT: _layout(result, chunks),
                "seamless_complete": False,
                record.ATTR: record.dumps(job_of(result)),
            }
        )


def _layout(result: xr.DataArray, chunks: tuple[tuple[int, ...], ...]) -> dict:
    return {
        "name": str(result.name),
        "shape": list(result.shape),
        "dtype": str(result.dtype),
        "chunks": chunks,
    }


def _check_resumable(
    target: Target, result: xr.DataArray, chunks: tuple[tuple[int, ...], ...], attrs: dict
) -> np.ndarray:
    check_same_job(target, result, attrs, _layout(result, chunks))
    return np.asarray(_open_array(target, DONE, "r")[...]).astype(bool)


def check_same_job(target: Target, result: xr.DataArray, attrs: dict, expected: dict) -> None:
    """Refuse to resume a store (``attrs``) of another layout than ``expected``, or started by another
    job.
    """
    found = attrs.get(LAYOUT)
    if found != json.loads(json.dumps(expected)):
        raise RasterError(
            f"{target.url!r} was started for a result of another layout ({found}, now "
            f"{expected}): resume with the "
            "same image, model, tile size, overlap and chunks, or use overwrite=True"
        )
    if record.ATTR not in attrs:
        raise RasterError(
            f"{target.url!r} has no job record (written by an older seamless_dask), so resuming "
            f"it cannot be proven "
            "to finish the same job: use overwrite=True to write it anew"
        )
    changed = record.differences(json.loads(attrs[record.ATTR]), job_of(result))
    if changed:
        raise RasterError(
            f"{target.url!r} was started by another job; resuming would mix two jobs' results. "
            f"What differs "
            f"(started -> now): {'; '.join(changed)}. Resume with the same input, model and "
            f"options, or use "
            "overwrite=True to write it anew"
        )


def _zarr_writes(result: xr.DataArray, target: Target, done: np.ndarray) -> Delayed:
    """A Delayed that writes every region not ``done`` and returns how many it wrote."""
    array = resumed_array(result.data, done)
    name = "seamless-zarr-" + tokenize(array.name, target.url, done)
    s = done.ndim  # spatial axes: a plane's 2, a volume's 3
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-s:]]
    blocks = block_keys(array).reshape(array.numblocks[-s:])
    layer: dict = {}
    for where in np.argwhere(~done):
        index = tuple(int(i) for i in where)
        region = tuple(slice(o[i], o[i + 1]) for o, i in zip(offsets, index, strict=True))
        layer[(name, *index)] = (
            _write_region,
            target,
            str(result.name),
            blocks[index],
            region,
            index,
        )
    total = "seamless-zarr-done-" + tokenize(name)
    layer[total] = (sum, list(layer))
    return Delayed(total, graph_with(total, layer, [array]))


def _write_region(
    target: Target, name: str, block: np.ndarray, region: tuple[slice, ...], index: tuple
) -> int:
    _open_array(target, name, "r+")[(Ellipsis, *region)] = block
    # After the pixels: a marker never stands for a region that was not written.
    _open_array(target, DONE, "r+")[index] = 1
    return 1
