"""OME-Zarr (OME-NGFF 0.4 and 0.5) images: read one multiscale level lazily; the metadata a writer
puts.

An OME-Zarr image is a zarr group whose attributes hold ``multiscales`` (0.4: at the top level; 0.5:
under ``ome``): the axes (``t``, ``c``, ``z``, ``y``, ``x``, with their types and units) and, per
level, the array's path and its coordinate transformations (``scale`` and ``translation``: physical
= index * scale + translation). Reading maps the channel axis to ``band``, ``t`` to ``time``
(``segment`` maps over it), drops ``z``/``t`` when they hold one plane, and turns the scale into
physical ``y``/``x`` coordinates.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import OptionError, RasterError

NGFF_VERSIONS = {2: "0.4", 3: "0.5"}  # the NGFF version that goes with each zarr format
# NGFF's
UNITS = (
    "angstrom",
    "nanometer",
    "micrometer",
    "millimeter",
    "centimeter",
    "meter",
    "kilometer",
)
_DIM_OF_AXIS = {"t": "time", "c": "band", "z": "z", "y": "y", "x": "x"}


def ngff_attrs(attrs: dict) -> tuple[str, dict] | None:
    """``(version, ngff)`` of a group's attributes: 0.5 keeps them under ``ome``; ``None`` if not
    OME-Zarr.
    """
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version", "0.5")), ome
    if "multiscales" in attrs:
        return str(attrs["multiscales"][0].get("version", "0.4")), attrs
    return None


def group_attrs(where: str, storage_options: dict | None = None) -> dict | None:
    """The attributes of the zarr group at ``where``, or ``None`` when there is no group there."""
    import zarr

    try:
        return dict(zarr.open_group(where, mode="r", storage_options=storage_options or None).attrs)
    except (FileNotFoundError, KeyError, ValueError, TypeError, zarr.errors.GroupNotFoundError):
        return None


def open_ome_zarr(where: str, attrs: dict, level: int, sides: tuple[int, int]) -> xr.DataArray:
    """Level ``level`` of the OME-Zarr image at ``where`` (its group ``attrs``) as a lazy DataArray,
    read in dask chunks of about ``sides`` (y, x) pixels rounded to the store's own chunks.
    """
    import dask.array as da
    import zarr

    ngff = ngff_attrs(attrs)
    if ngff is None:
        raise RasterError(f"{where!r} is a zarr group without OME-NGFF multiscales")
    version, meta = ngff
    multiscale = meta["multiscales"][0]
    datasets = multiscale["datasets"]
    if not 0 <= level < len(datasets):
        raise RasterError(
            f"{where!r} has {len(datasets)} multiscale levels (0 to {len(datasets) - 1}), got "
            f"level={level}: "
            "0 is the full resolution"
        )
    try:
        array = zarr.open_array(where, path=datasets[level]["path"], mode="r")
    except (FileNotFoundError, KeyError, ValueError) as error:  # zarr's ArrayNotFoundError too
        raise RasterError(
            f"{where!r} lists multiscale level {level} at {datasets[level]['path']!r}, and there "
            f"is no readable array there ({type(error).__name__}): the OME-Zarr is incomplete; "
            "write it again, or open another level"
        ) from None
    names = _axis_names(multiscale, array.ndim, where)
    dims = [_DIM_OF_AXIS.get(name, name) for name in names]
    if not {"y", "x"} <= set(dims):
        raise RasterError(f"{where!r} has axes {names}: an image needs a 'y' and an 'x' axis")
    want = {"y": sides[0], "x": sides[1]}
    read = tuple(
        -1 if dim == "band" else (c * max(1, want[dim] // c) if dim in want else 1)
        for dim, c in zip(dims, array.chunks, strict=True)
    )
    # from_array, not from_zarr: dask 2026.8's array-expr has no from_zarr; a zarr array pickles by
    # its store
    lazy = da.from_array(
        array,
        chunks=read,
        inline_array=True,
        lock=False,
        meta=np.empty((0,) * array.ndim, array.dtype),
    )
    data = xr.DataArray(lazy, dims=dims)
    scale, translation = _transform(multiscale, datasets[level], len(names))
    units = {
        _DIM_OF_AXIS.get(n, n): a.get("unit")
        for n, a in zip(names, _axes(multiscale), strict=False)
    }
    for dim in (d for d in ("z", "y", "x") if d in dims):  # physical coords (a z-stack's too)
        axis = dims.index(dim)
        coord = translation[axis] + scale[axis] * np.arange(array.shape[axis])
        data = data.assign_coords({dim: (dim, coord, {"units": units.get(dim) or "pixel"})})
    if "band" in dims:
        data = data.assign_coords(band=np.arange(1, data.sizes["band"] + 1))
        labels = _channel_labels(meta, data.sizes["band"])
        if labels:
            data.attrs["channel_labels"] = labels
    else:
        data = data.expand_dims(band=[1])
    data = data.squeeze(
        [d for d in ("time", "z") if d in data.dims and data.sizes[d] == 1], drop=True
    )
    ordered = [d for d in ("time", "z") if d in data.dims] + ["band", "y", "x"]
    data = data.transpose(*ordered, *[d for d in data.dims if d not in ordered])
    y, x = dims.index("y"), dims.index("x")
    data.attrs.update(
        pixel_size=[float(scale[y]), float(scale[x])],
        pixel_unit=units.get("x") or "pixel",
        ngff_version=version,
        ngff_level=level,
        ngff_levels=len(datasets),
    )
    data.attrs.update(_class_attrs(attrs, meta))
    data.name = multiscale.get("name") or where.rstrip("/").rsplit("/", 1)[-1]
    return data


def _class_attrs(attrs: dict, meta: dict) -> dict:
    """A label image's classes: seamless_dask's attributes, else NGFF's ``image-label`` names and
    colours.
    """
    from ..classes import COLORS_ATTR, NAMES_ATTR, as_classes

    mine = {
        k: v
        for k, v in attrs.items()
        if k in (NAMES_ATTR, COLORS_ATTR, "flag_values", "flag_meanings")
    }
    label = meta.get("image-label") or {}
    if mine or not label.get("colors"):
        return mine
    values = sorted(int(c["label-value"]) for c in label["colors"] if c.get("label-value", -1) >= 0)
    count = values[-1] + 1 if values and values[-1] < 255 else len(values)
    colors = {int(c["label-value"]): c.get("rgba", [0, 0, 0, 255]) for c in label["colors"]}
    names = {
        int(p["label-value"]): str(p.get("class", ""))
        for p in label.get("properties", [])
        if "class" in p
    }
    palette = [colors.get(i, [0, 0, 0, 255]) for i in range(count)]
    named = [names.get(i, f"class {i}") for i in range(count)] if names else None
    classes = as_classes(named, palette)
    return classes.attrs() if classes is not None else {}


def _axes(multiscale: dict) -> list[dict]:
    return [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes", [])]


def _axis_names(multiscale: dict, ndim: int, where: str) -> list[str]:
    names = [str(a["name"]).lower() for a in _axes(multiscale)] or ["t", "c", "z", "y", "x"][-ndim:]
    if len(names) != ndim:
        raise RasterError(
            f"{where!r} names {len(names)} axes {names} for arrays of {ndim} dims: the metadata "
            f"is wrong"
        )
    return names


def _transform(multiscale: dict, dataset: dict, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translation of one level, the multiscale-wide transformations applied after it (NGFF
    0.4 §).
    """
    scale, translation = np.ones(ndim), np.zeros(ndim)
    for transforms in (
        dataset.get("coordinateTransformations", []),
        multiscale.get("coordinateTransformations", []),
    ):
        for t in transforms:
            if t.get("type") == "scale" and "scale" in t:
                scale, translation = (
                    scale * np.asarray(t["scale"], float),
                    translation * np.asarray(t["scale"], float),
                )
            elif t.get("type") == "translation" and "translation" in t:
                translation = translation + np.asarray(t["translation"], float)
    return scale, translation


def _channel_labels(meta: dict, count: int) -> list[str]:
    channels = (meta.get("omero") or {}).get("channels") or []
    labels = [str(c.get("label", "")) for c in channels if isinstance(c, dict)]
    return labels if len(labels) == count and any(labels) else []


def multiscales(
    *,
    name: str,
    dims: Sequence[str],
    pixel_size: Sequence[float],
    origin: Sequence[float],
    unit: str | None,
    levels: int,
    centre_shift: bool,
    version: str,
) -> dict:
    """The ``multiscales`` entry of an image of ``dims`` (its spatial axes last: ``y``, ``x``, a
    volume's ``z`` before them) with ``levels`` levels halving y/x; ``z`` keeps its size at every level
    (a stack's slices are often far apart already).

    ``pixel_size`` and ``origin`` give each spatial axis's physical size and the position of pixel
    (0, 0) of level 0; a level made by averaging 2**k pixels has its first pixel's centre
    ``(2**k - 1) / 2`` level-0 pixels further on (``centre_shift``); one made by taking every 2**k-th
    pixel keeps level 0's origin.
    """
    axes = []
    for dim in dims:
        if dim in ("z", "y", "x"):
            axes.append({"name": dim, "type": "space", **({"unit": unit} if unit else {})})
        else:
            axes.append({"name": "c", "type": "channel"})
    spatial = len(pixel_size)
    datasets = []
    for level in range(levels):
        # the factor of each spatial axis: z (a volume's first) is never halved
        factors = [1] * (spatial - 2) + [2**level] * 2
        scale = [1.0] * (len(dims) - spatial) + [
            float(s) * f for s, f in zip(pixel_size, factors, strict=True)
        ]
        shift = [
            (f - 1) / 2 * float(s) if centre_shift else 0.0
            for s, f in zip(pixel_size, factors, strict=True)
        ]
        translation = [0.0] * (len(dims) - spatial) + [
            float(o) + d for o, d in zip(origin, shift, strict=True)
        ]
        transforms: list[dict] = [{"type": "scale", "scale": scale}]
        if any(translation):
            transforms.append({"type": "translation", "translation": translation})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    entry: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


def physical(
    result: xr.DataArray, dims: Sequence[str] = ("y", "x")
) -> tuple[list[float], list[float], str | None]:
    """Pixel size, origin and unit of the result's ``dims`` coords (``y``/``x``; a volume's ``z``
    too): 1 pixel and 0 for a dim without coords (a plane's ``pixel_size`` attribute where it has
    one).
    """
    size, origin = [], []
    for dim in dims:
        coord = result.coords.get(dim)
        values = None if coord is None else np.asarray(coord.values, dtype=float)
        if values is None or len(values) < 2 or values[1] <= values[0]:
            known = dict(zip(("y", "x"), result.attrs.get("pixel_size", [1.0, 1.0]), strict=False))
            size.append(float(known.get(dim, 1.0)))
            origin.append(0.0)
        else:
            size.append(float(values[1] - values[0]))
            origin.append(float(values[0]))
    unit = str(result.coords["x"].attrs.get("units")) if "x" in result.coords else ""
    unit = {
        "µm": "micrometer",
        "um": "micrometer",
        "nm": "nanometer",
        "mm": "millimeter",
        "m": "meter",
    }.get(unit, unit)
    return size, origin, unit if unit in UNITS else None


def image_label(
    classes: Any,
    nodata: float | None,
    version: str,
    in_image: bool,
    properties: list[dict] | None = None,
) -> dict:
    """NGFF's ``image-label``: a colour and a name per class, nodata transparent; ``source`` inside an
    image; ``properties`` (one entry a label, :func:`label_properties`) in place of the classes'.
    """
    label: dict[str, Any] = {"version": version} if version == "0.4" else {}
    if classes is not None:
        colors = [
            {"label-value": int(i), "rgba": [int(v) for v in c]}
            for i, c in enumerate(classes.colors)
        ]
        properties = [{"label-value": i, "class": name} for i, name in enumerate(classes.names)]
        if nodata is not None and np.isfinite(nodata):
            colors.append({"label-value": int(nodata), "rgba": [0, 0, 0, 0]})
            properties += [{"label-value": int(nodata), "class": "nodata"}] if properties else []
        label["colors"] = colors
        if properties:
            label["properties"] = properties
    if properties is not None:
        label["properties"] = properties
    if in_image:
        label["source"] = {"image": "../../"}
    return label


def label_properties(table: Any) -> list[dict] | None:
    """A table indexed by label value as NGFF ``properties``: ``{"label-value": v, column: value}``
    a row, JSON's types (a lazy table computed).
    """
    if table is None:
        return None
    frame = table.compute() if hasattr(table, "compute") else table
    if not hasattr(frame, "to_dict") or not np.issubdtype(
        np.asarray(frame.index).dtype, np.integer
    ):
        raise OptionError(
            f"properties= takes a DataFrame indexed by label value (object_table's), got "
            f"{type(table).__name__}: pass sd.object_table(labels) or a table indexed by the ids"
        )
    out = []
    for value, row in zip(frame.index, frame.to_dict("records"), strict=True):
        entry: dict[str, Any] = {"label-value": int(value)}
        for key, found in row.items():
            item = found.item() if isinstance(found, np.generic) else found
            entry[str(key)] = None if isinstance(item, float) and not np.isfinite(item) else item
        out.append(entry)
    return out


def mean2(block: np.ndarray) -> np.ndarray:
    """The NaN-aware mean of each 2 x 2 window (a partial one at an odd edge), in the block's dtype."""
    h, w = block.shape[-2:]
    padded = np.full((*block.shape[:-2], h + h % 2, w + w % 2), np.nan, dtype=np.float64)
    padded[..., :h, :w] = block
    windows = padded.reshape(*block.shape[:-2], padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
    with warnings.catch_warnings():
        # a window of nodata only: NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(windows, axis=(-3, -1)).astype(block.dtype)
