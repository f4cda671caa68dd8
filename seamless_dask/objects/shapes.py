"""Objects as polygons, from a class map, merged across chunk borders.

Each chunk is polygonised by ``rasterio.features.shapes`` in pixel coordinates (whole numbers, exact, so
the pieces of an object that crosses a border share their edges to the last bit). A piece that touches
no inner chunk border is a whole object, and stays in its chunk's partition; the pieces that touch one go
to one merge, which joins those of one object (one id of :func:`~seamless_dask.objects.instances`). Only
then is the raster's transform applied: no seam line, no sliver.

The join unions the pieces' outlines only: a hole of a piece that touches no border of its chunk is a
hole of the object (nothing else of the object can be inside it), so it is put back after the union
rather than carried through it (unions of polygons with many holes are what costs, five times over).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
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
from .chunks import apply_points, delayed_blocks, objects_of, per_chunk
from .instances import IDS_ATTR

# geometry columns go to shapely as copies: pandas 3 hands out read-only arrays, which shapely 2.1.0
# refuses ("buffer source array is read-only")
PIXEL_ORIGIN = 1  # what the pieces' pixel coordinates add to the scene's (_pieces)
COLUMNS = ["id", "class", "area_px", "geometry"]
_DTYPES = ("uint64", "int64", "int64", "object")
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
    region: Any = None,
    region_crs: Any = None,
    simplify: float | None = None,
    lazy: bool = False,
) -> Any:
    """Every object of a class map as one polygon (with its holes), in the map's CRS.

    Parameters
    ----------
    labels
        A class map ``(y, x)``, as :func:`~seamless_dask.objects.instances` takes it (its
        ``connectivity``, ``classes``, ``nodata``, ``region`` and ``region_crs`` mean the same here).
    simplify
        A tolerance in CRS units (pixels for a map without one): the outlines simplified together, so
        that neighbours still share their edges (GEOS's coverage simplification: no gap, no overlap).
        The areas no longer add up to the pixels.
    lazy
        A dask-geopandas GeoDataFrame instead: a partition a chunk (the objects wholly inside it) and
        one more (the objects that cross a border), so no machine holds every polygon;
        :func:`to_vector` writes it partition by partition. ``simplify`` needs every polygon at once,
        so it is refused here.

    Returns
    -------
    geopandas.GeoDataFrame
        One row an object, sorted by id: ``id`` (the object's id in ``instances(labels)``), ``class``
        (and ``class_name`` where the map names its classes), ``area_px`` and ``geometry`` (a Polygon;
        a MultiPolygon for an object joined only at corners, ``connectivity=2``), in
        ``labels.rio.crs``. Per class, the areas add up to the pixel count times the pixel area, and
        the objects are ``rasterio.features.shapes``' on the whole map.

    Examples
    --------
    >>> import numpy as np, seamless_dask as sd
    >>> frame = sd.polygons(np.array([[1, 1, 0], [1, 0, 2], [0, 2, 2]]))
    >>> frame[["id", "class", "area_px"]].to_dict("list")
    {'id': [1, 6], 'class': [1, 2], 'area_px': [3, 3]}
    """
    _geopandas()  # refused at once, not once the chunks are polygonised
    if lazy and simplify:
        raise OptionError(
            f"simplify={simplify!r} with lazy=True: the coverage is simplified whole, which a "
            "partitioned frame never is: compute it first (lazy=False) or simplify each partition "
            "yourself (neighbours in two partitions then no longer share their edges)"
        )
    rule = {"connectivity": connectivity, "classes": classes, "nodata": nodata, "region": region,
            "region_crs": region_crs}  # fmt: skip
    if isinstance(labels, xr.DataArray) and labels.attrs.get(IDS_ATTR):
        rule = {k: v for k, v in rule.items() if v is not None and k != "connectivity"}
    ids, classes_map = objects_of(labels, rule)
    found = per_chunk(
        _pieces, ids.data, classes_map, None, None,
        connectivity=connectivity, scene=ids.shape,
    )  # fmt: skip
    finish = Finish(
        ids.rio.transform(recalc=False) * Affine.translation(-PIXEL_ORIGIN, -PIXEL_ORIGIN),
        ids.rio.crs,
        _class_names(labels),
        np.dtype(classes_map.dtype),
    )
    if lazy:
        return _partitioned(found, finish)
    chunks = found.compute().ravel()
    whole = [c.whole for c in chunks]
    merged = _joined(pd.concat([c.border for c in chunks], ignore_index=True))
    frame = pd.concat([*whole, merged], ignore_index=True).sort_values("id", ignore_index=True)
    if not simplify:
        return finish(frame)
    # a coverage for GEOS: neighbours' shared edges with the same vertices (every pixel corner), and
    # each ring from the same vertex whatever the chunking (normalize)
    noded = shapely.normalize(shapely.segmentize(frame["geometry"].to_numpy(copy=True), 1.0))
    out = finish(frame.assign(geometry=noded))
    out["geometry"] = shapely.coverage_simplify(out.geometry.to_numpy(copy=True), float(simplify))
    return out


@dataclass(frozen=True)
class Pieces:
    """One chunk's polygons: the whole objects, and the pieces that touch an inner chunk border
    (with the chunk's box, ``x0 y0 x1 y1`` in the pieces' coordinates).
    """

    whole: pd.DataFrame
    border: pd.DataFrame


@dataclass(frozen=True)
class Finish:
    """Pixel-coordinate rows into a GeoDataFrame in the CRS."""

    to_crs: Affine
    crs: Any
    names: dict[int, str]
    class_dtype: Any = None  # the class map's (an empty frame's would be int64)

    def __call__(self, frame: pd.DataFrame) -> Any:
        """``frame``'s rows (pixel coordinates) as a GeoDataFrame in the CRS."""
        geopandas = _geopandas()
        geometry = shapely.transform(frame["geometry"].to_numpy(copy=True), self._apply)
        out = geopandas.GeoDataFrame(
            {
                "id": frame["id"].to_numpy(np.uint64),
                "class": frame["class"].to_numpy(self.class_dtype),
                "area_px": frame["area_px"].to_numpy(np.int64),
            },
            geometry=geopandas.GeoSeries(geometry, crs=self.crs),
        )
        if self.names:
            out.insert(2, "class_name", [self.names.get(int(c), "") for c in out["class"]])
        return out

    def _apply(self, xy: np.ndarray) -> np.ndarray:
        x, y = apply_points(self.to_crs, xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])


def _partitioned(found: Any, finish: Finish) -> Any:
    """A dask-geopandas frame: each chunk's whole objects a partition, the merged ones the last.

    A chunk's pieces are split at once into its partition and its border pieces, so what waits for
    the merge is only the border pieces, not the chunks.
    """
    import dask.dataframe as dd

    try:
        import dask_geopandas  # noqa: F401  (registers GeoDataFrame partitions with dask)
    except ImportError:
        raise OptionError(
            "lazy=True needs dask-geopandas: pip install 'seamless_dask[objects]'"
        ) from None
    blocks = delayed_blocks(found)
    whole = [dask.delayed(whole_of)(b, finish) for b in blocks]
    border = [dask.delayed(border_of)(b) for b in blocks]
    merged = dask.delayed(merged_of)(border, finish)
    meta = finish(_empty())
    frame = dd.from_delayed([*whole, merged], meta=meta, verify_meta=False)
    PLANS[frame._name] = WritePlan(blocks, finish)
    while len(PLANS) > 64:  # the oldest frames' plans let go
        del PLANS[next(iter(PLANS))]
    return frame


@dataclass(frozen=True)
class WritePlan:
    """How ``to_vector`` writes a lazy frame of ``polygons`` a chunk at a time: each chunk's pieces
    (a Delayed each) and what makes them rows in the CRS.

    dask orders the frame's graph to reach the merge (which needs every chunk) first, so each
    chunk's whole objects would wait for it, every polygon of the scene at once (10.5 GiB at
    40,000 px); written by ``_streamed`` instead, a chunk's whole objects are on disk as soon as
    they are made, and only the pieces that cross a border wait.
    """

    blocks: list[Any]
    finish: Finish


PLANS: dict[str, WritePlan] = {}  # a lazy frame's name -> its plan (to_vector)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in zip(COLUMNS, _DTYPES, strict=True)})


def whole_of(block: np.ndarray, finish: Finish) -> Any:
    """A chunk's whole objects (its ``Pieces``' block), as rows in the CRS."""
    return finish(block[0, 0].whole.sort_values("id"))


def border_of(block: np.ndarray) -> pd.DataFrame:
    """A chunk's pieces that touch an inner border, waiting for the merge."""
    return block[0, 0].border


def merged_of(border: list[pd.DataFrame], finish: Finish) -> Any:
    """Every chunk's border pieces joined, an object a row, in the CRS."""
    return finish(_joined(pd.concat(border, ignore_index=True)))


def _pieces(
    ids: np.ndarray,
    classes: np.ndarray,
    origin: tuple[int, int],
    bands: Any,
    *,
    connectivity: int,
    scene: tuple[int, int],
) -> Pieces:
    """Each piece of an object in one chunk, ``(id, class, pixels, polygon)``, in the scene's pixel
    coordinates plus ``PIXEL_ORIGIN`` (whole numbers: never the identity transform, which rasterio
    takes for a raster without one).
    """
    from rasterio import features

    ids, classes = np.asarray(ids), np.asarray(classes)
    keep = ids > 0
    x0, y0 = origin[1] + PIXEL_ORIGIN, origin[0] + PIXEL_ORIGIN
    x1, y1 = x0 + ids.shape[1], y0 + ids.shape[0]
    if not keep.any():
        empty = _empty()
        return Pieces(empty, empty.assign(x0=0, y0=0, x1=0, y1=0))
    # the chunk's ids numbered 0.. by a hash (pandas), not a sort: five times faster than np.unique
    index, unique = pd.factorize(ids.ravel())
    local = index.reshape(ids.shape).astype(np.int32)  # shapes takes int32, not uint32 ids
    counts = np.bincount(local.ravel(), minlength=len(unique))
    first = np.zeros(len(unique), classes.dtype)
    first[local[keep]] = classes[keep]
    shift = Affine.translation(x0, y0)
    found = list(features.shapes(local, mask=keep, connectivity=4 * connectivity, transform=shift))
    geometry = _from_geojson([g for g, _ in found])
    if connectivity == 2:  # rings that touch themselves at a corner: the MultiPolygons they are
        invalid = ~shapely.is_valid(geometry)
        geometry[invalid] = shapely.make_valid(geometry[invalid], method="structure")
    local_id = np.array([int(v) for _, v in found], np.int64)
    # an object in several pieces here (joined in another chunk) counts its pixels once
    first_piece = ~pd.Series(local_id).duplicated().to_numpy()
    frame = pd.DataFrame({
        "id": unique[local_id].astype(np.uint64), "class": first[local_id],
        "area_px": np.where(first_piece, counts[local_id], 0), "geometry": geometry,
    })  # fmt: skip
    bounds = shapely.bounds(geometry)
    border = (
        ((bounds[:, 0] <= x0) & (origin[1] > 0))
        | ((bounds[:, 1] <= y0) & (origin[0] > 0))
        | ((bounds[:, 2] >= x1) & (origin[1] + ids.shape[1] < scene[1]))
        | ((bounds[:, 3] >= y1) & (origin[0] + ids.shape[0] < scene[0]))
        # an id in two pieces here (one object of an id map that is not connected) is joined too
        | pd.Series(local_id).duplicated(keep=False).to_numpy()
    )
    return Pieces(
        frame[~border].reset_index(drop=True),
        frame[border].assign(x0=x0, y0=y0, x1=x1, y1=y1).reset_index(drop=True),
    )


def _from_geojson(found: list[dict]) -> np.ndarray:
    """GeoJSON polygons (``shapes``' output) as shapely's, built in one call from their coordinates
    (five times faster than ``shapely.geometry.shape`` one by one).
    """
    rings = [ring for g in found for ring in g["coordinates"]]
    lengths = np.fromiter(map(len, rings), np.int64, len(rings))
    per_polygon = np.fromiter((len(g["coordinates"]) for g in found), np.int64, len(found))
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(rings))
    coords = np.fromiter(flat, float, 2 * int(lengths.sum())).reshape(-1, 2)
    offsets = (
        np.concatenate([[0], np.cumsum(lengths)]),
        np.concatenate([[0], np.cumsum(per_polygon)]),
    )
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)


def _joined(border: pd.DataFrame) -> pd.DataFrame:
    """The border pieces, one row an object: those of an object that crosses a border joined (the
    module's docstring says how), the rest as they are.
    """
    border = border.sort_values("id", kind="stable")
    crossing = border["id"].duplicated(keep=False).to_numpy()
    alone = border.loc[~crossing, COLUMNS]
    parts = border[crossing]
    if not len(parts):
        return alone
    pieces, piece_of = shapely.get_parts(parts["geometry"].to_numpy(copy=True), return_index=True)
    rings, ring_of = shapely.get_rings(pieces, return_index=True)
    outline = np.r_[True, ring_of[1:] != ring_of[:-1]]  # each polygon's first ring
    box = parts[["x0", "y0", "x1", "y1"]].to_numpy()[piece_of][ring_of]
    bounds = shapely.bounds(rings)
    at_border = (bounds[:, :2] <= box[:, :2]).any(axis=1) | (bounds[:, 2:] >= box[:, 2:]).any(
        axis=1
    )
    inner = ~outline & ~at_border
    outer = shapely.polygons(rings[~inner], indices=ring_of[~inner])
    object_of = parts["id"].to_numpy()[piece_of]
    holes = pd.Series(list(rings[inner])).groupby(object_of[ring_of[inner]]).agg(list)
    merged = parts.groupby("id", sort=True).agg({"class": "first", "area_px": "sum"})
    starts = np.searchsorted(object_of, merged.index.to_numpy())
    ends = np.r_[starts[1:], len(object_of)]
    merged["geometry"] = [
        _with_holes(shapely.union_all(outer[s:e]), holes.get(k, []))
        for k, s, e in zip(merged.index, starts, ends, strict=True)
    ]
    return pd.concat([alone, merged.reset_index()], ignore_index=True)


def _with_holes(outline: Any, holes: list) -> Any:
    """The joined outline with the pieces' inner holes put back, each in the smallest part whose
    outline holds it (parts are nested only for objects joined at corners, ``connectivity=2``).
    """
    if not holes:
        return outline
    parts = sorted(
        shapely.get_parts(outline), key=lambda p: shapely.area(shapely.Polygon(p.exterior))
    )
    if len(parts) == 1:
        return shapely.Polygon(parts[0].exterior, [*parts[0].interiors, *holes])
    hole_polygons = shapely.polygons(np.array(holes, object))
    owner = np.full(len(holes), -1)
    for k, part in enumerate(parts):
        free = owner < 0
        owner[free] = np.where(
            shapely.covers(shapely.Polygon(part.exterior), hole_polygons[free]), k, -1
        )
    return shapely.MultiPolygon([
        shapely.Polygon(p.exterior, [*p.interiors, *(h for h, o in zip(holes, owner, strict=True) if o == k)])
        for k, p in enumerate(parts)
    ])  # fmt: skip


def _class_names(labels: Any) -> dict[int, str]:
    found = classes_of(dict(getattr(labels, "attrs", {})))
    return dict(enumerate(found.names)) if found is not None else {}


def _geopandas() -> Any:
    try:
        import geopandas
    except ImportError:
        raise OptionError("polygons need geopandas: pip install 'seamless_dask[objects]'") from None
    return geopandas
