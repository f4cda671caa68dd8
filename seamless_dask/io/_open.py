"""Opening rasters lazily: ``open_raster`` (GeoTIFF/COG through rioxarray, zarr and netCDF through
xarray).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import RasterError
from ._ngff import group_attrs, ngff_attrs, open_ome_zarr
from ._slide import SLIDE_ENGINES, is_slide, open_slide

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
# a slide's or OME-Zarr's dask chunks (rounded to an OME-Zarr's own chunks), when not given
READ_CHUNK = 2048
# what a (band, y, x) variable may call it
BAND_DIMS = (
    "band",
    "bands",
    "channel",
    "channels",
    "c",
    "spectral_band",
    # segment's soft outputs, read back (a quicklook of them): output="uncertainty"'s measures,
    # "probabilities"' and "logits"' classes
    "measure",
    "class",
)


def open_raster(
    path: str | os.PathLike,
    *,
    chunks: int | tuple[int, int] | str | None = None,
    bands: Sequence[int] | None = None,
    variable: str | None = None,
    level: int = 0,
    engine: str | None = None,
) -> xr.DataArray:
    """Open a raster lazily as a ``(band, y, x)`` DataArray with its CRS, transform and nodata
    (``.rio``).

    Parameters
    ----------
    path
        A GeoTIFF, COG or anything GDAL reads (through rioxarray), a zarr store or a netCDF file
        (through xarray). URLs GDAL understands (``/vsicurl/``, ``s3://``) pass through. Slides: an
        OME-Zarr image (NGFF 0.4 or 0.5; a ``bioformats2raw`` layout opens its first image), or an
        OME-TIFF, SVS, NDPI, SCN or BIF file through tifffile (MIRAX and VMS through OpenSlide),
        read window by window; their ``y``/``x`` coords are physical (``attrs["pixel_size"]`` and
        ``attrs["pixel_unit"]``, micrometres when the file says), the channel axis is ``band``, and
        a ``t`` axis comes back as ``time``.
    chunks
        ``None`` (the default): lazily loaded, no dask yet; ``segment`` then reads each of its
        chunks' windows once, straight from the file. Or pixels per dask chunk side (int or ``(y,
        x)``), or ``"auto"``, for a dask-backed array (``segment`` rechunks it to its plan).
    bands
        1-based band numbers to keep, in order (GDAL's convention), e.g. ``[4, 3, 2]``.
    variable
        The data variable of a zarr or netCDF dataset holding several.
    level
        The pyramid level to read: 0 (the default) is the full resolution; for a GeoTIFF, level
        ``k`` is its ``k``-th overview; for a slide or OME-Zarr, its ``k``-th multiscale level.
    engine
        The reader: ``None`` (by the file), ``"gdal"`` (rioxarray), ``"tifffile"`` (the default for
        OME-TIFF, SVS, NDPI, SCN, BIF) or ``"openslide"`` (the default for MIRAX and VMS; any format
        OpenSlide reads, as RGB).

    Returns
    -------
    xarray.DataArray
        ``(band, y, x)`` with ``y``/``x`` coords, ``spatial_ref`` and nodata; a zarr output of
        :func:`~seamless_dask.to_zarr` comes back as written (integer labels with their nodata value).

    Raises
    ------
    RasterError
        The path does not exist or cannot be read; a dataset holds several variables and
        ``variable`` is not given; ``bands`` are out of range; ``level`` is not one the file has.
    DimensionError
        The variable's first dim is not a band dim (a ``time`` stack: select one step, or give
        :func:`~seamless_dask.segment` the stack).

    Examples
    --------
    >>> import seamless_dask as sd
    >>> from seamless_dask.demo import write_scene_geotiff
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())  # any folder of yours
    >>> path = write_scene_geotiff(tmp / "scene.tif", size=512)
    >>> image = sd.open_raster(path)
    >>> image.dims, image.shape, image.rio.crs.to_epsg(), int(image.rio.nodata)
    (('band', 'y', 'x'), (3, 512, 512), 32631, 0)
    >>> sd.open_raster(path, bands=[3, 2, 1]).band.values.tolist()
    [3, 2, 1]
    """
    where = os.fspath(path)
    local = "://" not in where and not where.startswith("/vsi")
    if local and not os.path.exists(where):
        raise RasterError(f"input raster {where!r} does not exist: check the path")
    if engine not in (None, "gdal", *SLIDE_ENGINES):
        raise RasterError(
            f"engine must be one of {('gdal', *SLIDE_ENGINES)} or None (by the file), got "
            f"{engine!r}"
        )
    dask_chunks = _dask_chunks(chunks)
    zarr_store = is_zarr(where)
    image = _ngff_image(where) if zarr_store else None
    if image is not None:
        data = open_ome_zarr(*image, level=level, sides=_read_sides(dask_chunks))
    elif engine in SLIDE_ENGINES or (engine is None and is_slide(where)):
        data = open_slide(where, level, _read_sides(dask_chunks), engine)
    elif zarr_store or where.endswith(NETCDF_SUFFIXES):
        _check_base_level(where, level)
        data = _open_dataset_variable(where, dask_chunks, variable)
    else:
        if variable is not None:
            raise RasterError(
                f"variable={variable!r} picks a variable of a zarr or netCDF dataset, and "
                f"{where!r} is a raster of bands: leave variable (--variable) out, or use bands"
            )
        data = _open_gdal(where, dask_chunks, level)
    # the job record's input identity
    data.encoding["source"] = os.path.abspath(where) if local else where
    return _select_bands(data, bands, where)


def is_zarr(where: str | os.PathLike) -> bool:
    """Whether ``where`` is a zarr store: named ``*.zarr``, or a folder holding zarr metadata (a
    group inside one, such as an OME-Zarr's ``labels/tissue``).
    """
    where = os.fspath(where)
    if where.rstrip("/").endswith(".zarr"):
        return True
    metadata = ("zarr.json", ".zgroup", ".zarray")
    return (
        "://" not in where
        and os.path.isdir(where)
        and any(os.path.exists(os.path.join(where, m)) for m in metadata)
    )


def _dask_chunks(chunks: int | tuple[int, int] | str | None) -> Any:
    if chunks is None or chunks == "auto":
        return chunks
    if isinstance(chunks, int):
        chunks = (chunks, chunks)
    if isinstance(chunks, str) or len(chunks) != 2 or min(chunks) < 1:
        raise RasterError(
            f"chunks must be a positive int, (y, x), 'auto' or None, got chunks={chunks!r}"
        )
    return {"band": -1, "y": chunks[0], "x": chunks[1]}


def _ngff_image(where: str) -> tuple[str, dict] | None:
    """``(url, attributes)`` of the OME-Zarr image at ``where`` (or at its ``bioformats2raw`` layout's
    ``0/``).
    """
    attrs = group_attrs(where)
    if attrs is None:
        return None
    if "bioformats2raw.layout" in attrs or "bioformats2raw.layout" in attrs.get("ome", {}):
        where = where.rstrip("/") + "/0"
        attrs = group_attrs(where) or {}
    return None if ngff_attrs(attrs) is None else (where, attrs)


def _read_sides(dask_chunks: Any) -> tuple[int, int]:
    """Pixels per dask chunk side a slide or an OME-Zarr is read in: ``chunks=`` when given, else 2048."""
    if isinstance(dask_chunks, dict):
        return int(dask_chunks["y"]), int(dask_chunks["x"])
    return READ_CHUNK, READ_CHUNK


def _check_base_level(where: str, level: int) -> None:
    if level != 0:
        raise RasterError(
            f"{where!r} is not a multiscale (OME-Zarr) store: it has level 0 only, got "
            f"level={level}"
        )


def _open_gdal(where: str, chunks: Any, level: int = 0) -> xr.DataArray:
    import rasterio
    import rioxarray

    if level:
        with rasterio.open(where) as src:
            count = len(src.overviews(1))
        if not 0 <= level <= count:
            raise RasterError(
                f"{where!r} has {count} overviews, so levels 0 to {count}, got level={level}: 0 "
                f"is the full resolution"
            )
    try:
        # lock=False: each dask task opens its own handle, so chunks are read in parallel.
        # cache=False: a lazily loaded array must not keep what a task read (it would stay in memory
        # with the graph).
        data = rioxarray.open_rasterio(
            where,
            chunks=chunks,
            lock=False,
            masked=False,
            cache=chunks is not None,
            overview_level=level - 1 if level else None,
        )
    except rasterio.errors.RasterioIOError as error:
        raise RasterError(f"cannot read {where!r} as a raster: {error}") from None
    if isinstance(data, list):
        raise RasterError(
            f"{where!r} holds {len(data)} subdatasets: open one of them, e.g. 'NETCDF:{where}:name'"
        )
    if isinstance(data, xr.Dataset):
        raise RasterError(
            f"{where!r} holds several variables {list(data.data_vars)}: open one subdataset"
        )
    data.name = data.name or Path(where).stem
    return data


def _open_dataset_variable(
    where: str, chunks: dict | str | None, variable: str | None
) -> xr.DataArray:
    import rioxarray  # noqa: F401  (registers .rio)

    # the store's own chunks; segment rechunks to the tile grid
    chunks = None if chunks is None else {}
    try:
        if is_zarr(where):
            ds = xr.open_zarr(where, decode_coords="all", mask_and_scale=False, chunks=chunks)
        else:
            ds = xr.open_dataset(where, decode_coords="all", mask_and_scale=False, chunks=chunks)
    except (OSError, ValueError, KeyError) as error:
        raise RasterError(f"cannot open {where!r} with xarray: {error}") from None
    names = [name for name, var in ds.data_vars.items() if {"y", "x"} <= set(map(str, var.dims))]
    if variable is None and len(names) != 1:
        raise RasterError(
            f"{where!r} has image variables {names}: pick one with variable=<name> (--variable)"
        )
    name = variable or names[0]
    if name not in ds.data_vars:
        raise RasterError(f"{where!r} has no variable {name!r}; it has {list(ds.data_vars)}")
    data = ds[name]
    data.attrs.pop("_CRS", None)  # GDAL's copy of the CRS, which spatial_ref already carries
    if data.ndim == 2:
        data = data.expand_dims(band=[1])
    if data.ndim == 3 and str(data.dims[0]) != "band":
        first = str(data.dims[0])
        if first.lower() not in BAND_DIMS:
            raise RasterError(
                f"variable {name!r} of {where!r} has dims {tuple(map(str, data.dims))}, and "
                f"{first!r} is not a band "
                f"dim: select one {first} first, e.g. "
                f"xr.open_zarr(...)[{name!r}].isel({first}=0), and segment that "
                "(a band dim is named one of " + ", ".join(BAND_DIMS) + ")"
            )
        data = data.rename({data.dims[0]: "band"})
    return data


def _select_bands(data: xr.DataArray, bands: Sequence[int] | None, where: str) -> xr.DataArray:
    if bands is None:
        return data
    count = data.sizes.get("band", 1)
    wrong = [b for b in bands if not isinstance(b, (int, np.integer)) or not 1 <= b <= count]
    if wrong or not bands:
        raise RasterError(
            f"bands must be 1-based band numbers between 1 and {count} for {where!r}, got "
            f"{list(bands)}: "
            f"e.g. bands=[1, 2, 3]"
        )
    if len(set(bands)) != len(bands):
        repeated = sorted({b for b in bands if list(bands).count(b) > 1})
        raise RasterError(
            f"bands {list(bands)} repeat band {repeated[0]}: each band is given once (a model "
            "that wants a band twice can copy it itself)"
        )
    return data.isel(band=[b - 1 for b in bands])
