"""The plan and the write graph of an OME-Zarr pyramid: level 0 written region by region from the
result's chunks, level ``k`` chunk by chunk from the chunks of level ``k - 1`` that it halves in y
and x (a volume's ``z`` is never halved: a chunk of level ``k`` reads the same slab of z below it).

Every spatial axis (a plane's y, x; a volume's z, y, x) is chunked, every leading axis (classes)
is whole in a chunk. A chunk of level ``k`` is read back from the store once the tasks that wrote
the chunks below it have run (it depends on them), so no pixel is computed twice and no level is
ever whole in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from ..classes import classes_of
from ..exceptions import DimensionError
from ..graph import record
from ..graph.build import resumed_array
from ..graph.layers import block_keys, graph_with
from ._ngff import NGFF_VERSIONS, image_label, mean2, multiscales, physical
from ._target import Target
from ._zarr import LAYOUT, job_of, regular_chunks, spatial_axes

# the default pyramid halves until a level is at most this long: a viewer's overview
TOP_LEVEL_SIDE = 512
DONE_GROUP = "_seamless/done"  # one uint8 array per level, one value per chunk, 1 once written
# the result's attributes a pyramid keeps (beside NGFF's own metadata)
KEPT_ATTRS = (
    "class_names",
    "class_colors",
    "flag_values",
    "flag_meanings",
    "seamless_tile_size",
    "seamless_overlap",
)


class Pyramid:
    """What to write: the result regularly chunked, the levels' shapes (over the spatial axes),
    the resampling and the metadata.
    """

    def __init__(
        self,
        result: xr.DataArray,
        shapes: list[tuple[int, ...]],
        method: str,
        version: str,
        in_image: bool,
    ) -> None:
        self.result, self.shapes, self.method, self.version = result, shapes, method, version
        self.spatial = len(shapes[0])  # 2 for a plane's (y, x), 3 for a volume's (z, y, x)
        self.chunk = tuple(int(c[0]) for c in result.data.chunks[-self.spatial :])
        self.lead = tuple(result.shape[: -self.spatial])
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
    ) -> Pyramid:
        chunks = regular_chunks(result.data.chunks)
        if chunks != result.data.chunks:
            result = result.chunk(dict(zip(result.dims, chunks, strict=True)))
        spatial = spatial_axes(result)
        if label and (result.ndim != spatial or not np.issubdtype(result.dtype, np.integer)):
            raise DimensionError(
                "NGFF labels are (y, x) or a volume's (z, y, x) integer classes; got dims "
                f"{result.dims}, {result.dtype}"
            )
        method = (
            resampling
            if resampling != "auto"
            else ("nearest" if result.dtype.kind in "iub" else "mean")
        )
        shapes = [tuple(int(s) for s in result.shape[-spatial:])]
        while (levels is None and max(shapes[-1][-2:]) > TOP_LEVEL_SIDE) or (
            levels is not None and len(shapes) < levels
        ):
            *z, y, x = shapes[-1]
            shapes.append((*z, -(-y // 2), -(-x // 2)))
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

    def dims(self) -> list[str]:
        """NGFF's axis names of the arrays: ``c`` for classes, then the spatial axes."""
        return ["c", *("z", "y", "x")[-self.spatial :]][-self.result.ndim :]

    def grid(self, level: int) -> tuple[int, ...]:
        """How many chunks level ``level`` has along each spatial axis."""
        if level == 0:
            return tuple(int(n) for n in self.result.data.numblocks[-self.spatial :])
        return tuple(-(-s // c) for s, c in zip(self.shapes[level], self.chunk, strict=True))

    def attrs(self) -> dict:
        """The group's attributes: NGFF's (under ``ome`` for 0.5), the classes', and ours."""
        result = self.result
        spatial = ("z", "y", "x")[-self.spatial :]
        size, origin, unit = physical(result, spatial)
        ngff: dict[str, Any] = {
            "multiscales": [
                multiscales(
                    name=str(result.name),
                    dims=self.dims(),
                    pixel_size=size,
                    origin=origin,
                    unit=unit,
                    levels=len(self.shapes),
                    centre_shift=self.method == "mean",
                    version=self.version,
                )
            ]
        }
        if result.ndim == self.spatial and result.dtype.kind in "iu":
            classes = classes_of(result.attrs, default=True)
            ngff["image-label"] = image_label(
                classes, result.rio.nodata, self.version, self.source_image, self.properties
            )
        attrs: dict[str, Any] = (
            {"ome": {"version": self.version, **ngff}} if self.version != "0.4" else ngff
        )
        attrs.update({k: v for k, v in result.attrs.items() if k in KEPT_ATTRS})
        attrs.update(
            {
                LAYOUT: self.layout(),
                "seamless_complete": False,
                record.ATTR: record.dumps(job_of(result)),
            }
        )
        return attrs


def level_writes(plan: Pyramid, target: Target, done: list[np.ndarray]) -> Delayed:
    """A Delayed that writes every chunk of every level not ``done`` and returns how many it wrote."""
    array = resumed_array(plan.result.data, done[0])
    name = "seamless-ome-zarr-" + tokenize(array.name, target.url, [d.tobytes() for d in done])
    blocks = block_keys(array).reshape(array.numblocks[-plan.spatial :])
    offsets = [np.concatenate([[0], np.cumsum(c)]) for c in array.chunks[-plan.spatial :]]
    layer: dict = {}
    for index in zip(*np.nonzero(~done[0]), strict=True):
        at = tuple(int(i) for i in index)
        region = tuple(slice(o[i], o[i + 1]) for o, i in zip(offsets, at, strict=True))
        layer[(name, 0, *at)] = (write_block, target, 0, blocks[at], region, at)
    for level in range(1, len(plan.shapes)):
        for index in zip(*np.nonzero(~done[level]), strict=True):
            at = tuple(int(i) for i in index)
            sources = [
                (name, *key) for key in _sources(plan, offsets, level, at) if (name, *key) in layer
            ]
            layer[(name, level, *at)] = (halve, target, level, at, plan.chunk, plan.method, sources)
    total = "seamless-ome-zarr-done-" + tokenize(name)
    layer[total] = (sum, list(layer))
    return Delayed(total, graph_with(total, layer, [array]))


def _sources(
    plan: Pyramid, offsets: list[np.ndarray], level: int, at: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """The writes of level ``level - 1`` that chunk ``at`` of ``level`` reads: the same z slab
    (a volume's), two rows and two columns of chunks in y and x.
    """
    below = (
        plan.grid(level - 1)
        if level > 1
        else tuple(-(-s // c) for s, c in zip(plan.shapes[0], plan.chunk, strict=True))
    )
    *z, j, k = at
    ranges = [range(i, i + 1) for i in z] + [
        range(2 * j, min(2 * j + 2, below[-2])),
        range(2 * k, min(2 * k + 2, below[-1])),
    ]
    if level > 1:
        return [(level - 1, *key) for key in _product(ranges)]
    # level 0 is written by the result's blocks, whose last one may span two chunks
    blocks = [
        sorted({int(np.searchsorted(o, i * c, side="right")) - 1 for i in r})
        for o, r, c in zip(offsets, ranges, plan.chunk, strict=True)
    ]
    return [(0, *key) for key in _product(blocks)]


def _product(ranges: list) -> list[tuple[int, ...]]:
    keys: list[tuple[int, ...]] = [()]
    for axis in ranges:
        keys = [(*key, int(i)) for key in keys for i in axis]
    return keys


def open_group(target: Target, mode: str = "r+") -> Any:
    """The zarr group at ``target``."""
    import zarr

    return zarr.open_group(target.url, mode=mode, storage_options=target.storage_options or None)  # type: ignore[arg-type]


def write_block(
    target: Target, level: int, block: np.ndarray, region: tuple[slice, ...], index: tuple
) -> int:
    group = open_group(target)
    group[str(level)][(Ellipsis, *region)] = block
    # after the pixels: a marker never stands for a missing chunk
    group[f"{DONE_GROUP}/{level}"][index] = 1
    return 1


def halve(
    target: Target,
    level: int,
    index: tuple[int, ...],
    chunk: tuple[int, ...],
    method: str,
    _: list,
) -> int:
    """Chunk ``index`` of ``level``, made from the (up to) four chunks of the level below it (in
    the same z slab, for a volume).
    """
    group = open_group(target)
    *zs, j, k = index
    *cz, cy, cx = chunk
    y0, x0 = j * cy, k * cx
    slab = tuple(slice(i * c, (i + 1) * c) for i, c in zip(zs, cz, strict=True))
    below = group[str(level - 1)][(Ellipsis, *slab, slice(2 * y0, 2 * (y0 + cy)),
                                   slice(2 * x0, 2 * (x0 + cx)))]  # fmt: skip
    block = below[..., ::2, ::2] if method == "nearest" else mean2(below)
    rows, cols = slice(y0, y0 + block.shape[-2]), slice(x0, x0 + block.shape[-1])
    group[str(level)][(Ellipsis, *slab, rows, cols)] = block
    group[f"{DONE_GROUP}/{level}"][index] = 1
    return 1
