"""``to_cog``: chunks written by their own tasks into a scratch GeoTIFF, laid out as a COG,
validated, then moved (or uploaded) into place in one step, so the target never holds a partial
file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from ..classes import classes_of
from ..cluster import progress as bars
from ..cluster.progress import Progress
from ..exceptions import RasterError
from ..graph.layers import block_keys, graph_with
from ._cog_parts import abort_upload, describe, part_writes, writes_parts
from ._pam import check_sidecar, place_sidecar
from ._target import (
    ATOMIC_PUT_PROTOCOLS,
    SCRATCH_INFIX,
    Target,
    as_target,
    check_not_an_input,
    check_plane,
    claim,
    run_id,
)
from ._zarr import as_result, inputs_of

# classic and BigTIFF, both byte orders
TIFF_MAGIC = (
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
)


@overload
def to_cog(
    result: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = ...,
    compress: str = ...,
    blocksize: int = ...,
    overview_resampling: str | None = ...,
    compute: Literal[True] = ...,
    progress: Progress = ...,
    storage_options: dict | None = ...,
    run: str | None = ...,
) -> str: ...


@overload
def to_cog(
    result: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = ...,
    compress: str = ...,
    blocksize: int = ...,
    overview_resampling: str | None = ...,
    compute: Literal[False],
    progress: Progress = ...,
    storage_options: dict | None = ...,
    run: str | None = ...,
) -> Delayed: ...


def to_cog(
    result: xr.DataArray,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    compress: str = "deflate",
    blocksize: int = 512,
    overview_resampling: str | None = None,
    compute: bool = True,
    progress: Progress = False,
    storage_options: dict | None = None,
    run: str | None = None,
) -> str | Delayed:
    """Write a segmentation result as a Cloud-Optimized GeoTIFF of exactly its size, CRS, transform
    and nodata.

    Each chunk is computed and written by its own task into an uncompressed tiled GeoTIFF (a lock
    per file serialises the writes, which are cheap next to inference); one last task lays it out as
    a COG with ``rio_cogeo.cog_translate``, validates it and moves it to ``path`` in one step: until
    then ``path`` is never a partial file. Scratch files are named after the run
    (``<path>.seamless-<run>.scratch.tif``), beside a local ``path``, so two runs never share one;
    the workers must see that folder (one machine, or a shared filesystem).

    On S3 (``s3://``) the workers share nothing: each compresses the COG tiles of its chunks (and
    of the overviews, built from the chunks in the graph) and uploads them as parts of one multipart
    upload, in one pass over the data; the last task writes the header and completes the upload,
    which S3 shows whole or not at all (a failed run aborts it). For another URL (``gs://``,
    ``az://``) the COG is written in one machine's temporary folder, validated, then uploaded, so
    the workers must run on that machine.

    Why not odc-geo's ``save_cog_with_dask``: it pads the image to a multiple of 2^levels (a 718 x
    791 scene came out 720 x 792), and GDAL's COG driver cannot be written window by window
    (rioxarray#410).

    Parameters
    ----------
    result
        A ``(y, x)`` labels or ``(class, y, x)`` DataArray, as :func:`~seamless_dask.segment`
        returns it.
    path
        A local path or an fsspec URL (``s3://``, ``gs://``, ``az://``...).
    overwrite
        Replace an existing ``path``, only if it is a TIFF file.
    compress
        GDAL compression of the COG's blocks.
    blocksize
        Side of the COG's internal tiles, in pixels.
    overview_resampling
        Resampling of the internal overviews; default ``nearest`` for labels, ``average`` for
        probabilities (quantised ones too).
    compute
        ``True``: write now, under an exclusive claim on ``path`` (see
        :func:`seamless_dask.io.claim`). ``False``: return a Delayed that writes when computed; the
        caller holds the claim.
    progress
        A tile progress bar while writing (``compute=True``).
    storage_options
        Options for the fsspec filesystem of a URL ``path``.
    run
        The run's id, which names its scratch files; default: a new one.

    Returns
    -------
    str or dask.delayed.Delayed
        ``path``; or, with ``compute=False``, a Delayed that writes and returns it.

    Raises
    ------
    RasterError
        ``path`` exists without ``overwrite``, is not a TIFF file, is the result's input, or another
        run holds it; or the written COG does not validate.

    Examples
    --------
    >>> import rasterio, seamless_dask as sd
    >>> from seamless_dask.demo import context_model, write_scene_geotiff
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())  # any folder of yours
    >>> scene = sd.open_raster(write_scene_geotiff(tmp / "scene.tif", size=300))
    >>> labels = sd.segment(scene, context_model(), tile_size=128, overlap=32)
    >>> path = sd.to_cog(labels, tmp / "labels.tif")
    >>> with rasterio.open(path) as cog:
    ...     cog.shape, cog.dtypes[0], cog.crs.to_epsg(), cog.nodata
    ((300, 300), 'uint8', 32631, 255.0)
    """
    check_plane(result, "to_cog")
    target = as_target(path, storage_options)
    layout = _Layout(overwrite, compress, blocksize, overview_resampling)
    if not compute:
        return _cog_writes(result, target, run or run_id(), layout)
    with claim(target, run) as held:
        writes = _cog_writes(result, target, held.run, layout)
        try:
            return bars.compute(writes, progress=progress)
        except BaseException:
            discard_partial_cog(target.url, run=held.run, storage_options=target.storage_options)
            raise


class _Layout(NamedTuple):
    overwrite: bool
    compress: str
    blocksize: int
    resampling: str | None


def _cog_writes(result: Any, target: Target, run: str, options: _Layout) -> Delayed:
    overwrite, compress, blocksize, resampling = options
    result = as_result(result)
    check_not_an_input(target, inputs_of(result), "output")
    if target.exists():
        if not overwrite:
            raise RasterError(f"{target.url!r} exists: pass overwrite=True to replace it")
        _check_replaceable(target)
    check_sidecar(target)
    target.check_parent()
    if (
        result.rio.crs is None and "pixel_size" not in result.attrs
    ):  # a slide has no CRS, a scene should
        warnings.warn(
            f"writing {target.url!r} without a CRS: the result has none", UserWarning, stacklevel=3
        )
    labels = np.issubdtype(result.dtype, np.integer) and "scale_factor" not in result.attrs
    resampling = resampling or ("nearest" if labels else "average")
    if writes_parts(target):  # S3: the workers compress and upload the parts themselves
        return part_writes(result, target, run, (compress, blocksize, resampling))
    scratch, partial = scratch_paths(target, run)
    os.makedirs(os.path.dirname(scratch), exist_ok=True)  # a remote target's local folder
    _create_scratch(result, scratch)
    array = result.data
    name = "seamless-cog-" + tokenize(array.name, target.url, run)
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-2:]]
    # (y, x) labels, or (class, y, x) in one block
    blocks = block_keys(array).reshape(array.numblocks[-2:])
    layer: dict = {}
    lock = _file_lock(scratch)
    for j in range(len(offsets[0]) - 1):
        for k in range(len(offsets[1]) - 1):
            window = (int(offsets[0][j]), int(offsets[1][k]))
            layer[(name, j, k)] = (_write_window, scratch, blocks[j, k], window, lock)
    final = "seamless-cog-final-" + tokenize(name, compress, blocksize, resampling)
    classes = classes_of(result.attrs)
    layout = (compress, blocksize, resampling, list(classes.names) if classes is not None else [])
    layer[final] = (_finish_cog, list(layer), scratch, partial, target, run, layout)
    return Delayed(final, graph_with(final, layer, [array]))


def _check_replaceable(target: Target) -> None:
    """Only a TIFF file may be replaced: never a folder, never a file of another kind."""
    if target.local:
        is_file = os.path.isfile(target.url)
        head = open(target.url, "rb").read(4) if is_file else b""  # noqa: SIM115  (4 bytes, closed at once)
    else:
        fs = target.fs
        is_file = fs.isfile(target.path)
        head = fs.cat_file(target.path, start=0, end=4) if is_file else b""
    if not is_file or head not in TIFF_MAGIC:
        what = "a GeoTIFF" if is_file else "a file"
        raise RasterError(
            f"{target.url!r} exists and is not {what}: overwrite replaces only a TIFF that a run "
            f"wrote; it is left "
            "as it is: remove it yourself, or choose another output"
        )


def scratch_paths(target: Target, run: str) -> tuple[str, str]:
    """The local scratch GeoTIFF the workers write and the COG before it moves: beside a local
    target, in a folder of this machine's temporary directory for a remote one.
    """
    if target.local:
        base = target.url + SCRATCH_INFIX + run
    else:
        folder = os.path.join(tempfile.gettempdir(), "seamless-cog-" + run)
        base = os.path.join(folder, os.path.basename(target.path.rstrip("/")))
    return base + ".scratch.tif", base + ".partial.tif"


def discard_partial_cog(
    path: str | os.PathLike, *, run: str, storage_options: dict | None = None
) -> None:
    """Remove what an interrupted or failed ``to_cog`` of run ``run`` left (never ``path`` itself).
    Other runs' leftovers are the claim's business (:func:`seamless_dask.io.claim` clears them when
    they are stale).
    """
    target = as_target(path, storage_options)
    if target.local:
        for leftover in scratch_paths(target, run):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)
        return
    if writes_parts(target):
        abort_upload(target, run)
        return
    shutil.rmtree(os.path.dirname(scratch_paths(target, run)[0]), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        target.fs.rm(target.sibling(SCRATCH_INFIX + run + ".partial.tif").path)


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
        describe(dst, result)


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
        dst.write(block if block.ndim == 3 else block[None], window=window)
    return 1


def _finish_cog(
    _written: list,
    scratch: str,
    partial: str,
    target: Target,
    run: str,
    layout: tuple[str, int, str, list[str]],
) -> str:
    from rio_cogeo.cogeo import cog_translate, cog_validate
    from rio_cogeo.profiles import cog_profiles

    compress, blocksize, resampling, names = layout
    profile = cog_profiles.get(compress)
    profile.update(blockxsize=blocksize, blockysize=blocksize, BIGTIFF="IF_SAFER")
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
        raise RasterError(f"the COG written for {target.url!r} does not validate: {errors}")
    os.remove(scratch)
    if target.local:
        os.replace(partial, target.url)
    else:
        _upload(partial, target, run)
        shutil.rmtree(os.path.dirname(partial), ignore_errors=True)
    place_sidecar(target, names)  # the category names (GDAL keeps them in <file>.aux.xml)
    return target.url


def _upload(local: str, target: Target, run: str) -> None:
    """Put ``local`` at ``target`` in one step: an object store's PUT shows the object whole or not
    at all; elsewhere, upload under a scratch name, then rename.
    """
    fs = target.fs
    if target.url.split("://", 1)[0] in ATOMIC_PUT_PROTOCOLS:
        fs.put_file(local, target.path)
        return
    staging = target.sibling(SCRATCH_INFIX + run + ".partial.tif")
    fs.put_file(local, staging.path)
    fs.mv(staging.path, target.path)
