"""A DataArray input's result: its coords, CRS, transform, nodata, classes and the job record.

``segment`` builds the graph; this module dresses the array it returns as the input was dressed, and
records the job (:mod:`seamless_dask.graph.record`) that makes a resumed write provably the same
job.

The model's resolution (``segment(..., resolution=)``): what the model sees resampled, lazily, to
the pixel size it was trained at (0.5 µm/px, 10 m), and its result mapped back to the input's grid,
or kept at the model's.

The pixel size of the input is its transform's (CRS units: metres for a UTM scene) or, for a slide,
``attrs["pixel_size"]`` (µm). ``factor = resolution / pixel size`` per axis:

- a whole factor ``n >= 2`` averages each ``n x n`` block (nodata and NaN left out, in float64, as
  GDAL's ``average`` does; a block with no data is nodata), and a factor of 1 leaves the pixels;
- another factor averages by its whole part first (as a pyramid level would), then interpolates
  (linear) the rest; a factor below 1 interpolates up.

Tiles, overlap and weights are those of the model's grid: the guarantees of ``segment`` hold there
(the same result for every chunking; whole-image inference where ``overlap // 2`` covers the receptive
field, measured at the model's resolution). Back on the input's grid each pixel takes the value of
the model pixel under its centre (nearest), which for a whole factor is that block's value: the
result equals resampling the image by hand (``rasterio.warp.reproject`` with ``average``),
segmenting it whole, and resampling back with ``nearest`` (``tests/test_resolution.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .blend import decide
from .classes import Classes, check_class_count
from .exceptions import DimensionError, OptionError
from .graph import record
from .graph.build import SegmentJob, build_graph
from .graph.layers import array_expr, rechunk
from .inputs import bands_first_dataarray, check_pixel_dtype
from .model.runner import ModelRunner, RunnerConfig

DROPPED_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "units", "nodata")
# what an input's attrs say of the input only: a result's class names are its own
INPUT_ONLY_ATTRS = ("class_names", "class_colors", "flag_values", "flag_meanings", "channel_labels")


@dataclass(frozen=True)
class JobRecorder:
    """Makes the job record (:mod:`seamless_dask.graph.record`) a DataArray result carries, once its
    classes are known.
    """

    data: xr.DataArray
    model: Any
    job: SegmentJob
    classes: Classes | None = None

    def __call__(self, n_classes: int) -> str:
        """The record, as the JSON string the result's ``attrs["seamless_job"]`` holds."""
        config, weights = self.job.runner.config, self.job.weights
        options = {
            "tile_size": self.job.tile_size,
            "overlap": self.job.overlap,
            "output": self.job.output,
            "weights": weights.spec,
            "normalize": config.normalize,
            "activation": config.activation,
            "tta": config.tta,
            "head": config.head,
            "amp": config.amp,
            "nodata": self.job.nodata,
            "dtype": self.job.dtype,
            "region": None if self.job.region is None else self.job.region.geometry.wkt,
            "classes": n_classes,
        }
        if self.job.padding != "flush":  # recorded when asked for: older records stay equal
            options.update(padding=self.job.padding, cval=self.job.cval)
        if config.process_fn is not None:  # by name: another function is another job
            options["process_fn"] = record.function_name(config.process_fn)
        if (
            self.classes is not None and self.classes.names
        ):  # they go into the store's metadata: part of the job
            options["class_names"] = list(self.classes.names)
        loaded = None
        if isinstance(self.model, str) and not os.path.isfile(
            self.model
        ):  # an import string: pin its weights
            loaded = ModelRunner(
                self.model, RunnerConfig(device="cpu")
            ).model  # cached: loaded once per process
        return record.dumps(record.job_record(self.data, self.model, options, loaded))


def segment_dataarray(data: xr.DataArray, job: SegmentJob, recorder: JobRecorder) -> xr.DataArray:
    """The lazy result of ``job`` on ``data``, dressed as ``data`` was (see the module docstring)."""
    bands_first = bands_first_dataarray(data)
    check_pixel_dtype(bands_first.dtype, "image")
    # dask-backed: its dask array; in memory: numpy; lazily loaded (open_raster(chunks=None)): the
    # lazy variable, which stage 1 reads window by window.
    if bands_first.chunks is not None:
        image = bands_first.data
    else:
        image = bands_first.values if bands_first.variable._in_memory else bands_first.variable
    result, label_nodata, n_classes = build_graph(image, job)
    kind = job.kind
    coords = {name: coord for name, coord in data.coords.items() if set(coord.dims) <= {"y", "x"}}
    coords.update(kind.band_coords(result.shape[0]))
    attrs = {
        key: value
        for key, value in data.attrs.items()
        if key not in DROPPED_ATTRS + INPUT_ONLY_ATTRS
    }
    if recorder.classes is not None and kind.carries_classes:
        check_class_count(recorder.classes, n_classes)
        attrs.update(recorder.classes.attrs())
    attrs.update(
        seamless_tile_size=list(job.tile_size),
        seamless_overlap=list(job.overlap),
        seamless_weights=job.weights.kind,
        seamless_job=recorder(n_classes),
    )
    if job.dtype is not None and job.dtype.startswith("uint"):  # CF and GDAL's band scale
        attrs.update(scale_factor=decide.scale_factor(job.dtype), add_offset=0.0)
    out = xr.DataArray(result, dims=kind.dims, coords=coords, attrs=attrs, name=job.output)
    fill = label_nodata if kind.is_labels else decide.quantised_fill(job.dtype or "float32")
    return with_geo(out, data, fill)


def with_geo(out: xr.DataArray, source: xr.DataArray, nodata: float | None) -> xr.DataArray:
    """``out`` with the CRS and transform of ``source`` (when it has them) and its own nodata value."""
    import rioxarray  # noqa: F401  (registers .rio)

    crs = source.rio.crs
    if crs is not None:
        out = out.rio.write_crs(crs)
        if source.sizes["y"] > 1 and source.sizes["x"] > 1:
            out = out.rio.write_transform(source.rio.transform())
    return out.rio.write_nodata(nodata, encoded=False) if nodata is not None else out


# ---- the model's resolution

OUTPUT_RESOLUTIONS = ("input", "model")


def pixel_size(data: Any) -> tuple[tuple[float, float], str]:
    """The ``(y, x)`` pixel size of ``data`` and its unit (the CRS's, or the slide's)."""
    if not isinstance(data, xr.DataArray):
        raise OptionError(
            f"resolution= resamples to the model's pixel size, which needs the input's: a "
            f"{type(data).__name__} has none; give an xarray.DataArray with a transform "
            "(sd.open_raster) or a slide's attrs['pixel_size']"
        )
    if "pixel_size" in data.attrs:
        py, px = (float(v) for v in data.attrs["pixel_size"])
        return (py, px), str(data.attrs.get("pixel_unit", "micrometer"))
    import rioxarray  # noqa: F401  (registers .rio)

    if data.rio.crs is None or min(data.sizes.get("y", 0), data.sizes.get("x", 0)) < 2:
        raise OptionError(
            "resolution= needs the input's pixel size: this DataArray has no CRS and no "
            "attrs['pixel_size']; write them (data.rio.write_crs(...), or attrs['pixel_size'] = "
            "[y, x] in µm)"
        )
    transform = data.rio.transform()
    if transform.b or transform.d:
        raise OptionError("resolution= resamples north-up rasters; this one's transform rotates")
    units = data.rio.crs.linear_units or "unknown"
    return (abs(transform.e), abs(transform.a)), units


@dataclass(frozen=True)
class Resampling:
    """How an input is taken to the model's grid and back: the factor per axis (model pixel /
    input pixel) and the model grid's shape.
    """

    factor: tuple[float, float]
    shape: tuple[int, int]

    @classmethod
    def of(cls, data: xr.DataArray, resolution: Any) -> Resampling:
        """How ``data`` (``(band, y, x)``) goes to a model of pixel size ``resolution``."""
        wanted = as_resolution(resolution)
        (py, px), _ = pixel_size(data)
        factor = (wanted[0] / py, wanted[1] / px)
        h, w = data.sizes["y"], data.sizes["x"]
        return cls(factor, (max(1, round(h / factor[0])), max(1, round(w / factor[1]))))

    def up(self) -> tuple[int, int] | None:
        """The factors of a finer model (both below 1), if their inverses are whole numbers."""
        inverse = tuple(1 / f for f in self.factor)
        rounded = tuple(round(f) for f in inverse)
        if all(
            r > 1 and math.isclose(f, r, rel_tol=1e-9)
            for f, r in zip(inverse, rounded, strict=True)
        ):
            return rounded[0], rounded[1]
        return None

    def whole(self) -> tuple[int, int] | None:
        """The factors, if both are whole numbers (``n >= 1``)."""
        rounded = tuple(round(f) for f in self.factor)
        if all(
            r >= 1 and math.isclose(f, r, rel_tol=1e-9)
            for f, r in zip(self.factor, rounded, strict=True)
        ):
            return rounded[0], rounded[1]
        return None


def as_resolution(resolution: Any) -> tuple[float, float]:
    """``resolution`` (one number or ``(y, x)``) as a ``(y, x)`` pair of positive sizes."""
    values = resolution if isinstance(resolution, tuple | list) else (resolution, resolution)
    try:
        pair = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or not all(math.isfinite(v) and v > 0 for v in pair):
        raise OptionError(
            f"resolution must be the model's pixel size, a positive number or (y, x), in the "
            f"input's units (metres for a UTM scene, µm for a slide), got {resolution!r}"
        )
    return pair[0], pair[1]


def to_model_grid(data: xr.DataArray, resampling: Resampling, nodata: float | None) -> xr.DataArray:
    """``data`` ``(band, y, x)`` on the model's grid, lazily, float32, NaN where there is no data,
    with the grid's coords (and transform, or pixel size).

    A whole factor (down or up) is one blockwise step on either of dask's engines; another factor
    uses xarray's ``coarsen`` and ``interp``, which dask's array-expr engine does not have.
    """
    if data.dims[-2:] != ("y", "x"):
        raise DimensionError(f"resolution= resamples (band, y, x) inputs, got dims {data.dims}")
    pixels = _dask_of(data)
    fill = np.nan if nodata is None else float(nodata)
    whole, up = resampling.whole(), resampling.up()
    if whole is not None or up is not None:
        step = whole or up
        assert step is not None
        blocks = rechunk(pixels, (*pixels.chunks[:-2], *_multiples(pixels.chunks[-2:], step)))
        kind = _block_mean if whole is not None else _block_repeat
        out_chunks = [
            tuple(-(-c // n) if whole is not None else c * n for c in axis)
            for axis, n in zip(blocks.chunks[-2:], step, strict=True)
        ]
        values = da.map_blocks(kind, blocks, step=step, fill=fill, dtype=np.float32,
                               chunks=(*blocks.chunks[:-2], *out_chunks))  # fmt: skip
        out = xr.DataArray(
            values, dims=data.dims, coords={"band": data["band"]} if "band" in data.coords else {}
        )
        return _on_grid(out, data, resampling, resampling.factor)
    if array_expr():
        raise OptionError(
            f"resolution= at a factor of {resampling.factor} (not a whole number) interpolates with "
            "xarray, which dask's array-expr engine cannot run: use a whole factor (a resolution "
            "that is a whole multiple or divisor of the input's pixel size), or the legacy engine"
        )
    values = data.astype(np.float64)
    if nodata is not None and not np.isnan(nodata):
        values = values.where(data != nodata)
    fy, fx = resampling.factor
    n_y, n_x = max(1, math.floor(fy)), max(1, math.floor(fx))
    if (n_y, n_x) != (1, 1):
        values = values.coarsen(y=n_y, x=n_x, boundary="pad").mean()
    values = values.drop_vars([c for c in ("y", "x") if c in values.coords])
    coarse = values.assign_coords(
        y=np.arange(values.sizes["y"]) * n_y, x=np.arange(values.sizes["x"]) * n_x
    )
    h, w = resampling.shape  # the rest of the factor, linearly, on the model pixels' centres
    rows = (np.arange(h) + 0.5) * fy - 0.5 * n_y
    cols = (np.arange(w) + 0.5) * fx - 0.5 * n_x
    coarse = coarse.interp(y=rows, x=cols, method="linear", kwargs={"fill_value": None})
    return _on_grid(coarse.astype(np.float32), data, resampling, resampling.factor)


def _dask_of(data: xr.DataArray) -> Any:
    """``data``'s pixels as a dask array: its own, or read lazily a window a chunk."""
    if data.chunks is None:
        data = data.chunk({"y": 2048, "x": 2048})
    return data.data


def _multiples(chunks: Any, step: tuple[int, int]) -> list[tuple[int, ...]]:
    """Chunks of each axis as whole multiples of its step (the last may be shorter)."""
    out = []
    for axis, n in zip(chunks, step, strict=True):
        size, side = sum(axis), max(n, round(axis[0] / n) * n)
        out.append((side,) * (size // side) + ((size % side,) if size % side else ()))
    return out


def _block_mean(block: np.ndarray, step: tuple[int, int], fill: float) -> np.ndarray:
    """Each ``step`` block of pixels averaged (nodata, ``fill``, and NaN left out; NaN if all are)."""
    values = block.astype(np.float64)
    if not np.isnan(fill):
        values[block == fill] = np.nan
    (n_y, n_x), (h, w) = step, block.shape[-2:]
    pad = [(0, 0)] * (block.ndim - 2) + [(0, -h % n_y), (0, -w % n_x)]
    values = np.pad(values, pad, constant_values=np.nan)
    values = values.reshape(
        *values.shape[:-2], values.shape[-2] // n_y, n_y, values.shape[-1] // n_x, n_x
    )
    count = np.sum(~np.isnan(values), axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(values, axis=(-3, -1)) / count
    out: np.ndarray = mean.astype(np.float32)
    return out


def _block_repeat(block: np.ndarray, step: tuple[int, int], fill: float) -> np.ndarray:
    """Each pixel repeated ``step`` times along y and x (nodata, ``fill``, as NaN)."""
    values = block.astype(np.float32)
    if not np.isnan(fill):
        values[block == fill] = np.nan
    out: np.ndarray = values.repeat(step[0], axis=-2).repeat(step[1], axis=-1)
    return out


def _on_grid(
    out: xr.DataArray, source: xr.DataArray, resampling: Resampling, factor: tuple[float, float]
) -> xr.DataArray:
    """``out`` (on the model's grid) with coords, CRS and transform (or pixel size) of that grid."""
    h, w = out.sizes["y"], out.sizes["x"]
    attrs = dict(source.attrs)
    for key in ("_FillValue", "nodata", "scale_factor", "add_offset"):
        attrs.pop(key, None)
    if "pixel_size" in source.attrs:
        py, px = (float(v) * f for v, f in zip(source.attrs["pixel_size"], factor, strict=True))
        out = out.assign_coords(y=py * np.arange(h), x=px * np.arange(w))
        attrs["pixel_size"] = [py, px]
        out.attrs = attrs
        return out
    from affine import Affine

    transform = source.rio.transform() * Affine.scale(factor[1], factor[0])
    out = out.assign_coords(
        y=transform.f + transform.e * (np.arange(h) + 0.5),
        x=transform.c + transform.a * (np.arange(w) + 0.5),
    )
    out.attrs = attrs
    return out.rio.write_crs(source.rio.crs).rio.write_transform(transform)


def to_input_grid(
    result: xr.DataArray, source: xr.DataArray, resampling: Resampling
) -> xr.DataArray:
    """``result`` on the model's grid, back on ``source``'s: each pixel the model pixel under its
    centre (nearest), lazily; the coords, CRS, transform and nodata of ``source``.
    """
    h, w = source.sizes["y"], source.sizes["x"]
    whole, up = resampling.whole(), resampling.up()
    data = result.data
    if whole is not None:  # each model pixel stands for a block: repeated, then cut to size
        chunks = [
            tuple(c * n for c in axis) for axis, n in zip(data.chunks[-2:], whole, strict=True)
        ]
        repeated = da.map_blocks(_repeat, data, step=whole, dtype=data.dtype,
                                 chunks=(*data.chunks[:-2], *chunks))  # fmt: skip
        values = repeated[..., :h, :w]
    elif up is not None:  # the model pixel under each input pixel's centre
        values = data[..., up[0] // 2 :: up[0], up[1] // 2 :: up[1]][..., :h, :w]
    else:
        fy, fx = resampling.factor
        rows = np.minimum(np.floor((np.arange(h) + 0.5) / fy).astype(int), result.sizes["y"] - 1)
        cols = np.minimum(np.floor((np.arange(w) + 0.5) / fx).astype(int), result.sizes["x"] - 1)
        values = result.isel(y=rows, x=cols).data
    back = xr.DataArray(values, name=result.name, dims=result.dims, attrs=dict(result.attrs),
                        coords={k: v for k, v in result.coords.items() if not set(v.dims) & {"y", "x"}})  # fmt: skip
    back = back.drop_vars([c for c in ("spatial_ref",) if c in back.coords])
    back = back.assign_coords({name: source[name] for name in ("y", "x") if name in source.coords})
    if "pixel_size" in source.attrs:
        back.attrs["pixel_size"] = list(source.attrs["pixel_size"])
        return back
    nodata = result.rio.nodata
    back = back.rio.write_crs(source.rio.crs).rio.write_transform(source.rio.transform())
    return back.rio.write_nodata(nodata, encoded=False) if nodata is not None else back


def _repeat(block: np.ndarray, step: tuple[int, int]) -> np.ndarray:
    out: np.ndarray = block.repeat(step[0], axis=-2).repeat(step[1], axis=-1)
    return out


def region_on_grid(region: Any, resampling: Resampling) -> Any:
    """A region in the input's pixels (an input without a CRS) in the model grid's pixels; masks,
    ``"tissue"`` and callables are taken as they are (a mask covers the extent at any resolution).
    """
    from shapely import affinity
    from shapely.geometry import shape
    from shapely.geometry.base import BaseGeometry

    if isinstance(region, dict) or hasattr(region, "__geo_interface__"):
        region = region if isinstance(region, BaseGeometry) else shape(region)
        fy, fx = resampling.factor
        return affinity.scale(region, xfact=1 / fx, yfact=1 / fy, origin=(0, 0))
    return region


def at_resolution(
    segment: Callable[..., Any], data: Any, model: Any, options: dict[str, Any]
) -> xr.DataArray:
    """``segment(data, model, **options)`` at the model's resolution: the view resampled to it,
    segmented by ``segment``, mapped back (or kept) with the job record saying so.
    """
    from .inputs import nodata_for, normalize_for

    resolution, where = options.pop("resolution"), options.pop("output_resolution")
    if where not in OUTPUT_RESOLUTIONS:
        raise OptionError(
            f"output_resolution must be one of {OUTPUT_RESOLUTIONS}, got {where!r}: 'input' "
            "maps the result back to the input's grid, 'model' keeps the model's"
        )
    pixel_size(data)  # refuses what has none (numpy, dask, tensors) before anything else
    source = bands_first_dataarray(data)
    resampling = Resampling.of(source, resolution)
    view = to_model_grid(source, resampling, nodata_for(source, options["nodata"]))
    if options["normalize"] == "imagenet":  # in the source's units (the view is float)
        options["normalize"] = normalize_for(source, "imagenet")
    if options["region"] is not None and source.rio.crs is None:
        options["region"] = region_on_grid(options["region"], resampling)
    options["nodata"] = "auto"  # the view's nodata is NaN
    result = segment(view, model, **options)
    out = result if where == "model" else to_input_grid(result, source, resampling)
    job = json.loads(out.attrs[record.ATTR])  # names the file read, not the resampled view
    job["input"] = record.input_identity(source)
    pair = list(as_resolution(resolution))
    job["options"].update(resolution=pair, output_resolution=where)
    out.attrs.update({record.ATTR: record.dumps(job), "seamless_resolution": pair})
    return out
