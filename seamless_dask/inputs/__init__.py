"""Input coercion, once, at the boundary: whatever ``segment`` is given becomes one value,
:class:`SegmentInput` (:func:`as_input`): the data and its kind, and every option that depends on the
input (its nodata value, the normalisation, the device, the region in its pixels, the classes)
resolved. Inner code takes only that value, and ``(bands, H, W)`` pixels from it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..blend.tiles import representable
from ..classes import Classes, as_classes
from ..exceptions import DimensionError, OptionError
from ..tiling.region import Region, as_region
from .stacks import stacked_steps, time_slices, time_steps, with_channels_first

__all__ = [
    "InputKind",
    "SegmentInput",
    "as_input",
    "bands_first",
    "bands_first_dataarray",
    "check_nodata_fits",
    "check_pixel_dtype",
    "nodata_for",
    "normalize_for",
    "resources_for",
    "stacked_steps",
    "time_slices",
    "time_steps",
    "with_channels_first",
]

InputKind = Literal["dataarray", "tensor", "dask", "numpy"]


@dataclass(frozen=True)
class SegmentInput:
    """What ``segment`` was given, as the one value every later step takes.

    ``data`` is the caller's value (an odc-stac ``Dataset`` already a ``(band, y, x)`` DataArray),
    ``kind`` which of the four kinds of input it is (the result is of the same kind); ``nodata``,
    ``normalize``, ``device``, ``region`` (in the image's pixels) and ``classes`` are the options
    that depend on the input, resolved once.
    """

    data: Any
    kind: InputKind
    nodata: float | None
    normalize: Any
    device: str
    region: Region | None
    classes: Classes | None

    @property
    def steps(self) -> str | None:
        """The leading dim segmented step by step (a STAC cube's ``time``, a ``sample`` dim), or
        ``None``.
        """
        return time_steps(self.data) if self.kind == "dataarray" else None

    @property
    def batch(self) -> int | None:
        """How many images a numpy, dask or tensor batch ``(N, bands, H, W)`` holds; ``None``: one."""
        return None if self.kind == "dataarray" or self.data.ndim != 4 else int(self.data.shape[0])

    def pixels(self, image: int | None = None) -> Any:
        """``(bands, H, W)`` pixels of a numpy, dask or tensor input (a tensor as numpy, on the CPU);
        of its ``image``-th image for a batch.
        """
        data = self.data if image is None else self.data[image]
        if self.kind == "tensor":
            return bands_first(data.detach().cpu().numpy(), "tensor")
        return bands_first(data, "dask array" if self.kind == "dask" else "array")


def as_input(
    data: Any,
    *,
    bands: Sequence[Any] | None = None,
    nodata: float | str | None = "auto",
    normalize: Any = None,
    device: str = "auto",
    region: Any = None,
    region_crs: Any = None,
    class_names: Sequence[str] | None = None,
    palette: Any = None,
    tiles: tuple[Any, Any] | None = None,
    channel_axis: int | str | None = None,
) -> SegmentInput:
    """``data`` and the options that depend on it, checked and resolved once (see
    :func:`seamless_dask.segment` for each option); an input of no known kind is refused first.
    """
    data = with_channels_first(stac_image(data, bands), channel_axis)
    kind = input_kind(data)
    if kind != "dataarray" and data.ndim not in (2, 3, 4):
        raise DimensionError(
            f"expected an image (H, W) or (bands, H, W), or a batch of them (N, bands, H, W), got "
            f"{data.ndim} dims {tuple(data.shape)}: for more leading dims, reshape them into N "
            "first, e.g. data.reshape(-1, *data.shape[-3:])"
        )
    found_nodata = nodata_for(data, nodata)
    found_region = as_region(region, data, region_crs, tiles)
    if is_percentile(normalize):
        normalize = percentile_normalize(data, kind, normalize, found_nodata, found_region)
    return SegmentInput(
        data=data,
        kind=kind,
        nodata=found_nodata,
        normalize=normalize_for(data, normalize),
        device=device_for(data, device),
        region=found_region,
        classes=as_classes(class_names, palette),
    )


PERCENTILES = (1.0, 99.8)  # CSBDeep's and StarDist's default (Cellpose's is 1 to 99)
PERCENTILE_CHUNKS = 16  # chunks sampled, at most


def is_percentile(normalize: Any) -> bool:
    """Whether ``normalize`` asks for scene-wide percentiles: ``"percentile"`` or
    ``("percentile", low, high)``.
    """
    if isinstance(normalize, str):
        return normalize == "percentile"
    return (
        isinstance(normalize, tuple | list) and len(normalize) == 3 and normalize[0] == "percentile"
    )


def percentile_normalize(
    data: Any, kind: str, normalize: Any, nodata: float | None, region: Region | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(low, high - low)`` per band: the scene's ``low`` and ``high`` percentiles, as ``segment``'s
    ``(mean, std)``, so that the model sees ``(x - low) / (high - low)`` everywhere (one scaling for
    the scene: per-tile normalisation draws lines between tiles).

    Estimated once, from up to 16 chunks drawn with a fixed seed (the same chunks, so the same
    numbers, each time the job is built: a resumed job is the same job, and the job record holds
    the values), nodata, non-finite pixels and pixels outside ``region`` left out.
    """
    low, high = (
        PERCENTILES if isinstance(normalize, str) else (float(normalize[1]), float(normalize[2]))
    )
    if not 0 <= low < high <= 100:
        raise OptionError(
            f"normalize=('percentile', {low}, {high}): give 0 <= low < high <= 100, e.g. "
            f"('percentile', 1, 99.8)"
        )
    pixels = data.data if kind == "dataarray" else data
    if kind == "tensor":
        pixels = pixels.detach().cpu().numpy()
    if not isinstance(pixels, da.Array):
        pixels = da.from_array(np.asarray(pixels), chunks=(-1,) * (pixels.ndim - 2) + (1024, 1024))
    pixels = pixels if pixels.ndim >= 3 else pixels[None]
    rows, cols = (np.cumsum([0, *c]) for c in pixels.chunks[-2:])
    cells = [(i, j) for i in range(len(rows) - 1) for j in range(len(cols) - 1)]
    if region is not None:
        boxes = np.array([(rows[i], cols[j], rows[i + 1], cols[j + 1]) for i, j in cells])
        cells = [c for c, touches in zip(cells, region.touching(boxes), strict=True) if touches]
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(cells), min(PERCENTILE_CHUNKS, len(cells)), replace=False))
    windows = [
        pixels[..., rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
        for i, j in (cells[k] for k in picked)
    ]
    values = [np.asarray(w, dtype=np.float64) for w in dask.compute(*windows)]
    per_band: list[list[np.ndarray]] = [[] for _ in range(pixels.shape[-3])]
    for (i, j), read in zip((cells[k] for k in picked), values, strict=True):
        window = read.reshape(-1, *read.shape[-3:])  # a time stack's steps together
        keep = np.isfinite(window) & (window != nodata if nodata is not None else True)
        if region is not None:
            keep &= region.mask(int(rows[i]), int(cols[j]), window.shape[-2:])
        for band in range(window.shape[1]):
            per_band[band].append(window[:, band][keep[:, band]])
    lows, spans = [], []
    for band, found in enumerate(per_band):
        sample = np.concatenate(found) if found else np.zeros(0)
        if not sample.size:
            raise OptionError(
                f"normalize='percentile': band {band} has no valid pixel in the {len(picked)} chunks "
                "sampled (all nodata, or outside the region): give (mean, std) instead"
            )
        lo, hi = np.percentile(sample, [low, high])
        lows.append(float(lo))
        spans.append(float(hi - lo) if hi > lo else 1.0)  # a constant band: 0 after the shift
    return tuple(lows), tuple(spans)


def input_kind(data: Any) -> InputKind:
    """Which of the four kinds ``segment`` takes ``data`` is, or a DimensionError saying them."""
    if isinstance(data, xr.DataArray):
        return "dataarray"
    if is_tensor(data):
        return "tensor"
    if isinstance(data, da.Array):
        return "dask"
    if isinstance(data, np.ndarray):
        return "numpy"
    raise DimensionError(
        f"data must be an xarray.DataArray, a numpy array, a dask array or a torch tensor, got "
        f"{type(data).__name__}: open rasters with seamless_dask.open_raster(path)"
    )


def resources_for(
    device: str, resources: dict[str, float] | str | None, *, cluster_has_gpus: bool = False
) -> tuple[tuple[str, float], ...]:
    """The worker resources of model tasks, as a hashable value (see ``segment``'s ``resources``).

    ``cluster_has_gpus`` is the answer of the cluster in use, asked once by ``segment`` after the
    inputs are values: this module never talks to a cluster.
    """
    if resources is None:
        return ()
    if isinstance(resources, dict):
        return tuple(sorted(resources.items()))
    if resources != "auto":
        raise OptionError(
            f"resources must be 'auto', None or a dict like {{'GPU': 1}}, got {resources!r}"
        )
    if device.startswith("cuda"):
        return (("GPU", 1),)
    if device == "auto":
        return (("GPU", 1),) if cluster_has_gpus else ()
    return ()


def nodata_for(data: Any, nodata: float | str | None) -> float | None:
    """The nodata value ``segment`` works with; ``"auto"`` reads it from a DataArray's metadata."""
    if isinstance(nodata, str):
        if nodata != "auto":
            raise OptionError(f"nodata must be 'auto', a number or None, got nodata={nodata!r}")
        if not isinstance(data, xr.DataArray):
            return None
        import rioxarray  # noqa: F401

        found = data.rio.nodata
        if found is None:
            found = data.rio.encoded_nodata
        if found is not None and not representable(float(found), data.dtype):
            warnings.warn(
                f"the input's metadata says nodata={found}, which its {data.dtype} pixels can "
                f"never hold: "
                "treating every value as data; pass nodata=<value> if the raster has another "
                "nodata value",
                UserWarning,
                stacklevel=3,
            )
            return None
        return None if found is None else float(found)
    return nodata


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's, for RGB in [0, 1]


def normalize_for(data: Any, normalize: Any) -> Any:
    """``normalize`` as ``(mean, std)`` in the input's units: ``"imagenet"`` scaled to the dtype's
    range (255 for uint8, 65535 for uint16, 1 for floats, taken to be in [0, 1]); anything else as
    given.
    """
    if not isinstance(normalize, str):
        return normalize
    if normalize != "imagenet":
        raise OptionError(
            f"the one normalize preset is 'imagenet', got {normalize!r}: or pass (mean, std)"
        )
    dtype = np.dtype(str(data.dtype).removeprefix("torch."))
    shape = tuple(data.shape)
    bands = (
        1
        if len(shape) == 2
        else (data.sizes.get("band", shape[-3]) if hasattr(data, "sizes") else shape[-3])
    )
    if bands != 3:
        raise OptionError(
            f"normalize='imagenet' is for 3 RGB bands, the image has {bands}: select them with "
            f"bands=[...] "
            "(e.g. bands=['red', 'green', 'blue']) or pass (mean, std) per band"
        )
    scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    return tuple(m * scale for m in IMAGENET[0]), tuple(s * scale for s in IMAGENET[1])


def check_nodata_fits(nodata: float | None, dtype: np.dtype) -> None:
    """Raise an OptionError if ``dtype`` cannot hold ``nodata`` exactly."""
    if nodata is None or (np.isnan(nodata) and not np.issubdtype(dtype, np.integer)):
        return
    if not representable(nodata, dtype):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            allowed = f"whole numbers {info.min}..{info.max}"
        else:
            allowed = "finite values within the dtype's range, or NaN"
        raise OptionError(
            f"nodata={nodata!r} can never occur in {np.dtype(dtype).name} pixels ({allowed}), so "
            f"nothing would be "
            f"masked: give the value the raster really uses for nodata, or nodata=None (--nodata "
            f"none)"
        )


def bands_first_dataarray(data: xr.DataArray) -> xr.DataArray:
    """``data`` with its band dim (if any) first and named ``band``; other dim orders raise with the
    fix.
    """
    dims = tuple(str(d) for d in data.dims)
    if dims == ("y", "x"):
        return data.expand_dims("band")
    if len(dims) == 3 and dims[1:] == ("y", "x"):
        return data
    if {"y", "x"} <= set(dims) and len(dims) == 3:  # dims are found by name: (y, x, band) too
        band = next(d for d in dims if d not in ("y", "x"))
        return data.transpose(band, "y", "x")
    if len(dims) in (2, 3):
        rename = f"{{{dims[-2]!r}: 'y', {dims[-1]!r}: 'x'}}"
        raise DimensionError(
            f"expected dims (band, 'y', 'x') or ('y', 'x'), got {dims}: name the spatial dims y "
            f"and x, "
            f"e.g. data.rename({rename})"
        )
    raise DimensionError(
        f"expected a 2-D (y, x) or 3-D (band, y, x) image, got {len(dims)} dims {dims}: "
        "select one time step or level first, e.g. data.isel(time=0)"
    )


def bands_first(image: Any, kind: str) -> Any:
    """``(H, W)`` or ``(bands, H, W)`` numeric image as ``(bands, H, W)``."""
    if image.dtype == bool:
        image = image.astype(np.uint8)
    check_pixel_dtype(image.dtype, kind)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise DimensionError(
            f"expected a {kind} of shape (H, W) or (bands, H, W), got {image.ndim} dims "
            f"{tuple(image.shape)}"
        )
    if image.shape[-1] <= 4 < image.shape[0] and image.shape[1] > 4:
        raise DimensionError(
            f"expected bands first (bands, H, W), got shape {tuple(image.shape)}, which looks "
            f"channels-last: "
            "pass channel_axis=-1 (or move it first: np.moveaxis(image, -1, 0))"
        )
    return image


def check_pixel_dtype(dtype: np.dtype, kind: str) -> None:
    """Raise unless pixels of ``dtype`` are real numbers a model can take (complex ones would lose
    their imaginary part without a word when cast to float32).
    """
    if np.issubdtype(dtype, np.complexfloating):
        raise DimensionError(
            f"the {kind} has complex pixels ({np.dtype(dtype).name}); a model takes real numbers: "
            f"pass the part you "
            "mean, e.g. data.real, abs(data) (amplitude) or np.angle(data) (phase), as bands of a "
            "real image"
        )
    if not (
        np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.floating)
        or np.dtype(dtype) == np.bool_
    ):
        raise DimensionError(
            f"the {kind} has dtype {dtype}; expected integer or float pixels: cast it first"
        )


def is_tensor(data: Any) -> bool:
    """Whether ``data`` is a torch tensor (without importing torch when it is not loaded)."""
    return type(data).__module__.startswith("torch") and hasattr(data, "detach")


def device_for(data: Any, device: str) -> str:
    """``"auto"`` on a tensor means the tensor's own device."""
    if device == "auto" and is_tensor(data) and data.device.type != "cpu":
        return str(data.device)
    return device


def stac_image(data: Any, bands: Sequence[Any] | None) -> Any:
    """A STAC load as ``segment`` takes it: an odc-stac/xarray ``Dataset`` with one variable per
    band becomes a ``(band, y, x)`` or ``(time, band, y, x)`` DataArray of the ``bands`` named
    (default: every variable with ``y`` and ``x`` dims, in order); a stackstac-style DataArray gets
    its ``band`` coordinate selected by name.
    """
    if isinstance(data, xr.Dataset):
        names = (
            list(bands)
            if bands is not None
            else [n for n, v in data.data_vars.items() if {"y", "x"} <= set(v.dims)]
        )
        missing = [n for n in names if n not in data.data_vars]
        if missing or not names:
            raise DimensionError(
                f"bands must name variables of the Dataset, got {missing or names}; it has "
                f"{list(data.data_vars)}: "
                "e.g. bands=['red', 'green', 'blue']"
            )
        stacked = data[names].to_dataarray(dim="band")
        order = [d for d in stacked.dims if d not in ("band", "y", "x")] + ["band", "y", "x"]
        return stacked.transpose(*order)
    if bands is not None and isinstance(data, xr.DataArray):
        if "band" not in data.dims:
            raise DimensionError(
                f"bands selects along a 'band' dim, and the data has dims {tuple(data.dims)}"
            )
        return data.sel(band=list(bands))
    return data
