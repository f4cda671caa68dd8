"""Whole-slide files (OME-TIFF, SVS, NDPI...) read lazily, window by window, through tifffile or
OpenSlide.

Each dask task reads its window from a per-process handle of the file (opened once per process, as
GDAL's are for GeoTIFFs): tifffile's zarr view of one pyramid level, which decodes only the file's
tiles the window touches, or OpenSlide's ``read_region``. The pixel size comes from the OME-XML
(``PhysicalSizeX``), the Aperio description (``MPP``) or the TIFF resolution tags, in micrometres.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import RasterError

# What GDAL does not read as a whole-slide pyramid: tifffile reads these (OpenSlide when tifffile is
# missing).
TIFFFILE_SUFFIXES = (
    ".ome.tif",
    ".ome.tiff",
    ".ome.tf2",
    ".ome.tf8",
    ".ome.btf",
    ".svs",
    ".ndpi",
    ".scn",
    ".bif",
)
OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu", ".svslide")
SLIDE_ENGINES = ("tifffile", "openslide")
_UM_PER = {
    "µm": 1.0,
    "um": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
}


def is_slide(where: str) -> bool:
    """Whether ``where`` names a whole-slide file that :func:`open_slide` reads."""
    return where.lower().endswith(TIFFFILE_SUFFIXES + OPENSLIDE_SUFFIXES)


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level of a slide file as a picklable array: a task reads ``[y0:y1, x0:x1, ...]``
    from it.
    """

    path: str
    level: int
    shape: tuple[int, ...]
    dtype: np.dtype
    reader: str  # "tifffile" or "openslide"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if self.reader == "tifffile":
            return np.asarray(_tiff_level(self.path, self.level)[key])
        ys, xs = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        slide = _openslide(self.path)
        down = slide.level_downsamples[self.level]
        region = slide.read_region(
            (round(xs[0] * down), round(ys[0] * down)), self.level, (xs[1] - xs[0], ys[1] - ys[0])
        )
        rgba = np.asarray(region)
        # OpenSlide marks what lies outside the scanned area transparent: show it as the white of an
        # empty slide
        rgb = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3]).astype(np.uint8)
        return rgb[(slice(None), slice(None), key[2])] if len(key) > 2 else rgb


@functools.lru_cache(maxsize=16)
def _tiff_level(path: str, level: int) -> Any:
    import tifffile
    import zarr

    return zarr.open(tifffile.imread(path, aszarr=True, series=0, level=level), mode="r")


@functools.lru_cache(maxsize=16)
def _openslide(path: str) -> Any:
    import openslide

    return openslide.OpenSlide(path)


def open_slide(
    where: str, level: int, sides: tuple[int, int], engine: str | None = None
) -> xr.DataArray:
    """Level ``level`` of the slide at ``where`` as a lazy ``(band, y, x)`` DataArray, read by
    ``engine`` (one of
    :data:`SLIDE_ENGINES`, or ``None``: by the file) in dask chunks of ``sides`` (y, x) pixels.
    """
    try:
        import tifffile
    except ImportError:
        tifffile = None  # type: ignore[assignment]
    if engine == "tifffile" and tifffile is None:
        raise RasterError("engine='tifffile' needs tifffile: pip install 'seamless_dask[slides]'")
    if (
        engine != "openslide"
        and tifffile is not None
        and not where.lower().endswith(OPENSLIDE_SUFFIXES)
    ):
        return _open_tifffile(where, level, sides)
    try:
        import openslide  # noqa: F401
    except ImportError:
        raise RasterError(
            f"{where!r} is a whole-slide file: reading it needs tifffile (pip install "
            f"'seamless_dask[slides]') or, "
            "for MIRAX/VMS, OpenSlide (pip install openslide-python openslide-bin)"
        ) from None
    return _open_openslide(where, level, sides)


def _open_tifffile(where: str, level: int, sides: tuple[int, int]) -> xr.DataArray:
    import tifffile

    try:
        tif = tifffile.TiffFile(where)
    except (OSError, tifffile.TiffFileError) as error:
        raise RasterError(f"cannot read {where!r} as a TIFF slide: {error}") from None
    with tif:
        series = tif.series[0]
        levels = len(series.levels)
        _check_level(where, level, levels)
        page = series.levels[level]
        axes, shape = page.axes.upper(), tuple(page.shape)
        size = _tiff_pixel_size(tif)
        z_step = _tiff_z_step(tif) if "Z" in axes else None
        full = series.levels[0].shape[axes.index("Y")], series.levels[0].shape[axes.index("X")]
    array = _lazy(SlideLevel(where, level, shape, np.dtype(page.dtype), "tifffile"), sides, axes)
    step = (full[0] / shape[axes.index("Y")], full[1] / shape[axes.index("X")])
    image = _as_image(array, axes, where, level=level, levels=levels, size=size, step=step)
    if "z" in image.dims:  # a z-stack: its planes' spacing, in micrometres where the file says it
        coord = (z_step or 1.0) * np.arange(image.sizes["z"])
        units = "micrometer" if z_step else "pixel"
        image = image.assign_coords(z=("z", coord, {"units": units}))
    return image


def _tiff_z_step(tif: Any) -> float | None:
    """Micrometres between a z-stack's planes: OME-XML's ``PhysicalSizeZ``, or ImageJ's ``spacing``."""
    if tif.is_ome and tif.ome_metadata:
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        size = None if pixels is None else pixels.get("PhysicalSizeZ")
        if size:
            unit = pixels.get("PhysicalSizeZUnit", "µm") if pixels is not None else "µm"
            return float(size) * _UM_PER[unit] if unit in _UM_PER else None
    spacing = (tif.imagej_metadata or {}).get("spacing")
    return float(spacing) if spacing else None


def _open_openslide(where: str, level: int, sides: tuple[int, int]) -> xr.DataArray:
    slide = _openslide(where)
    _check_level(where, level, slide.level_count)
    width, height = slide.level_dimensions[level]
    array = _lazy(
        SlideLevel(where, level, (height, width, 3), np.dtype("uint8"), "openslide"), sides, "YXS"
    )
    mpp = [slide.properties.get(f"openslide.mpp-{a}") for a in ("y", "x")]
    size = (float(mpp[0]), float(mpp[1])) if all(mpp) else None
    down = slide.level_downsamples[level]
    return _as_image(
        array, "YXS", where, level=level, levels=slide.level_count, size=size, step=(down, down)
    )


def _check_level(where: str, level: int, count: int) -> None:
    if not 0 <= level < count:
        raise RasterError(
            f"{where!r} has {count} pyramid levels (0 to {count - 1}), got level={level}: 0 is "
            f"the full resolution"
        )


def _lazy(level: SlideLevel, sides: tuple[int, int], axes: str) -> Any:
    import dask.array as da

    blocks = tuple({"Y": sides[0], "X": sides[1]}.get(a, -1) for a in axes)
    meta = np.empty((0,) * len(axes), level.dtype)
    return da.from_array(level, chunks=blocks, lock=False, fancy=False, asarray=True, meta=meta)


def _as_image(
    array: Any,
    axes: str,
    where: str,
    *,
    level: int,
    levels: int,
    size: tuple[float, float] | None,
    step: tuple[float, float],
) -> xr.DataArray:
    """The file's axes (``YXS``, ``CYX``, ``TCZYX``...) as ``(time, z, band, y, x)`` dims, planes of
    one dropped.
    """
    names = {"Y": "y", "X": "x", "S": "band", "C": "band", "T": "time", "Z": "z"}
    keep = [i for i, a in enumerate(axes) if array.shape[i] > 1 or a in "YX"]
    array = array[tuple(slice(None) if i in keep else 0 for i in range(len(axes)))]
    dims = [names.get(axes[i], axes[i].lower()) for i in keep]
    if dims.count("band") > 1:
        raise RasterError(
            f"{where!r} has both samples and channels (axes {axes!r}): read it with tifffile "
            f"yourself"
        )
    data = xr.DataArray(array, dims=dims)
    if "band" not in dims:
        data = data.expand_dims(band=1)
    data = data.transpose(*[d for d in ("time", "z") if d in data.dims], "band", "y", "x")
    data = data.assign_coords(band=np.arange(1, data.sizes["band"] + 1))
    unit = "micrometer" if size else "pixel"
    pixel = (size[0] * step[0], size[1] * step[1]) if size else step
    for dim, px in zip(("y", "x"), pixel, strict=True):
        data = data.assign_coords({dim: (dim, px * np.arange(data.sizes[dim]), {"units": unit})})
    data.attrs.update(
        pixel_size=[float(p) for p in pixel],
        pixel_unit=unit,
        slide_level=level,
        slide_levels=levels,
    )
    data.name = where.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    return data


def _tiff_pixel_size(tif: Any) -> tuple[float, float] | None:
    """Micrometres per pixel of level 0: OME-XML, then Aperio's ``MPP``, then the resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        root = ET.fromstring(tif.ome_metadata)
        pixels = root.find(".//{*}Pixels")
        if pixels is not None and pixels.get("PhysicalSizeX") and pixels.get("PhysicalSizeY"):
            sizes = []
            for axis in ("Y", "X"):
                unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
                if unit not in _UM_PER:
                    return None
                sizes.append(float(pixels.get(f"PhysicalSize{axis}", "nan")) * _UM_PER[unit])
            return sizes[0], sizes[1]
    page = tif.pages[0]
    found = re.search(r"\bMPP\s*=\s*([0-9.]+)", page.description or "")
    if found:
        return float(found.group(1)), float(found.group(1))
    tags = page.tags
    if "XResolution" in tags and "YResolution" in tags and "ResolutionUnit" in tags:
        # inch, centimetre in µm
        per_unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
        x, y = tags["XResolution"].value, tags["YResolution"].value
        if per_unit and x[0] and y[0]:
            return per_unit * y[1] / y[0], per_unit * x[1] / x[0]
    return None
