"""A DataArray input's result: its coords, CRS, transform, nodata, classes and the job record.

``segment`` builds the graph; this module dresses the array it returns as the input was dressed, and
records the job (:mod:`seamless_dask.graph.record`) that makes a resumed write provably the same
job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import xarray as xr
from dask.base import tokenize

from .blend import decide
from .classes import Classes, check_class_count
from .graph import record
from .graph.build import SegmentJob, build_graph
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
            "weights": weights.kind if weights.array is None else "array:" + tokenize(weights),
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
