"""``to_ome_zarr``: a result as an OME-Zarr multiscale image (labels with ``image-label`` colours
and names).

Level 0 is written region by region from the result's chunks, as :func:`~seamless_dask.to_zarr`
does; level ``k`` chunk by chunk from the chunks of level ``k - 1`` that it halves in y and x
(``_pyramid``: a volume's z is kept), so no pixel is computed twice and no level is ever whole in
memory. Every chunk of every level has a done-marker,
so a resumed write computes only what is missing, after the same checks as ``to_zarr`` (same layout,
same job). With ``label_name``, the pyramid goes into the ``labels/`` group of the input slide's
OME-Zarr, beside its image, which is never touched.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import xarray as xr
from dask.delayed import Delayed

from ..cluster import progress as bars
from ..cluster.progress import Progress
from ..exceptions import OptionError, RasterError
from ._ngff import NGFF_VERSIONS, group_attrs, label_properties, ngff_attrs
from ._pyramid import DONE_GROUP, Pyramid, level_writes, open_group
from ._target import Target, as_target, check_not_an_input, claim
from ._zarr import LAYOUT, as_result, check_same_job, inputs_of, our_store, spatial_axes

Resampling = Literal["auto", "nearest", "mean"]


def to_ome_zarr(
    result: xr.DataArray,
    store: str | os.PathLike,
    *,
    label_name: str | None = None,
    levels: int | None = None,
    resampling: Resampling = "auto",
    resume: bool = False,
    overwrite: bool = False,
    compute: bool = True,
    progress: Progress = False,
    storage_options: dict | None = None,
    zarr_format: int = 2,
    properties: Any = None,
) -> int | Delayed:
    """Write a result as an OME-Zarr multiscale image (NGFF 0.4 or 0.5: what ome-zarr-py, napari's
    reader, reads; validated by ome-zarr-models in the tests).

    Parameters
    ----------
    result
        A ``(y, x)`` labels or ``(class, y, x)`` DataArray, as :func:`~seamless_dask.segment`
        returns it, or a volume's ``(z, y, x)`` / ``(class, z, y, x)`` (every level keeps the z
        slices, halving y and x); its physical ``z``/``y``/``x`` coords (a slide's, from
        :func:`~seamless_dask.open_raster`) become the levels' ``scale`` and ``translation``, and
        its class names and colours (``segment(class_names=...)``) the ``image-label`` metadata.
    store
        The OME-Zarr to write (``labels.ome.zarr``), a local path or an fsspec URL; with
        ``label_name``, the input slide's OME-Zarr, whose ``labels/<label_name>`` group is written.
    label_name
        Write the labels into ``<store>/labels/<label_name>`` (the NGFF labels of the image at
        ``store``, which must have the result's shape) and add the name to ``labels/``'s list; the
        image itself is not touched.
    levels
        Levels of the pyramid, each half the previous one's size in y and x; default: until a
        level is at most 512 px long.
    resampling
        ``"nearest"`` (a label is never a blend of two) or ``"mean"`` (NaN-aware); ``"auto"``:
        nearest for integer labels, mean for probabilities. A mean level's origin moves to the
        centre of the pixels it averages, as NGFF's ``translation`` says.
    resume, overwrite, compute, progress, storage_options
        As for :func:`~seamless_dask.to_zarr` (a store is replaced or resumed only if seamless_dask
        wrote it).
    zarr_format
        2 (default): OME-NGFF 0.4, what most viewers read today; 3: OME-NGFF 0.5. With
        ``label_name``, the image's own format.
    properties
        A table of the labels (pandas or dask DataFrame indexed by label value, as
        :func:`~seamless_dask.object_table` of an instance map gives it): written as NGFF's
        ``image-label`` ``properties``, one entry a label, that napari and ome-zarr-py show beside
        each object (a lazy table is computed here, before any chunk is written).

    Returns
    -------
    int or dask.delayed.Delayed
        The number of chunks written, all levels together; or, with ``compute=False``, a Delayed.

    Raises
    ------
    OptionError
        ``resume`` and ``overwrite`` together, an unknown ``zarr_format``, ``resampling`` or
        ``levels``.
    RasterError
        As for ``to_zarr``; with ``label_name``: ``store`` is not an OME-Zarr image, or its shape is
        not the result's.
    """
    if resume and overwrite:
        raise OptionError(
            "resume=True continues the store and overwrite=True replaces it: pass one of them"
        )
    if resampling not in ("auto", "nearest", "mean"):
        raise OptionError(
            f"resampling must be 'auto', 'nearest' or 'mean', got resampling={resampling!r}"
        )
    if levels is not None and (not isinstance(levels, int) or levels < 1):
        raise OptionError(f"levels must be a positive int (1: no pyramid), got levels={levels!r}")
    root = as_target(store, storage_options)
    result = as_result(result)
    if label_name is not None:
        target, zarr_format = _label_target(root, label_name, result)
    else:
        target = root
        if zarr_format not in NGFF_VERSIONS:
            raise OptionError(
                f"zarr_format must be 2 (NGFF 0.4) or 3 (NGFF 0.5), got zarr_format={zarr_format!r}"
            )
        check_not_an_input(target, inputs_of(result), "output")
    plan = Pyramid.of(result, levels, resampling, zarr_format, label_name is not None)
    plan.properties = label_properties(properties)
    if not compute:
        return _prepare(plan, root, target, resume, overwrite)
    with claim(target):
        written = bars.compute(_prepare(plan, root, target, resume, overwrite), progress=progress)
        mark_ome_zarr_complete(target.url, storage_options=target.storage_options)
    return written


def mark_ome_zarr_complete(path: str | os.PathLike, *, storage_options: dict | None = None) -> None:
    """Record in an OME-Zarr that :func:`to_ome_zarr` wrote every chunk of every level."""
    target = as_target(path, storage_options)
    group = open_group(target)
    levels = int(group.attrs[LAYOUT]["levels"])
    missing = sum(
        int((np.asarray(group[f"{DONE_GROUP}/{k}"][...]) == 0).sum()) for k in range(levels)
    )
    if missing:
        raise RasterError(f"{target.url!r} still misses {missing} chunks: resume it")
    group.attrs["seamless_complete"] = True


def labels_target(root: Target, name: str) -> Target:
    """The ``labels/<name>`` group of the OME-Zarr image at ``root``, after checking the image is
    one; its ``labels/`` group is made (empty) when it has none, so that a claim can be taken beside
    ``<name>``.
    """
    return _labels_of(root, name)[0]


def _labels_of(root: Target, name: str) -> tuple[Target, tuple[str, dict]]:
    """:func:`labels_target`, with the image's ``(version, ngff)`` metadata."""
    if not name or "/" in name or name.startswith(("_", ".")):
        raise OptionError(
            f"label_name must be a plain name such as 'tissue', got label_name={name!r}"
        )
    attrs = group_attrs(root.url, root.storage_options)
    ngff = None if attrs is None else ngff_attrs(attrs)
    if ngff is None:
        raise RasterError(
            f"{root.url!r} is not an OME-Zarr image, so it has no labels/ group to write into"
        )
    labels = Target(root.url.rstrip("/") + "/labels", root.storage_options)
    if not labels.exists():
        _list_label(root, None, ngff[0])
    return Target(labels.url + "/" + name, root.storage_options), ngff


def _label_target(root: Target, name: str, result: xr.DataArray) -> tuple[Target, int]:
    """:func:`labels_target`, checked against the result: the image's shape; the input may be the
    image.
    """
    import zarr

    target, ngff = _labels_of(root, name)
    image = zarr.open_group(root.url, mode="r", storage_options=root.storage_options or None)
    full: Any = image[ngff[1]["multiscales"][0]["datasets"][0]["path"]]
    spatial = spatial_axes(result)
    if tuple(full.shape[-spatial:]) != tuple(result.shape[-spatial:]):
        dims = ", ".join(("z", "y", "x")[-spatial:])
        raise RasterError(
            f"labels of shape {tuple(result.shape[-spatial:])} cannot go into {root.url!r}, whose "
            f"image is {tuple(full.shape[-spatial:])} ({dims}): segment level 0 of that image"
        )
    # The image may be the input: only its labels/<name> group is written, never anything else in
    # it; any other input (a level's folder, another label group) is checked as for every writer.
    inputs = {k: v for k, v in inputs_of(result).items() if as_target(v).real != root.real}
    check_not_an_input(target, inputs, "output")
    return target, image.metadata.zarr_format


def _prepare(plan: Pyramid, root: Target, target: Target, resume: bool, overwrite: bool) -> Delayed:
    exists = target.exists()
    if exists and not (resume or overwrite):
        raise RasterError(
            f"{target.url!r} exists: pass resume=True to finish it, or overwrite=True to replace it"
        )
    found = our_store(target) if exists else {}
    if resume and exists:
        check_same_job(target, plan.result, found, plan.layout())
        group = open_group(target, "r")
        done = [
            np.asarray(group[f"{DONE_GROUP}/{k}"][...]).astype(bool)
            for k in range(len(plan.shapes))
        ]
    else:
        target.check_parent()
        _write_template(plan, target)
        if plan.source_image:
            _list_label(root, target.url.rstrip("/").rsplit("/", 1)[-1], plan.version)
        done = [np.zeros(plan.grid(k), dtype=bool) for k in range(len(plan.shapes))]
    return level_writes(plan, target, done)


def _write_template(plan: Pyramid, target: Target) -> None:
    import zarr

    zarr_format: Literal[2, 3] = 2 if plan.version == "0.4" else 3
    options = target.storage_options or None
    group = zarr.open_group(target.url, mode="w", zarr_format=zarr_format, storage_options=options)
    nodata = plan.result.rio.nodata
    fill = (
        nodata
        if nodata is not None and np.isfinite(nodata)
        else (np.nan if plan.result.dtype.kind == "f" else 0)
    )
    for level, shape in enumerate(plan.shapes):
        names = plan.dims() if zarr_format == 3 else None
        group.create_array(
            str(level),
            shape=(*plan.lead, *shape),
            chunks=(*plan.lead, *plan.chunk),
            dtype=plan.result.dtype,
            fill_value=fill,
            dimension_names=names,
        )
        group.create_array(
            f"{DONE_GROUP}/{level}",
            shape=plan.grid(level),
            chunks=(1,) * plan.spatial,
            dtype="uint8",
            fill_value=0,
        )
    group.attrs.update(plan.attrs())


def _list_label(root: Target, name: str | None, version: str) -> None:
    """Add ``name`` to the image's ``labels/`` list (NGFF), keeping the names already there (``None``:
    none).
    """
    labels = open_group(Target(root.url.rstrip("/") + "/labels", root.storage_options), "a")
    attrs = dict(labels.attrs)
    holder = attrs.setdefault("ome", {"version": version}) if version != "0.4" else attrs
    names = holder.setdefault("labels", [])
    if name is not None and name not in names:
        names.append(name)
    labels.attrs.update(attrs)
