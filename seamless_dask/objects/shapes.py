"""Objects as polygons and as a table, from a class map, merged across chunk borders.

Each chunk is polygonised by ``rasterio.features.shapes`` in pixel coordinates (whole numbers, exact, so
the pieces of an object that crosses a border share their edges to the last bit), the pieces of one
object (one id of :func:`~seamless_dask.objects.instances`) are joined by ``shapely.union_all``, and only
then is the raster's transform applied: no seam line, no sliver. The table sums each chunk's moments of
each object (pixels, rows, columns, band values) and adds them up by id.
"""

from __future__ import annotations

import warnings
from typing import Any

import dask
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from ..classes import classes_of
from ..exceptions import OptionError
from .instances import instances, label_map

PIXEL_ORIGIN = 1  # what the pieces' pixel coordinates add to the scene's (_pieces)
# rasterio.features.shapes warns of the in-memory rasters it makes of numpy arrays, which have no
# transform; a filter set around the call would not hold across dask's threads, so one for that
# module's warning only, once
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.features")


def polygons(
    labels: Any,
    *,
    connectivity: int = 1,
    classes: list[int] | None = None,
    nodata: int | None = None,
) -> Any:
    """Every object of a class map as one polygon (with its holes), in the map's CRS.

    Parameters
    ----------
    labels
        A class map ``(y, x)``, as :func:`~seamless_dask.objects.instances` takes it (its
        ``connectivity``, ``classes`` and ``nodata`` mean the same here).

    Returns
    -------
    geopandas.GeoDataFrame
        One row an object: ``id`` (the object's id in ``instances(labels)``), ``class`` (and
        ``class_name`` where the map names its classes), ``area_px`` and ``geometry`` (a Polygon; a
        MultiPolygon for an object joined only at corners, ``connectivity=2``), in ``labels.rio.crs``.
        Per class, the areas add up to the pixel count times the pixel area, and the objects are
        ``rasterio.features.shapes``' on the whole map.

    Examples
    --------
    >>> import numpy as np, seamless_dask as sd
    >>> frame = sd.polygons(np.array([[1, 1, 0], [1, 0, 2], [0, 2, 2]]))
    >>> frame[["id", "class", "area_px"]].to_dict("list")
    {'id': [1, 6], 'class': [1, 2], 'area_px': [3, 3]}
    """
    geopandas = _geopandas()
    ids = instances(labels, connectivity=connectivity, classes=classes, nodata=nodata)
    classes_map = _class_map(labels, ids)
    found = _per_chunk(_pieces, ids.data, classes_map, None, None, connectivity=connectivity)
    pieces = found.compute()
    frame = pd.DataFrame(
        [p for block in pieces.ravel() for p in block],
        columns=["id", "class", "area_px", "geometry"],
    )
    joined = _joined(frame)
    to_crs = ids.rio.transform(recalc=False) * Affine.translation(-PIXEL_ORIGIN, -PIXEL_ORIGIN)
    geometry = shapely.transform(joined["geometry"].to_numpy(), lambda xy: _apply(to_crs, xy))
    out = geopandas.GeoDataFrame(
        {
            "id": joined.index.to_numpy(),
            "class": joined["class"].to_numpy(),
            "area_px": joined["area_px"].to_numpy(),
        },
        geometry=geometry,
        crs=ids.rio.crs,
    )
    names = _class_names(labels)
    if names:
        out["class_name"] = [names.get(int(c), "") for c in out["class"]]
    return out


def object_table(labels: Any, image: Any = None, **rule: Any) -> Any:
    """Per object: ``class``, ``area_px``, ``area`` (CRS units squared), ``xmin ymin xmax ymax`` and
    ``x y`` (the centroid, in the CRS), and with ``image`` ``(band, y, x)`` the mean of each band
    (``mean_<band>``), as a lazy dask DataFrame indexed by object id.

    ``rule``: ``connectivity``, ``classes``, ``nodata``, as :func:`~seamless_dask.objects.instances`.
    An empty scene gives an empty table.
    """
    import dask.dataframe as dd

    ids = instances(labels, **rule)
    classes_map = _class_map(labels, ids)
    bands = _bands(image, ids)
    parts = _per_chunk(_moments, ids.data, classes_map, *(bands or (None, None)))
    no_bands = {name: np.zeros((1, 1)) for name in bands[1]} if bands else None
    meta = _moments(np.zeros((1, 1), np.uint32), np.zeros((1, 1), np.uint8), (0, 0), no_bands)
    transform = ids.rio.transform(recalc=False)
    table = dask.delayed(_table)(parts, transform, meta)
    return dd.from_delayed([table], meta=_finish(_totals(meta), Affine.identity()))


def _table(parts: np.ndarray, transform: Affine, empty: pd.DataFrame) -> pd.DataFrame:
    frames = [p for p in parts.ravel() if len(p)]
    frame = pd.concat(frames) if frames else empty
    return _finish(_totals(frame), transform)


def _totals(frame: pd.DataFrame) -> pd.DataFrame:
    """Each object's moments summed over the chunks that hold a piece of it."""
    sums = {k: "sum" for k in frame.columns if k == "n" or k.startswith("sum_")}
    extremes = {"class": "first", "rmin": "min", "rmax": "max", "cmin": "min", "cmax": "max"}
    return frame.groupby("id", sort=True).agg({**sums, **extremes})


def _per_chunk(
    fn: Any, ids: Any, classes: Any, bands: Any, names: list[str] | None, **options: Any
) -> Any:
    """``fn(ids, classes, origin, bands, **options)`` of every chunk, lazily, as a dask array of
    objects, one a chunk (blockwise: both of dask's engines take it; a chunk's origin comes from the
    blocks of two ``arange`` arrays beside it).
    """
    import dask.array as da

    rows, cols = (da.arange(n, chunks=c) for n, c in zip(ids.shape, ids.chunks, strict=True))
    arrays: list[Any] = [ids, "ij", classes.rechunk(ids.chunks), "ij", rows, "i", cols, "j"]
    if bands is not None:
        arrays += [bands, "bij"]
    return da.blockwise(
        _one_chunk, "ij", *arrays, fn=fn, names=names, options=options,
        dtype=object, adjust_chunks={"i": 1, "j": 1}, concatenate=True,
        meta=np.empty((0, 0), object),
    )  # fmt: skip


def _one_chunk(
    ids: np.ndarray, classes: np.ndarray, rows: np.ndarray, cols: np.ndarray, *bands: Any, fn: Any,
    names: list[str] | None, options: dict,
) -> np.ndarray:  # fmt: skip
    out = np.empty((1, 1), object)
    band_values = _named(bands[0], names or []) if bands else None
    out[0, 0] = fn(ids, classes, (int(rows[0]), int(cols[0])), band_values, **options)
    return out


def _finish(part: pd.DataFrame, transform: Affine) -> pd.DataFrame:
    out = pd.DataFrame(index=part.index)
    out["class"] = part["class"]
    out["area_px"] = part["n"].astype("int64")
    out["area"] = part["n"] * abs(transform.determinant)
    x0, y0 = _apply_points(transform, part["cmin"], part["rmin"])
    x1, y1 = _apply_points(transform, part["cmax"] + 1, part["rmax"] + 1)
    out["xmin"], out["xmax"] = np.minimum(x0, x1), np.maximum(x0, x1)
    out["ymin"], out["ymax"] = np.minimum(y0, y1), np.maximum(y0, y1)
    out["x"], out["y"] = _apply_points(
        transform, part["sum_c"] / part["n"] + 0.5, part["sum_r"] / part["n"] + 0.5
    )
    for column in part.columns:
        if column.startswith("sum_band_"):
            out["mean_" + column.removeprefix("sum_band_")] = part[column] / part["n"]
    return out


def _moments(
    ids: np.ndarray, classes: np.ndarray, origin: tuple[int, int], bands: Any
) -> pd.DataFrame:
    ids = np.asarray(ids)
    keep = ids > 0
    unique, index = np.unique(ids[keep], return_inverse=True)
    rows, cols = np.nonzero(keep)
    n = len(unique)
    data: dict[str, Any] = {"id": unique.astype("uint64"), "n": np.bincount(index, minlength=n)}
    data["sum_r"] = np.bincount(index, rows + origin[0], n).astype(float)
    data["sum_c"] = np.bincount(index, cols + origin[1], n).astype(float)
    for name, values in (bands or {}).items():
        data[f"sum_band_{name}"] = np.bincount(index, np.asarray(values)[keep].astype(float), n)
    data["class"] = np.zeros(n, np.asarray(classes).dtype)
    data["class"][index] = np.asarray(classes)[keep]
    for key, values, reduce in (("rmin", rows, np.minimum), ("rmax", rows, np.maximum),
                                ("cmin", cols, np.minimum), ("cmax", cols, np.maximum)):  # fmt: skip
        start = np.full(n, np.iinfo(np.int64).max if reduce is np.minimum else -1, np.int64)
        reduce.at(start, index, values + (origin[0] if key[0] == "r" else origin[1]))
        data[key] = start
    return pd.DataFrame(data)


def _pieces(
    ids: np.ndarray, classes: np.ndarray, origin: tuple[int, int], bands: Any, connectivity: int
) -> list:
    """``(id, class, pixels, polygon)`` of each piece of an object in one chunk, in the scene's pixel
    coordinates (whole numbers).
    """
    from rasterio import features

    ids, classes = np.asarray(ids), np.asarray(classes)
    keep = ids > 0
    if not keep.any():
        return []
    unique, index = np.unique(ids, return_inverse=True)
    local = index.reshape(ids.shape).astype(np.int32)  # shapes takes int32, not uint32 ids
    counts = np.bincount(local.ravel(), minlength=len(unique))
    first = np.zeros(len(unique), classes.dtype)
    first[local[keep]] = classes[keep]
    # pixel coordinates one more than the scene's (PIXEL_ORIGIN): never the identity, which rasterio
    # takes for a raster without a transform
    shift = Affine.translation(origin[1] + PIXEL_ORIGIN, origin[0] + PIXEL_ORIGIN)
    out: dict[int, list] = {}
    found = features.shapes(local, mask=keep, connectivity=4 * connectivity, transform=shift)
    for geometry, value in found:
        out.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    return [
        (int(unique[k]), first[k].item(), int(counts[k]) if n == 0 else 0, part)
        for k, parts in out.items()
        for n, part in enumerate(parts)
    ]


def _joined(frame: pd.DataFrame) -> pd.DataFrame:
    """One row an object: the pieces of the few objects that cross a border joined, the rest as
    they are (a groupby over every object would call shapely once per object).
    """
    frame = frame.sort_values("id", kind="stable")
    crossing = frame["id"].duplicated(keep=False).to_numpy()
    whole = frame[~crossing].set_index("id")
    geometry = whole["geometry"].to_numpy().copy()
    invalid = ~shapely.is_valid(geometry)  # corner-joined rings (connectivity=2): MultiPolygons
    geometry[invalid] = shapely.make_valid(geometry[invalid])
    whole = whole.assign(geometry=geometry)
    parts = frame[crossing].groupby("id", sort=True)
    if parts.ngroups:
        merged = parts.agg({"class": "first", "area_px": "sum"})
        merged["geometry"] = [_join(list(g)) for _, g in parts["geometry"]]
        whole = pd.concat([whole, merged]).sort_index()
    return whole


def _join(parts: list) -> Any:
    """One object's pieces as one geometry.

    Their edges meet on whole pixel coordinates, so the union leaves no sliver. A ring that touches
    itself at a corner (an object joined only there, ``connectivity=2``) is made valid, as the
    MultiPolygon it is. (GEOS's faster coverage union needs pieces noded alike on their shared edges,
    which rasterio's are not.)
    """
    joined = parts[0] if len(parts) == 1 else shapely.union_all(parts)
    return joined if joined.is_valid else shapely.make_valid(joined)


def _apply(transform: Affine, xy: np.ndarray) -> np.ndarray:
    x, y = _apply_points(transform, xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def _apply_points(transform: Affine, cols: Any, rows: Any) -> tuple[Any, Any]:
    a, b, c, d, e, f = transform[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def _class_map(labels: Any, ids: xr.DataArray) -> Any:
    """The class map as ``instances`` read it, in the ids' chunks."""
    import dask.array as da

    data = label_map(labels).data
    return data if isinstance(data, da.Array) else da.from_array(data, ids.data.chunks)


def _bands(image: Any, ids: xr.DataArray) -> tuple[Any, list[str]] | None:
    """``image`` as a dask array chunked like the ids, all bands in each chunk, and its band names."""
    if image is None:
        return None
    import dask.array as da

    array = (
        image if isinstance(image, xr.DataArray) else xr.DataArray(image, dims=("band", "y", "x"))
    )
    if array.shape[-2:] != ids.shape:
        raise OptionError(
            f"image= is {array.shape[-2]} x {array.shape[-1]} px, the class map {ids.shape[0]} x "
            f"{ids.shape[1]}: pass the image the map was made from"
        )
    data = array.data if isinstance(array.data, da.Array) else da.from_array(np.asarray(array.data))
    return data.rechunk((-1, *ids.data.chunks)), _band_names(array)


def _named(block: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    return dict(zip(names, np.asarray(block), strict=True))


def _band_names(array: xr.DataArray) -> list[str]:
    if "band" in array.coords:
        return [str(b) for b in array["band"].values]
    return [str(k) for k in range(array.shape[0])]


def _class_names(labels: Any) -> dict[int, str]:
    found = classes_of(dict(getattr(labels, "attrs", {})))
    return dict(enumerate(found.names)) if found is not None else {}


def _geopandas() -> Any:
    try:
        import geopandas
    except ImportError:
        raise OptionError("polygons need geopandas: pip install 'seamless_dask[objects]'") from None
    return geopandas


def to_vector(frame: Any, path: str, *, layer: str | None = None) -> str:
    """Write polygons to GeoParquet (``.parquet``), GeoPackage (``.gpkg``) or FlatGeobuf (``.fgb``),
    with the CRS and class names, for GDAL/QGIS (pyogrio writes the last two).
    """
    suffix = str(path).rsplit(".", 1)[-1].lower()
    if suffix == "parquet":
        frame.to_parquet(path)
    elif suffix in ("gpkg", "fgb"):
        driver = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}[suffix]
        frame.to_file(path, driver=driver, engine="pyogrio", **({"layer": layer} if layer else {}))
    else:
        raise OptionError(
            f"{path!r}: write polygons to .parquet (GeoParquet), .gpkg (GeoPackage) or .fgb (FlatGeobuf)"
        )
    return str(path)
