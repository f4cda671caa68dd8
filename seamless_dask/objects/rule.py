"""What makes an object of a class map (:class:`LabelRule`: the classes, nodata, connectivity and
region, checked) and a block's pieces under it: every class labelled in one pass of
``skimage.measure.label``, each piece named by its first pixel in the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from skimage import measure

from ..exceptions import OptionError
from ..tiling.region import Region, as_region


@dataclass(frozen=True)
class LabelRule:
    """What makes an object: the classes that form objects and how pixels connect."""

    classes: tuple[int, ...] | None  # None: every class but 0 (the background) and nodata
    nodata: int | None
    connectivity: int  # 1: edge neighbours (4 in 2-D); 2: edges and corners (8)
    region: Region | None = None  # pixels whose centre lies outside are no object

    @classmethod
    def of(
        cls, array: xr.DataArray, *, connectivity: int = 1, classes: Any = None, nodata: Any = None,
        region: Any = None, region_crs: Any = None,
    ) -> LabelRule:  # fmt: skip
        """The rule ``instances`` takes, checked, for the class map ``array`` (``label_map``'s)."""
        return cls(
            _classes(classes),
            _nodata(array, nodata),
            _connectivity(connectivity),
            as_region(region, array, region_crs),
        )

    def inside(self, origin: tuple[int, int], shape: tuple[int, ...]) -> np.ndarray | None:
        """Which pixels of the block at ``origin`` may be objects' (their centre in the region);
        ``None``: all.
        """
        if self.region is None:
            return None
        inside = self.region.mask(origin[0], origin[1], (int(shape[0]), int(shape[1])))
        return None if inside.all() else inside

    def pieces(
        self, block: np.ndarray, origin: tuple[int, int], width: int, dtype: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of ``block`` (whose first pixel is ``origin`` of a scene ``width`` px wide):
        a local label a pixel (0 where no object is, 1.. in scan order) and each label's name, 1 +
        the scene's row-major index of the piece's first pixel (``names[0]`` is 0).

        One pass of ``skimage.measure.label`` over all classes at once (pixels of one value that
        touch are one piece: touching objects of two classes stay apart), where ``scipy.ndimage.label``
        would take a pass a class.
        """
        codes = self.codes(block, self.inside(origin, block.shape))
        if codes is None:
            return np.zeros(block.shape, np.uint8), np.zeros(1, dtype)
        found = measure.label(codes, background=0, connectivity=self.connectivity)
        flat = found.ravel()
        # in scan order, a piece starts where the running maximum of the labels grows
        running = np.maximum.accumulate(flat)
        grows = np.empty(len(flat), bool)  # where it grows, without np.diff's copies
        grows[:1] = running[:1] > 0
        np.not_equal(running[1:], running[:-1], out=grows[1:])
        starts = np.flatnonzero(grows)
        if len(starts) != (running[-1] if len(running) else 0):
            found, starts = _in_scan_order(found)  # not skimage's numbering: made so
        rows, cols = np.divmod(starts, block.shape[1])
        names = np.zeros(len(starts) + 1, dtype)
        names[1:] = (origin[0] + rows).astype(dtype) * width + origin[1] + cols + 1
        return found, names

    def codes(self, block: np.ndarray, inside: np.ndarray | None) -> np.ndarray | None:
        """``block`` with 0 wherever no object may be (background, nodata, classes not asked for,
        outside the region) and one value a class elsewhere: ``block`` itself where it is so
        already; ``None`` where no pixel may be an object's.
        """
        if inside is None and self.classes is None and not self.nodata:
            return block  # every class but 0 an object: no need to know which are here
        present = _present(block if inside is None else block[inside])
        objects = self.objects_of(present)
        if not objects:
            return None
        if inside is None and 0 not in objects and len(objects) == np.count_nonzero(present):
            return block
        if block.dtype == np.uint8:
            lut = np.zeros(256, np.uint16)
            lut[np.array(objects, np.uint8)] = np.arange(1, len(objects) + 1)
            codes = lut[block]
        else:
            wanted = np.array(objects, block.dtype)
            at = np.minimum(np.searchsorted(wanted, block), len(wanted) - 1)
            codes = np.where(wanted[at] == block, at + 1, 0).astype(np.int64)
        if inside is not None:
            codes[~inside] = 0
        return codes

    def objects_of(self, present: np.ndarray) -> list[Any]:
        """Of the classes ``present`` (sorted), those whose regions are objects."""
        if self.classes is not None:
            return [v for v in present if v in self.classes]
        return [v for v in present if v != 0 and (self.nodata is None or v != self.nodata)]


def _present(block: np.ndarray) -> np.ndarray:
    """The values of ``block``, sorted: a class map's usual type counted, not sorted."""
    if block.dtype == np.uint8:
        return np.flatnonzero(np.bincount(block.ravel(), minlength=256)).astype(np.uint8)
    return np.unique(block)


def _in_scan_order(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 1.. in the order their first pixels come in a row-major scan, and those
    first pixels' flat indices.
    """
    values, first = np.unique(found.ravel(), return_index=True)
    first, values = first[values > 0], values[values > 0]
    order = np.argsort(first, kind="stable")
    lut = np.zeros(int(values.max(initial=0)) + 1, np.int64)
    lut[values[order]] = np.arange(1, len(values) + 1)
    return lut[found], first[order]


def _classes(classes: Any) -> tuple[int, ...] | None:
    if classes is None:
        return None
    picked = tuple(int(c) for c in np.atleast_1d(classes))
    if not picked:
        raise OptionError(
            "classes=[] forms no object: name at least one class, or pass None for all but 0"
        )
    return picked


def _nodata(array: xr.DataArray, nodata: int | None) -> int | None:
    if nodata is not None:
        return int(nodata)
    found = array.rio.nodata if array.rio.nodata is not None else array.attrs.get("_FillValue")
    return None if found is None or np.isnan(float(found)) else int(found)


def _connectivity(connectivity: int) -> int:
    if connectivity not in (1, 2):
        raise OptionError(
            f"connectivity={connectivity!r}: 1 joins pixels that share an edge (4 neighbours), 2 also "
            "those that share a corner (8 neighbours)"
        )
    return connectivity
