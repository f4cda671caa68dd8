"""Regions from rasters: a boolean mask at any resolution over the image's extent (a slide's
thumbnail), a callable that decides tile by tile, and a slide's tissue found on a thumbnail (Otsu's
threshold on saturation, as the pathology toolkits find it: TIAToolbox, MONAI's whole-slide
pipelines).

Each becomes a geometry in the image's pixel coordinates (``region.py``), so it is a region like any
other: only tiles touching it run, pixels whose centre lies outside it are nodata, chunks it does
not touch are never read. A mask's pixels are vectorised at the mask's own resolution and scaled to
the image's: a mask at the image's resolution selects exactly its pixels; a thumbnail selects
blocks of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from ..exceptions import OptionError

MAX_MASK_SIDE = 8192  # a larger mask is reduced (a block counts if any pixel of it does)
THUMBNAIL_SIDE = 1024  # the thumbnail tissue is found on, at most


def is_mask(region: Any) -> bool:
    """Whether ``region`` is a raster (numpy, dask or xarray) rather than a geometry."""
    return isinstance(region, np.ndarray) or (
        hasattr(region, "shape") and hasattr(region, "dtype") and hasattr(region, "ndim")
    )


def mask_geometry(mask: Any, shape: tuple[int, int]) -> BaseGeometry:
    """The pixels of ``mask`` that are true (non-zero), as a geometry in the pixel coordinates of an
    image of ``shape = (height, width)`` whose extent the mask covers.
    """
    values = _two_d(mask)
    h, w = values.shape
    height, width = shape
    if abs(h * width / w - height) > height / h + 1:
        raise OptionError(
            f"a region mask must cover the image's extent: the mask is {h} x {w} px, the image "
            f"{height} x {width} px (another aspect): give a mask of the image's shape, or a "
            "thumbnail of it"
        )
    factor = max(1, -(-max(h, w) // MAX_MASK_SIDE))
    if factor > 1:  # a block is in when any of its pixels is
        values = _any_blocks(values, factor)
    if not values.any():
        raise OptionError(
            "the region mask selects no pixel: nothing would be segmented; check the mask (True, "
            "or non-zero, where the result is wanted)"
        )
    from rasterio import features

    polygons = [
        shapely.geometry.shape(shape)
        for shape, _ in features.shapes(values.astype(np.uint8), mask=values, connectivity=4)
    ]
    geometry = shapely.union_all(polygons)
    sy, sx = height / h, width / w
    return affinity.scale(geometry, xfact=sx, yfact=sy, origin=(0, 0))


def _two_d(mask: Any) -> np.ndarray:
    values = np.asarray(mask.compute() if hasattr(mask, "compute") else mask)
    values = values.squeeze() if values.ndim > 2 else values
    if values.ndim != 2 or min(values.shape) == 0:
        raise OptionError(
            f"a region mask is a 2-D raster (y, x), got shape {values.shape}: give one band"
        )
    if not (values.dtype == bool or np.issubdtype(values.dtype, np.number)):
        raise OptionError(f"a region mask holds booleans or numbers, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise OptionError(
            "the region mask holds NaN, which is neither in nor out: fill it first, e.g. "
            "mask.fillna(0) (or np.nan_to_num)"
        )
    return values.astype(bool)


def _any_blocks(values: np.ndarray, factor: int) -> np.ndarray:
    h, w = values.shape
    padded = np.zeros((-(-h // factor) * factor, -(-w // factor) * factor), dtype=bool)
    padded[:h, :w] = values
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    out: np.ndarray = np.asarray(blocks.any(axis=(1, 3)))
    return out


def tile_geometry(accept: Callable[..., Any], boxes: np.ndarray) -> BaseGeometry:
    """The union of the tile boxes ``(n, 4)`` rows ``(y0, x0, y1, x1)`` that ``accept(y0, x0, y1,
    x1)`` says yes to (in the image's pixels).
    """
    taken = []
    for box in boxes:
        y0, x0, y1, x1 = (int(v) for v in box)
        answer = accept(y0, x0, y1, x1)
        if not isinstance(answer, bool | np.bool_):
            raise OptionError(
                f"a region callable answers True or False for a tile's box (y0, x0, y1, x1), got "
                f"{answer!r} for ({y0}, {x0}, {y1}, {x1})"
            )
        if answer:
            taken.append(shapely.box(x0, y0, x1, y1))
    if not taken:
        raise OptionError(
            f"the region callable accepted none of the {len(boxes)} tiles: nothing would be "
            "segmented"
        )
    return shapely.union_all(taken)


def tissue_mask(data: Any, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """Where a slide has tissue, on a thumbnail of at most ``side`` px: the saturation of its RGB
    bands (``(max - min) / max``) above Otsu's threshold, small holes filled and specks removed (a
    thumbnail pixel's neighbourhood). ``data`` is ``(band, y, x)`` with at least 3 bands.
    """
    from scipy import ndimage

    if data.ndim != 3 or data.shape[0] < 3:
        raise OptionError(
            f"region='tissue' finds tissue by colour and needs 3 bands (RGB), got shape "
            f"{tuple(data.shape)}: give a mask instead (region=mask)"
        )
    step = max(1, -(-max(data.shape[-2:]) // side))
    thumbnail = data[:3, ::step, ::step]
    pixels = np.asarray(
        thumbnail.compute() if hasattr(thumbnail, "compute") else thumbnail, dtype=np.float64
    )
    top, low = pixels.max(axis=0), pixels.min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        saturation = np.where(top > 0, (top - low) / top, 0.0)
    tissue = saturation > otsu(saturation)
    tissue = ndimage.binary_opening(tissue, iterations=1)
    tissue = ndimage.binary_fill_holes(ndimage.binary_closing(tissue, iterations=2))
    if not tissue.any():
        raise OptionError(
            "region='tissue' found no tissue on the slide's thumbnail (saturation above Otsu's "
            "threshold): give a mask or a geometry instead"
        )
    out: np.ndarray = tissue
    return out


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the cut that maximises the variance between the two sides."""
    counts, edges = np.histogram(values[np.isfinite(values)], bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, grand = weight[-1], mean[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        between = (grand * weight - total * mean) ** 2 / (weight * (total - weight))
    return float(centres[int(np.nanargmax(between[:-1]))])
