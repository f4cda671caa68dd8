"""The object table: each chunk's moments of each object (pixels, rows, columns, band values), summed
by id over the chunks that hold a piece of it, then turned into areas, boxes and centroids in the CRS.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from affine import Affine

from ..exceptions import OptionError
from .chunks import apply_points, delayed_blocks, objects_of, per_chunk


def object_table(labels: Any, image: Any = None, *, units: str = "auto", **rule: Any) -> Any:
    """Per object: ``class``, ``area_px``, ``area``, ``xmin ymin xmax ymax`` and ``x y`` (the
    centroid), and with ``image`` ``(band, y, x)`` the mean of each band (``mean_<band>``), as a lazy
    dask DataFrame indexed by object id, a partition a chunk row (each object in the row of its first
    pixel; the divisions known, so it joins on the ids without a shuffle).

    ``units``: ``"auto"``: the map's CRS units (a slide's µm from its physical coords; pixels for a
    map with neither); ``"crs"``: the CRS's, refused for a map without one; ``"px"``: pixel
    coordinates (column, row; area in pixels).

    ``rule``: ``connectivity``, ``classes``, ``nodata``, ``region``, ``region_crs``, as
    :func:`~seamless_dask.objects.instances`. A map of object ids (what ``instances`` and
    ``segment_instances`` return) is measured as it is, each id an object of class 1. An empty scene
    gives an empty table.
    """
    import dask.dataframe as dd

    ids, classes_map = objects_of(labels, rule)
    transform = _transform(ids, units)
    bands = _bands(image, ids)
    parts = per_chunk(_moments, ids.data, classes_map, *(bands or (None, None)))
    no_bands = {name: np.zeros((1, 1)) for name in bands[1]} if bands else None
    meta = _moments(np.zeros((1, 1), np.uint32), np.zeros((1, 1), np.uint8), (0, 0), no_bands)
    ny, nx = parts.numblocks
    blocks = delayed_blocks(parts)
    edges = np.cumsum([0, *ids.data.chunks[0]]) * ids.shape[1]  # each chunk row's ids: (lo, hi]
    rows = [
        dask.delayed(_table)(blocks[r * nx :], (int(edges[r]), int(edges[r + 1])), transform, meta)
        for r in range(ny)
    ]
    divisions = [int(e) + 1 for e in edges[:-1]] + [int(edges[-1])]
    return dd.from_delayed(
        rows, meta=_finish(_totals(meta), Affine.identity()), divisions=tuple(divisions)
    )


def _transform(ids: xr.DataArray, units: str) -> Affine:
    if units not in ("auto", "crs", "px"):
        raise OptionError(f"units={units!r}: 'auto', 'crs' (the map's CRS) or 'px' (pixels)")
    if units == "px":
        return Affine.identity()
    if units == "crs" and ids.rio.crs is None:
        raise OptionError(
            "units='crs', and the map has no CRS: write one (labels.rio.write_crs(...)) or ask for "
            "units='auto' (physical coords, else pixels) or 'px'"
        )
    transform: Affine = ids.rio.transform(recalc=False)
    return transform


def _table(
    blocks: list[np.ndarray], ids: tuple[int, int], transform: Affine, empty: pd.DataFrame
) -> pd.DataFrame:
    """The objects of one chunk row (ids in ``(lo, hi]``: their first pixel there), from the parts
    of that row and the rows below, which their other pieces may reach.
    """
    lo, hi = ids
    parts = [b[0, 0] for b in blocks]
    frames = [p[(p["id"] > lo) & (p["id"] <= hi)] for p in parts]
    frames = [f for f in frames if len(f)]
    frame = pd.concat(frames) if frames else empty
    return _finish(_totals(frame), transform)


def _totals(frame: pd.DataFrame) -> pd.DataFrame:
    """Each object's moments summed over the chunks that hold a piece of it."""
    sums = {k: "sum" for k in frame.columns if k == "n" or k.startswith("sum_")}
    extremes = {"class": "first", "rmin": "min", "rmax": "max", "cmin": "min", "cmax": "max"}
    return frame.groupby("id", sort=True).agg({**sums, **extremes})


def _finish(part: pd.DataFrame, transform: Affine) -> pd.DataFrame:
    out = pd.DataFrame(index=part.index)
    out["class"] = part["class"]
    out["area_px"] = part["n"].astype("int64")
    out["area"] = part["n"] * abs(transform.determinant)
    x0, y0 = apply_points(transform, part["cmin"], part["rmin"])
    x1, y1 = apply_points(transform, part["cmax"] + 1, part["rmax"] + 1)
    out["xmin"], out["xmax"] = np.minimum(x0, x1), np.maximum(x0, x1)
    out["ymin"], out["ymax"] = np.minimum(y0, y1), np.maximum(y0, y1)
    out["x"], out["y"] = apply_points(
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
    index, unique = pd.factorize(ids[keep])  # a hash, not a sort (np.unique): order is not needed
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


def _band_names(array: xr.DataArray) -> list[str]:
    if "band" in array.coords:
        return [str(b) for b in array["band"].values]
    return [str(k) for k in range(array.shape[0])]
