"""Areas of interest: a shapely geometry that says where a result is wanted.

A region is kept in pixel coordinates (``x`` = column, ``y`` = row; pixel ``(r, c)`` is the square
``[c, c + 1] x [r, r + 1]``), whatever it was given in. Only tiles whose window touches it run, so
every pixel inside it gets the same tiles, and the same result, as in a whole-scene run; pixels
whose centre lies outside it are nodata; a chunk no tile of which touches it reads nothing and runs
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import shape as geometry_of
from shapely.geometry.base import BaseGeometry

from ..exceptions import OptionError


@dataclass(frozen=True)
class Region:
    """A geometry in pixel coordinates of one image."""

    geometry: BaseGeometry

    def __post_init__(self) -> None:
        shapely.prepare(self.geometry)

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.Region", self.geometry.wkb)

    def touches_box(self, y0: int, x0: int, y1: int, x1: int) -> bool:
        """Whether the pixel box ``[y0, y1) x [x0, x1)`` shares any area or edge with the region."""
        return bool(self.touching(np.array([[y0, x0, y1, x1]]))[0])

    def touching(self, boxes: np.ndarray) -> np.ndarray:
        """Which of the pixel boxes ``(n, 4)`` rows ``(y0, x0, y1, x1)`` touch the region, in one
        vectorised call.
        """
        y0, x0, y1, x1 = np.asarray(boxes).T
        return np.asarray(
            shapely.intersects(self.geometry, shapely.box(x0, y0, x1, y1)), dtype=bool
        )

    def covers_box(self, y0: int, x0: int, y1: int, x1: int) -> bool:
        """Whether the pixel box ``[y0, y1) x [x0, x1)`` lies wholly inside the region (no pixel to
        clip).
        """
        return bool(self.geometry.covers(shapely.box(x0, y0, x1, y1)))

    def mask(self, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
        """``(h, w)`` bool: which pixels of the block at ``(y0, x0)`` have their centre in the region."""
        from rasterio.features import geometry_mask
        from rasterio.transform import Affine

        inside: np.ndarray = geometry_mask(
            [self.geometry], out_shape=shape, transform=Affine.translation(x0, y0), invert=True
        )
        return inside


def as_region(
    region: Any, data: Any, region_crs: Any = None, tiles: tuple[Any, Any] | None = None
) -> Region | None:
    """``region`` in ``data``'s pixel coordinates: a shapely geometry or GeoJSON-like mapping, a
    boolean raster over the image's extent (any resolution), ``"tissue"`` (found on a thumbnail,
    :mod:`seamless_dask.tiling.masks`), or a callable ``accept(y0, x0, y1, x1) -> bool`` asked of
    each tile of the grid ``tiles = (tile_size, overlap)``.

    A DataArray with a CRS takes geometries in that CRS (or in ``region_crs``, reprojected to it);
    anything else takes them in pixel coordinates.
    """
    if region is None:
        return None
    shape = (int(data.shape[-2]), int(data.shape[-1]))
    raster = _raster_geometry(region, data, shape, tiles)
    if raster is not None:
        if region_crs is not None:
            raise OptionError(
                f"region_crs={region_crs!r} says in which CRS a geometry is; a mask, 'tissue' or a "
                "callable is in the image's own pixels: leave region_crs out"
            )
        return _checked(Region(raster), shape)
    geometry = _geometry(region)
    crs = getattr(data.rio, "crs", None) if hasattr(data, "rio") else None
    if crs is None:
        if region_crs is not None:
            raise OptionError(
                f"region_crs={region_crs!r} needs an input with a CRS, and this one has none: "
                f"give the region in "
                "pixel coordinates (x = column, y = row), or write the input's CRS with "
                "data.rio.write_crs(...)"
            )
        return _checked(Region(geometry), data.shape[-2:])
    if region_crs is not None:
        geometry = _reprojected(geometry, region_crs, crs)
    a, b, c, d, e, f = (~data.rio.transform())[:6]
    return _checked(
        Region(affinity.affine_transform(geometry, [a, b, d, e, c, f])), data.shape[-2:]
    )


def _raster_geometry(
    region: Any, data: Any, shape: tuple[int, int], tiles: tuple[Any, Any] | None
) -> BaseGeometry | None:
    """The geometry of a region given as a raster, ``"tissue"`` or a callable (``None`` for a
    geometry or mapping).
    """
    from . import masks

    if isinstance(region, str):
        if region != "tissue":
            raise OptionError(
                f"region={region!r}: a region is a geometry, a mask, a callable or 'tissue'; a "
                "GeoJSON file is read with seamless_dask.tiling.region.read_geojson (the CLI's "
                "--region FILE)"
            )
        image = data.transpose(..., "y", "x") if hasattr(data, "dims") else data
        return masks.mask_geometry(masks.tissue_mask(image), shape)
    if masks.is_mask(region):
        return masks.mask_geometry(region, shape)
    if callable(region) and not isinstance(region, BaseGeometry | dict):
        if tiles is None:
            raise OptionError("a region callable decides tile by tile: segment() asks it")
        from .grid import TileGrid

        grid = TileGrid(shape, *tiles)
        (th, tw) = grid.tile_shape
        boxes = np.array([(w.y.start, w.x.start, w.y.start + th, w.x.start + tw)
                          for w in grid.windows()])  # fmt: skip
        return masks.tile_geometry(region, boxes)
    return None


def read_geojson(path: str) -> tuple[BaseGeometry, str]:
    """The union of a GeoJSON file's geometries, and their CRS (RFC 7946: EPSG:4326 unless a legacy
    ``crs``).
    """
    import json

    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise OptionError(
            f"--region {path!r} does not exist: give the GeoJSON file's path"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OptionError(
            f"--region {path!r} is not GeoJSON ({error}): give a GeoJSON Polygon, MultiPolygon or "
            "Feature(s)"
        ) from None
    if not isinstance(doc, dict):
        raise OptionError(f"--region {path!r} holds a {type(doc).__name__}, not a GeoJSON object")
    features = doc.get("features", [doc] if doc.get("type") == "Feature" else [{"geometry": doc}])
    geometries = [
        geometry_of(feature["geometry"]) for feature in features if feature.get("geometry")
    ]
    if not geometries:
        raise OptionError(
            f"--region {path!r} holds no geometry: give a GeoJSON Polygon, MultiPolygon or "
            f"Feature(s)"
        )
    crs = doc.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
    return shapely.union_all(geometries), crs


def _geometry(region: Any) -> BaseGeometry:
    if isinstance(region, BaseGeometry):
        geometry = region
    elif isinstance(region, dict) or hasattr(region, "__geo_interface__"):
        geometry = geometry_of(region)
    else:
        raise OptionError(
            f"region must be a shapely geometry or a GeoJSON-like mapping, got "
            f"{type(region).__name__}: "
            "e.g. region=shapely.box(xmin, ymin, xmax, ymax)"
        )
    if not geometry.is_valid:
        from shapely.validation import explain_validity

        # mending it would change the area segmented without a word: the user decides
        raise OptionError(
            f"the region is not a valid polygon ({explain_validity(geometry)}; a ring that crosses "
            "itself, say): mend it first, e.g. shapely.make_valid(geometry), or in a GIS"
        )
    if geometry.is_empty or geometry.area == 0:
        raise OptionError(
            f"region must have an area, got {geometry.geom_type} of area 0: give a polygon"
        )
    return geometry


def _reprojected(geometry: BaseGeometry, source: Any, target: Any) -> BaseGeometry:
    from pyproj import CRS, Transformer

    def plain(crs: Any) -> Any:  # a rasterio CRS to what pyproj reads
        return crs.to_wkt() if hasattr(crs, "to_wkt") else crs

    from pyproj.exceptions import CRSError

    x0, y0, x1, y1 = geometry.bounds
    try:
        source_crs = CRS.from_user_input(plain(source))
    except CRSError as error:
        raise OptionError(
            f"region_crs={source!r} is not a CRS pyproj knows ({error}): give e.g. "
            "'EPSG:32631' (--region-crs EPSG:32631)"
        ) from None
    if source_crs.is_geographic and not (-360 <= x0 <= x1 <= 360 and -90 <= y0 <= y1 <= 90):
        target_name = CRS.from_user_input(plain(target)).to_string()
        raise OptionError(
            f"the region was read in {source_crs.to_string()} (longitude, latitude; GeoJSON's "
            f"default), but its coordinates x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g} are not "
            f"degrees: if they are in the image's CRS, say so with region_crs={target_name!r} "
            f"(--region-crs {target_name})"
        )
    transformer = Transformer.from_crs(source_crs, plain(target), always_xy=True)
    # edges curve when reprojected
    dense = shapely.segmentize(geometry, max_segment_length=_segment_length(geometry))
    moved = shapely.transform(
        dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
    if not np.isfinite(moved.bounds).all():
        raise OptionError(
            f"the region (x {x0:.6g}..{x1:.6g}, y {y0:.6g}..{y1:.6g} in {source_crs.to_string()}) "
            "does not project into the image's CRS: check region_crs (--region-crs)"
        )
    return moved


def _segment_length(geometry: BaseGeometry) -> float:
    x0, y0, x1, y1 = geometry.bounds
    return max(x1 - x0, y1 - y0) / 100 or 1.0


def _checked(region: Region, shape: tuple[int, ...]) -> Region:
    height, width = int(shape[0]), int(shape[1])
    if not region.touches_box(0, 0, height, width):
        x0, y0, x1, y1 = (round(v, 1) for v in region.geometry.bounds)
        raise OptionError(
            f"the region lies outside the image: its pixel bounds are x {x0}..{x1}, y {y0}..{y1}, "
            f"the image's x 0..{width}, y 0..{height}: check region_crs (--region-crs; GeoJSON "
            "is EPSG:4326 unless it says otherwise) against the input's CRS"
        )
    return region
