"""``to_ome_zarr``: a result as an OME-Zarr multiscale image (labels with ``image-label`` colours
and names).

Level 0 is written region by region from the result's chunks, as :func:`~seamless_dask.to_zarr`
does; level ``k`` chunk by chunk from the four chunks of level ``k - 1`` that it halves, read back
from the store once they are written (a task depends on the tasks that wrote them), so no pixel is
computed twice and no level is ever whole in memory. Every chunk of every level has a done-marker,
so a resumed write computes only what is missing, after the same checks as ``to_zarr`` (same layout,
same job). With ``label_name``, the pyramid goes into the ``labels/`` group of the input slide's
OME-Zarr, beside its image, which is never touched.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from ..classes import classes_of
from ..cluster import progress as bars
from ..cluster.progress import Progress
from ..exceptions import DimensionError, OptionError, RasterError
from ..graph import record
from ..graph.build import resumed_array
from ..graph.layers import block_keys, graph_with
from ._ngff import (
    NGFF_VERSIONS,
    group_attrs,
    image_label,
    label_properties,
    mean2,
    multiscales,
    ngff_attrs,
    physical,
)
from ._target import Target, as_target, check_not_an_input, check_plane, claim
from ._zarr import LAYOUT, as_result, check_same_job, inputs_of, job_of, our_store, regular_chunks

Resampling = Literal["auto", "nearest", "mean"]
# the default pyramid halves until a level is at most this long: a viewer's overview
TOP_LEVEL_SIDE = 512
DONE_GROUP = "_seamless/done"  # one uint8 array per level, one value per chunk, 1 once written


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
        returns it; its physical ``y``/``x`` coords (a slide's, from
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
        Levels of the pyramid, each half the previous one's size; default: until a level is at most
        512 px long.
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
    check_plane(result, "to_ome_zarr")
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
    plan = _Pyramid.of(result, levels, resampling, zarr_format, label_name is not None)
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
    group = _open(target)
    levels = int(group.attrs[LAYOUT]["levels"])
    missing = sum(
        int((np.asarray(group[f"{DONE_GROUP}/{k}"][...]) == 0).sum()) for k in range(levels)
    )
    if missing:
        raise RasterError(f"{target.url!r} still misses {missing} chunks: resume it")
    group.attrs["seamless_complete"] = True


class _Pyramid:
    """What to write: the result regularly chunked, the levels' shapes, the resampling and the
    metadata.
    """

    def __init__(
        self,
        result: xr.DataArray,
        shapes: list[tuple[int, int]],
        method: str,
        version: str,
        in_image: bool,
    ) -> None:
        self.result, self.shapes, self.method, self.version = result, shapes, method, version
        self.chunk = (result.data.chunks[-2][0], result.data.chunks[-1][0])
        self.lead = tuple(result.shape[:-2])
        self.source_image = in_image  # written into an image's labels/ group
        self.properties: list[dict] | None = None  # NGFF image-label properties, one a label

    @classmethod
    def of(
        cls,
        result: xr.DataArray,
        levels: int | None,
        resampling: str,
        zarr_format: int,
        label: bool,
    ) -> _Pyramid:
        chunks = regular_chunks(result.data.chunks)
        if chunks != result.data.chunks:
            result = result.chunk(dict(zip(result.dims, chunks, strict=True)))
        if label and (result.ndim != 2 or not np.issubdtype(result.dtype, np.integer)):
            raise DimensionError(
                f"NGFF labels are (y, x) integer classes; got dims {result.dims}, {result.dtype}"
            )
        method = (
            resampling
            if resampling != "auto"
            else ("nearest" if result.dtype.kind in "iub" else "mean")
        )
        shapes: list[tuple[int, int]] = [(int(result.shape[-2]), int(result.shape[-1]))]
        while (levels is None and max(shapes[-1]) > TOP_LEVEL_SIDE) or (
            levels is not None and len(shapes) < levels
        ):
            shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
        return cls(result, shapes, method, NGFF_VERSIONS[zarr_format], label)

    def layout(self) -> dict:
        return {
            "name": str(self.result.name),
            "shape": list(self.result.shape),
            "dtype": str(self.result.dtype),
            "chunks": self.result.data.chunks,
            "levels": len(self.shapes),
            "resampling": self.method,
            "ngff": self.version,
        }

    def grid(self, level: int) -> tuple[int, int]:
        if level == 0:
            rows, cols = self.result.data.numblocks[-2:]
        else:
            rows, cols = (-(-s // c) for s, c in zip(self.shapes[level], self.chunk, strict=True))
        return int(rows), int(cols)

    def attrs(self) -> dict:
        """The group's attributes: NGFF's (under ``ome`` for 0.5), the classes', and ours."""
        result = self.result
        size, origin, unit = physical(result)
        dims = ["c", "y", "x"][-result.ndim :]
        ngff: dict[str, Any] = {
            "multiscales": [
                multiscales(
                    name=str(result.name),
                    dims=dims,
                    pixel_size=size,
                    origin=origin,
                    unit=unit,
                    levels=len(self.shapes),
                    centre_shift=self.method == "mean",
                    version=self.version,
                )
            ]
        }
        if result.ndim == 2 and result.dtype.kind in "iu":
            classes = classes_of(result.attrs, default=True)
            ngff["image-label"] = image_label(
                classes, result.rio.nodata, self.version, self.source_image, self.properties
            )
        attrs: dict[str, Any] = (
            {"ome": {"version": self.version, **ngff}} if self.version != "0.4" else ngff
        )
        keep = (
            "class_names",
            "class_colors",
            "flag_values",
            "flag_meanings",
            "seamless_tile_size",
            "seamless_overlap",
        )
        attrs.update({k: v for k, v in result.attrs.items() if k in keep})
        attrs.update(
            {
                LAYOUT: self.layout(),
                "seamless_complete": False,
                record.ATTR: record.dumps(job_of(result)),
            }
        )
        return attrs


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
    if tuple(full.shape[-2:]) != tuple(result.shape[-2:]):
        raise RasterError(
            f"labels of shape {tuple(result.shape[-2:])} cannot go into {root.url!r}, whose image "
            f"is "
            f"{tuple(full.shape[-2:])} (y, x): segment level 0 of that image"
        )
    # The image may be the input: only its labels/<name> group is written, never anything else in
    # it; any other input (a level's folder, another label group) is checked as for every writer.
    inputs = {k: v for k, v in inputs_of(result).items() if as_target(v).real != root.real}
    check_not_an_input(target, inputs, "output")
    return target, image.metadata.zarr_format


def _open(target: Target, mode: str = "r+") -> Any:
    import zarr

    return zarr.open_group(target.url, mode=mode, storage_options=target.storage_options or None)  # type: ignore[arg-type]


def _prepare(
    plan: _Pyramid, root: Target, target: Target, resume: bool, overwrite: bool
) -> Delayed:
    exists = target.exists()
    if exists and not (resume or overwrite):
        raise RasterError(
            f"{target.url!r} exists: pass resume=True to finish it, or overwrite=True to replace it"
        )
    found = our_store(target) if exists else {}
    if resume and exists:
        check_same_job(target, plan.result, found, plan.layout())
        group = _open(target, "r")
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
    return _writes(plan, target, done)


def _write_template(plan: _Pyramid, target: Target) -> None:
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
        names = ["c", "y", "x"][-plan.result.ndim :] if zarr_format == 3 else None
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
            chunks=(1, 1),
            dtype="uint8",
            fill_value=0,
        )
    group.attrs.update(plan.attrs())


def _list_label(root: Target, name: str | None, version: str) -> None:
    """Add ``name`` to the image's ``labels/`` list (NGFF), keeping the names already there (``None``:
    none).
    """
    labels = _open(Target(root.url.rstrip("/") + "/labels", root.storage_options), "a")
    attrs = dict(labels.attrs)
    holder = attrs.setdefault("ome", {"version": version}) if version != "0.4" else attrs
    names = holder.setdefault("labels", [])
    if name is not None and name not in names:
        names.append(name)
    labels.attrs.update(attrs)


def _writes(plan: _Pyramid, target: Target, done: list[np.ndarray]) -> Delayed:
    """A Delayed that writes every chunk of every level not ``done`` and returns how many it wrote."""
    data = plan.result.data
    array = resumed_array(data, done[0])
    name = "seamless-ome-zarr-" + tokenize(array.name, target.url, [d.tobytes() for d in done])
    blocks = block_keys(array).reshape(array.numblocks[-2:])
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-2:]]
    layer: dict = {}
    for j, k in zip(*np.nonzero(~done[0]), strict=True):
        region = (slice(offsets[0][j], offsets[0][j + 1]), slice(offsets[1][k], offsets[1][k + 1]))
        layer[(name, 0, int(j), int(k))] = (
            _write_block,
            target,
            0,
            blocks[j, k],
            region,
            (int(j), int(k)),
        )
    for level in range(1, len(plan.shapes)):
        for j, k in zip(*np.nonzero(~done[level]), strict=True):
            sources = [
                key
                for key in _sources(plan, offsets, level, int(j), int(k))
                if (name, *key) in layer
            ]
            layer[(name, level, int(j), int(k))] = (
                _halve,
                target,
                level,
                (int(j), int(k)),
                plan.chunk,
                plan.method,
                [(name, *key) for key in sources],
            )
    total = "seamless-ome-zarr-done-" + tokenize(name)
    layer[total] = (sum, list(layer))
    return Delayed(total, graph_with(total, layer, [array]))


def _sources(
    plan: _Pyramid, offsets: list[np.ndarray], level: int, j: int, k: int
) -> list[tuple[int, int, int]]:
    """The writes of level ``level - 1`` that chunk ``(j, k)`` of ``level`` reads."""
    # its zarr chunks
    below = [-(-s // c) for s, c in zip(plan.shapes[level - 1], plan.chunk, strict=True)]
    rows, cols = range(2 * j, min(2 * j + 2, below[0])), range(2 * k, min(2 * k + 2, below[1]))
    if level > 1:
        return [(level - 1, r, c) for r in rows for c in cols]
    # level 0 is written by the result's blocks, whose last one may span two chunks
    cy, cx = plan.chunk
    row_blocks = {int(np.searchsorted(offsets[0], r * cy, side="right")) - 1 for r in rows}
    col_blocks = {int(np.searchsorted(offsets[1], c * cx, side="right")) - 1 for c in cols}
    return [(0, r, c) for r in sorted(row_blocks) for c in sorted(col_blocks)]


def _write_block(
    target: Target, level: int, block: np.ndarray, region: tuple[slice, slice], index: tuple
) -> int:
    group = _open(target)
    group[str(level)][(Ellipsis, region[0], region[1])] = block
    # after the pixels: a marker never stands for a missing chunk
    group[f"{DONE_GROUP}/{level}"][index] = 1
    return 1


def _halve(
    target: Target, level: int, index: tuple[int, int], chunk: tuple[int, int], method: str, _: list
) -> int:
    """Chunk ``index`` of ``level``, made from the (up to) four chunks of the level below it."""
    group = _open(target)
    j, k = index
    y0, x0 = j * chunk[0], k * chunk[1]
    below = group[str(level - 1)][..., 2 * y0 : 2 * (y0 + chunk[0]), 2 * x0 : 2 * (x0 + chunk[1])]
    block = below[..., ::2, ::2] if method == "nearest" else mean2(below)
    group[str(level)][..., y0 : y0 + block.shape[-2], x0 : x0 + block.shape[-1]] = block
    group[f"{DONE_GROUP}/{level}"][index] = 1
    return 1
