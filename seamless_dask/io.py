"""Rasters in and out: ``open_raster``, ``to_zarr`` (region writes, resumable) and ``to_cog``.

Both writers turn a lazy result into one dask task per output chunk, so the pixels are computed and
written on whichever scheduler is active (threads, processes or a ``distributed`` cluster) and never
gathered in the client. See DESIGN.md, "Pitfalls", for why they are built the way they are.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .exceptions import DimensionError, RasterError
from .segment import restricted

ZARR_SUFFIXES = (".zarr", ".zarr/")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
SCRATCH_SUFFIX = ".seamless-scratch.tif"  # the GeoTIFF the workers write into, before the COG layout
PARTIAL_SUFFIX = ".seamless-partial.tif"  # the COG until it validates and is moved into place
DONE = "_seamless/done"  # one uint8 per chunk region, 1 once written: the resume marker


def open_raster(
    path: str | os.PathLike,
    *,
    chunks: int | tuple[int, int] | str | None = None,
    bands: Sequence[int] | None = None,
    variable: str | None = None,
) -> xr.DataArray:
    """Open a raster lazily as a ``(band, y, x)`` DataArray with its CRS, transform and nodata (``.rio``).

    Parameters
    ----------
    path
        A GeoTIFF, COG or anything GDAL reads (through rioxarray), a zarr store or a netCDF file (through
        xarray). URLs GDAL understands (``/vsicurl/``, ``s3://``) pass through.
    chunks
        ``None`` (the default): lazily loaded, no dask yet; ``segment`` then reads each of its chunks'
        windows once, straight from the file. Or pixels per dask chunk side (int or ``(y, x)``), or
        ``"auto"``, for a dask-backed array (``segment`` rechunks it to its plan).
    bands
        1-based band numbers to keep, in order (GDAL's convention), e.g. ``[4, 3, 2]``.
    variable
        The data variable of a zarr or netCDF dataset holding several.
    """
    where = os.fspath(path)
    local = "://" not in where and not where.startswith("/vsi")
    if local and not os.path.exists(where):
        raise RasterError(f"input raster {where!r} does not exist: check the path")
    dask_chunks = _dask_chunks(chunks)
    if where.rstrip("/").endswith(".zarr") or where.endswith(NETCDF_SUFFIXES):
        data = _open_dataset_variable(where, dask_chunks, variable)
    else:
        data = _open_gdal(where, dask_chunks)
    return _select_bands(data, bands, where)


def _dask_chunks(chunks: int | tuple[int, int] | str | None) -> Any:
    if chunks is None or chunks == "auto":
        return chunks
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    if isinstance(chunks, str) or len(chunks) != 2 or min(chunks) < 1:
        raise RasterError(f"chunks must be a positive int, (y, x), 'auto' or None, got chunks={chunks!r}")
    return {"band": -1, "y": chunks[0], "x": chunks[1]}


def _open_gdal(where: str, chunks: Any) -> xr.DataArray:
    import rasterio
    import rioxarray

    try:
        # lock=False: each dask task opens its own handle, so chunks are read in parallel. cache=False: a
        # lazily loaded array must not keep what a task read (it would stay in memory with the graph).
        data = rioxarray.open_rasterio(where, chunks=chunks, lock=False, masked=False, cache=chunks is not None)
    except rasterio.errors.RasterioIOError as error:
        raise RasterError(f"cannot read {where!r} as a raster: {error}") from None
    if isinstance(data, list):
        raise RasterError(f"{where!r} holds {len(data)} subdatasets: open one of them, e.g. 'NETCDF:{where}:name'")
    if isinstance(data, xr.Dataset):
        raise RasterError(f"{where!r} holds several variables {list(data.data_vars)}: open one subdataset")
    data.name = data.name or Path(where).stem
    return data


def _open_dataset_variable(where: str, chunks: dict | str | None, variable: str | None) -> xr.DataArray:
    import rioxarray  # noqa: F401  (registers .rio)

    chunks = None if chunks is None else {}  # the store's own chunks; segment rechunks to the tile grid
    try:
        if where.rstrip("/").endswith(".zarr"):
            ds = xr.open_zarr(where, decode_coords="all", mask_and_scale=False, chunks=chunks)
        else:
            ds = xr.open_dataset(where, decode_coords="all", mask_and_scale=False, chunks=chunks)
    except (OSError, ValueError, KeyError) as error:
        raise RasterError(f"cannot open {where!r} with xarray: {error}") from None
    names = [name for name, var in ds.data_vars.items() if {"y", "x"} <= set(map(str, var.dims))]
    if variable is None and len(names) != 1:
        raise RasterError(f"{where!r} has image variables {names}: pick one with variable=<name> (--variable)")
    name = variable or names[0]
    if name not in ds.data_vars:
        raise RasterError(f"{where!r} has no variable {name!r}; it has {list(ds.data_vars)}")
    data = ds[name]
    if data.ndim == 2:
        data = data.expand_dims(band=[1])
    if data.ndim == 3 and str(data.dims[0]) != "band":
        data = data.rename({data.dims[0]: "band"})
    return data


def _select_bands(data: xr.DataArray, bands: Sequence[int] | None, where: str) -> xr.DataArray:
    if bands is None:
        return data
    count = data.sizes.get("band", 1)
    wrong = [b for b in bands if not isinstance(b, (int, np.integer)) or not 1 <= b <= count]
    if wrong or not bands:
        raise RasterError(
            f"bands must be 1-based band numbers between 1 and {count} for {where!r}, got {list(bands)}: "
            f"e.g. bands=[1, 2, 3]"
        )
    return data.isel(band=[b - 1 for b in bands])


# ---------------------------------------------------------------------------------------------- zarr


def to_zarr(
    result: xr.DataArray,
    store: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    progress: bool = False,
) -> Any:
    """Write ``result`` (``(y, x)`` labels or ``(class, y, x)``) to a zarr store, one task per chunk.

    A template (coords, CRS, nodata as both zarr ``fill_value`` and CF ``_FillValue``) is written first,
    then each chunk region by its own task, with no locks (zarr chunks equal the result's chunks), and a
    done-marker per region. ``resume=True`` keeps an existing store of the same layout and computes only
    the regions whose marker is missing. ``compute=False`` returns a dask Delayed that writes when
    computed (and returns the number of regions written); otherwise the writes run now, on the active
    scheduler (a ``distributed.Client`` when there is one), with a tile progress bar if ``progress``, and
    the count is returned. Reopen with ``xr.open_zarr(store, decode_coords="all")``.
    """
    path = os.fspath(store)
    result = _as_result(result)
    chunks = _regular_chunks(result.data.chunks)
    result = result.chunk(dict(zip(result.dims, chunks, strict=True)))
    grid = tuple(len(c) for c in chunks[-2:])
    exists = os.path.exists(path)
    if exists and not (resume or overwrite):
        raise RasterError(f"{path!r} exists: pass resume=True to finish it, or overwrite=True to replace it")
    if resume and exists:
        done = _check_resumable(path, result, chunks)
    else:
        _parent_must_exist(path)
        _write_template(result, path, chunks)
        done = np.zeros(grid, dtype=bool)
    writes = _zarr_writes(result, path, done)
    if not compute:
        return writes
    written = _compute(writes, progress)
    mark_complete(path)
    return written


def mark_complete(path: str | os.PathLike) -> None:
    """Record in the store that every region is written (``to_zarr`` does it when it computes)."""
    import zarr

    where = os.fspath(path)
    done = np.asarray(zarr.open_array(where, path=DONE, mode="r")[...])
    if not done.all():
        raise RasterError(f"{where!r} still misses {int((~done.astype(bool)).sum())} regions: resume it")
    zarr.open_group(where, mode="r+").attrs["seamless_complete"] = True


def is_complete(path: str | os.PathLike) -> bool:
    """Whether a store written by :func:`to_zarr` holds every region."""
    import zarr

    return bool(zarr.open_group(os.fspath(path), mode="r").attrs.get("seamless_complete", False))


def _as_result(result: Any) -> xr.DataArray:
    if not isinstance(result, xr.DataArray):
        raise DimensionError(f"expected the xarray.DataArray that segment() returns, got {type(result).__name__}")
    if result.dims[-2:] != ("y", "x") or result.ndim not in (2, 3):
        raise DimensionError(f"expected dims ('y', 'x') or (class, 'y', 'x'), got {result.dims}")
    if result.chunks is None:
        result = result.chunk()
    return result.rename(result.name or "data")


def _regular_chunks(chunks: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks on a regular grid that zarr can hold, as close to ``chunks`` as possible.

    segment's chunks are regular except that the last one may be longer (it holds the flush tile):
    that chunk then covers two zarr chunks, still written by one task, so no zarr chunk has two writers.
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


def _zarr_chunk_shape(chunks: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    return tuple(axis[0] for axis in chunks)


def _write_template(result: xr.DataArray, path: str, chunks: tuple[tuple[int, ...], ...]) -> None:
    import zarr

    ds = result.to_dataset()
    var = ds[result.name]
    nodata = var.attrs.pop("_FillValue", None)
    # Edit the variable's own encoding: to_zarr(encoding=...) would replace it and drop grid_mapping.
    var.encoding.update(chunks=_zarr_chunk_shape(chunks))
    if nodata is not None:
        var.encoding.update(_FillValue=nodata, fill_value=nodata)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        ds.to_zarr(path, mode="w", compute=False, consolidated=True)
        group = zarr.open_group(path, mode="r+")
        grid = tuple(len(c) for c in chunks[-2:])
        group.create_array(DONE, shape=grid, chunks=(1, 1), dtype="uint8", fill_value=0)
        group.attrs.update(seamless_layout=_layout(result, chunks), seamless_complete=False)


def _layout(result: xr.DataArray, chunks: tuple[tuple[int, ...], ...]) -> dict:
    return {"name": str(result.name), "shape": list(result.shape), "dtype": str(result.dtype), "chunks": chunks}


def _check_resumable(path: str, result: xr.DataArray, chunks: tuple[tuple[int, ...], ...]) -> np.ndarray:
    import zarr

    try:
        found = zarr.open_group(path, mode="r").attrs.get("seamless_layout")
        done = np.asarray(zarr.open_array(path, path=DONE, mode="r")[...])
    except (KeyError, FileNotFoundError, ValueError) as error:
        raise RasterError(
            f"{path!r} is not a store seamless_dask started ({error}): use overwrite=True to replace it"
        ) from None
    expected = _layout(result, chunks)
    if found != {key: _jsonish(value) for key, value in expected.items()}:
        raise RasterError(
            f"{path!r} was started for a different result ({found}, now {expected}): resume with the same image, "
            "model, tile size, overlap and chunks, or use overwrite=True"
        )
    return done.astype(bool)


def _jsonish(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonish(v) for v in value]
    return value


def _zarr_writes(result: xr.DataArray, path: str, done: np.ndarray) -> Any:
    """A Delayed that writes every region not ``done`` and returns how many it wrote."""
    array = restricted(result.data, done) if done.any() else result.data
    name = "seamless-zarr-" + tokenize(array.name, path, done)
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-2:]]
    lead = (0,) * (array.ndim - 2)
    layer: dict = {}
    for j, k in zip(*np.nonzero(~done), strict=True):
        region = (slice(offsets[0][j], offsets[0][j + 1]), slice(offsets[1][k], offsets[1][k + 1]))
        layer[(name, int(j), int(k))] = (
            _write_region,
            path,
            str(result.name),
            (array.name, *lead, j, k),
            region,
            (j, k),
        )
    total = "seamless-zarr-done-" + tokenize(name)
    layer[total] = (sum, list(layer))
    dependencies: list[Any] = [array]
    return Delayed(total, HighLevelGraph.from_collections(total, layer, dependencies=dependencies))


def _write_region(path: str, name: str, block: np.ndarray, region: tuple[slice, slice], index: tuple) -> int:
    import zarr

    zarr.open_array(path, path=name, mode="r+")[(Ellipsis, region[0], region[1])] = block
    # After the pixels: a marker never stands for a region that was not written.
    zarr.open_array(path, path=DONE, mode="r+")[index] = 1
    return 1


def _parent_must_exist(path: str) -> None:
    parent = Path(path).resolve().parent
    if "://" not in path and not parent.is_dir():
        raise RasterError(f"the folder {str(parent)!r} of output {path!r} does not exist: create it first")


# ----------------------------------------------------------------------------------------------- COG


def to_cog(
    result: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compress: str = "deflate",
    blocksize: int = 512,
    overview_resampling: str | None = None,
    compute: bool = True,
    progress: bool = False,
) -> Any:
    """Write ``result`` as a Cloud-Optimized GeoTIFF of exactly its size, CRS, transform and nodata.

    Each chunk is computed and written by its own task into an uncompressed tiled GeoTIFF beside
    ``path`` (a lock per file serialises the writes, which are cheap next to inference); one last task
    lays it out as a COG with ``rio_cogeo.cog_translate`` (tiled ``blocksize``, ``compress``, internal
    overviews: ``nearest`` for labels, ``average`` for probabilities unless ``overview_resampling``
    says otherwise), validates it and moves it to ``path``. Until then ``path`` is never a partial file.

    Why not odc-geo's ``save_cog_with_dask``: it pads the image to a multiple of 2^levels (a 718 x 791
    scene came out 720 x 792) and GDAL's COG driver cannot be written window by window (rioxarray#410).
    ``compute=False`` returns a dask Delayed that writes when computed; otherwise returns ``path``
    (with a tile progress bar if ``progress``).
    """
    target = os.fspath(path)
    result = _as_result(result)
    if os.path.exists(target) and not overwrite:
        raise RasterError(f"{target!r} exists: pass overwrite=True to replace it")
    _parent_must_exist(target)
    if result.rio.crs is None:
        warnings.warn(f"writing {target!r} without a CRS: the result has none", UserWarning, stacklevel=2)
    resampling = overview_resampling or ("nearest" if np.issubdtype(result.dtype, np.integer) else "average")
    scratch = target + SCRATCH_SUFFIX
    _create_scratch(result, scratch)
    array = result.data if result.ndim == 3 else result.data[None]
    name = "seamless-cog-" + tokenize(array.name, target)
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-2:]]
    layer: dict = {}
    lock = _file_lock(scratch)
    for j in range(len(offsets[0]) - 1):
        for k in range(len(offsets[1]) - 1):
            window = (int(offsets[0][j]), int(offsets[1][k]))
            layer[(name, j, k)] = (_write_window, scratch, (array.name, 0, j, k), window, lock)
    final = "seamless-cog-final-" + tokenize(name, compress, blocksize, resampling)
    layer[final] = (_finish_cog, list(layer), scratch, target, compress, blocksize, resampling)
    dependencies: list[Any] = [array]
    writes = Delayed(final, HighLevelGraph.from_collections(final, layer, dependencies=dependencies))
    if not compute:
        return writes
    try:
        return _compute(writes, progress)
    except BaseException:
        discard_partial_cog(target)
        raise


def _compute(writes: Any, progress: bool) -> Any:
    from . import progress as bars

    return bars.compute(writes, progress=progress)


def discard_partial_cog(path: str | os.PathLike) -> None:
    """Remove what an interrupted or failed ``to_cog`` left beside ``path`` (never ``path`` itself)."""
    for suffix in (SCRATCH_SUFFIX, PARTIAL_SUFFIX):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.fspath(path) + suffix)


def _create_scratch(result: xr.DataArray, scratch: str) -> None:
    import rasterio

    height, width = result.shape[-2:]
    nodata = result.rio.nodata
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": result.shape[0] if result.ndim == 3 else 1,
        "dtype": str(result.dtype),
        "crs": result.rio.crs,
        "transform": result.rio.transform(recalc=True),
        "nodata": None if nodata is None else nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(scratch, "w", **profile) as dst:
        dst.update_tags(**{k: str(v) for k, v in result.attrs.items() if k.startswith("seamless_")})


def _file_lock(path: str) -> Any:
    """A lock every worker shares: a ``distributed.Lock`` under a Client, else one for this process."""
    try:
        from distributed import Lock, get_client

        get_client()
        return Lock("seamless-" + tokenize(path))
    except (ImportError, ValueError):
        from dask.utils import SerializableLock

        return SerializableLock("seamless-" + tokenize(path))


def _write_window(scratch: str, block: np.ndarray, origin: tuple[int, int], lock: Any) -> int:
    import rasterio
    from rasterio.windows import Window

    window = Window(origin[1], origin[0], block.shape[-1], block.shape[-2])
    with lock, rasterio.open(scratch, "r+") as dst:
        dst.write(block, window=window)
    return 1


def _finish_cog(_written: list, scratch: str, target: str, compress: str, blocksize: int, resampling: str) -> str:
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    profile = cog_profiles.get(compress)
    profile.update(blockxsize=blocksize, blockysize=blocksize, BIGTIFF="IF_SAFER")
    partial = target + PARTIAL_SUFFIX
    cog_translate(
        scratch,
        partial,
        profile,
        overview_resampling=resampling,  # type: ignore[arg-type]
        in_memory=False,
        quiet=True,
        config={"GDAL_NUM_THREADS": "ALL_CPUS", "GDAL_TIFF_OVR_BLOCKSIZE": str(blocksize)},
    )
    valid, errors, _ = cog_validate(partial)
    if not valid:
        raise RasterError(f"the COG written for {target!r} does not validate: {errors}")
    os.replace(partial, target)
    os.remove(scratch)
    return target
