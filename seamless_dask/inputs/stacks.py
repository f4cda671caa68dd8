"""Images stacked along more dims than ``(band, y, x)``: a STAC cube's ``time``, a ``sample`` dim,
a batch ``(N, bands, H, W)``, mapped over one image a step and stacked again; and a channel axis
given anywhere (``channel_axis=-1`` for HWC numpy), moved first.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..exceptions import DimensionError

TIME_DIMS = ("time",)  # the leading dim of a STAC cube, which odc-stac puts before the bands
VOLUME_DIMS = ("z",)  # a spatial dim: mapping over it would segment a volume slice by slice


def time_steps(data: xr.DataArray) -> str | None:
    """The leading dim ``segment`` maps over, or ``None``: ``time`` of a ``(time, band, y, x)``
    stack, ``sample`` of ``(sample, band, y, x)``, the first of several (``(sample, time, band, y,
    x)``: each step is mapped over again). A ``z`` dim is a volume's, and is refused with the fix.
    """
    dims = tuple(map(str, data.dims))
    if data.ndim < 4 or dims[-2:] != ("y", "x"):
        return None
    volume = [d for d in dims[:-2] if d in VOLUME_DIMS]
    if volume:
        raise DimensionError(
            f"dims {dims} hold a volume ({volume[0]!r} is spatial): segment takes 2-D images, and "
            f"would segment it slice by slice, which a 3-D model must not be given: give "
            f"tile_size=(d, h, w) to segment it as a volume (dims band, z, y, x). For slice by "
            f"slice on purpose, rename the dim: data.rename({volume[0]}='slice')"
        )
    if "band" in dims[:-3]:
        order = ", ".join(repr(d) for d in [*(d for d in dims[:-2] if d != "band"), "band"])
        raise DimensionError(
            f"dims {dims} put 'band' before {dims[-3]!r}: the bands are the dim just before y and "
            f"x, the dims before them are mapped over: use data.transpose({order}, 'y', 'x')"
        )
    return dims[0]


def time_slices(data: xr.DataArray, dim: str) -> list[xr.DataArray]:
    """One image per step of ``dim``."""
    return [data.isel({dim: i}) for i in range(data.sizes[dim])]


def stacked_steps(per_step: list[xr.DataArray], steps: xr.DataArray) -> xr.DataArray:
    """The per-step results as one lazy array along ``steps``' dim (dask stacks the data: xarray's
    concat reaches numpy's ``result_type`` through ``__array_function__``, which array-expr lacks);
    attrs as "drop_conflicts".
    """
    dim = steps.dims[0]
    first = per_step[0].drop_vars([dim], errors="ignore")
    attrs = {
        k: v
        for k, v in first.attrs.items()
        if all(_same(step.attrs.get(k), v) for step in per_step)
    }
    coords = {**first.coords, dim: steps.values}
    data = da.stack([step.data for step in per_step])
    return xr.DataArray(data, dims=(dim, *first.dims), coords=coords, attrs=attrs, name=first.name)


def _same(a: Any, b: Any) -> bool:
    """Attribute values equal (xarray's ``combine_attrs="drop_conflicts"`` rule), arrays included."""
    try:
        return (
            bool(np.array_equal(a, b))
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray)
            else bool(a == b)
        )
    except (TypeError, ValueError):
        return False


def with_channels_first(data: Any, channel_axis: int | str | None) -> Any:
    """``data`` with its channel axis where ``segment`` reads it: just before the spatial axes.

    ``channel_axis`` is an index for numpy, dask and tensors (``-1``: channels last, HWC or
    NHWC), a dim name or index for a DataArray (that dim becomes ``band``). ``None``: as given
    (bands first; a DataArray's dims are found by name).
    """
    if channel_axis is None:
        return data
    if isinstance(data, xr.DataArray):
        dims = tuple(map(str, data.dims))
        name = channel_axis if isinstance(channel_axis, str) else _dim_at(dims, channel_axis)
        if name not in dims:
            raise DimensionError(
                f"channel_axis={channel_axis!r} names no dim of the DataArray, whose dims are "
                f"{dims}: give one of them, e.g. channel_axis={dims[-1]!r}"
            )
        if name != "band" and "band" in dims:
            raise DimensionError(
                f"channel_axis={name!r}, but the DataArray already has a 'band' dim: drop "
                "channel_axis (its bands are 'band'), or rename one of them"
            )
        data = data.rename({name: "band"}) if name != "band" else data
        others = [d for d in map(str, data.dims) if d not in ("band", "y", "x")]
        return data.transpose(*others, "band", "y", "x")
    ndim = data.ndim
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, int):
        raise DimensionError(
            f"channel_axis must be an axis index for an array, got {channel_axis!r}: e.g. "
            "channel_axis=-1 for channels last"
        )
    if ndim < 3 or not -ndim <= channel_axis < ndim:
        raise DimensionError(
            f"channel_axis={channel_axis} is not an axis of an array of shape "
            f"{tuple(data.shape)}: use an index in [{-ndim}, {ndim - 1}] of a 3-D (H, W, C) or 4-D "
            "(N, H, W, C) array"
        )
    if hasattr(data, "movedim"):  # a torch tensor
        return data.movedim(channel_axis, -3)
    # transpose, not moveaxis: dask's array-expr engine has no moveaxis
    order = [axis for axis in range(ndim) if axis != channel_axis % ndim]
    order.insert(ndim - 3, channel_axis % ndim)
    return data.transpose(order) if isinstance(data, da.Array) else np.transpose(data, order)


def _dim_at(dims: tuple[str, ...], index: int) -> str:
    if isinstance(index, bool) or not isinstance(index, int) or not -len(dims) <= index < len(dims):
        raise DimensionError(
            f"channel_axis={index!r} is not a dim of the DataArray, whose dims are {dims}: give a "
            "dim name, e.g. channel_axis='wavelength'"
        )
    return dims[index]
