"""What the table and the polygons share: a function of every chunk of the object ids, with the
chunk's class map, its place in the scene and its bands, run lazily as one blockwise step.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from affine import Affine

from ..exceptions import OptionError
from .instances import IDS_ATTR, instances_and_classes, label_map
from .rule import LabelRule


def per_chunk(
    fn: Any, ids: Any, classes: Any, bands: Any, names: list[str] | None, **options: Any
) -> da.Array:
    """``fn(ids, classes, origin, bands, **options)`` of every chunk, lazily, as a dask array of
    objects, one a chunk (blockwise: both of dask's engines take it; a chunk's origin comes from the
    blocks of two ``arange`` arrays beside it).
    """
    rows, cols = (da.arange(n, chunks=c) for n, c in zip(ids.shape, ids.chunks, strict=True))
    arrays: list[Any] = [ids, "ij", classes.rechunk(ids.chunks), "ij", rows, "i", cols, "j"]
    if bands is not None:
        arrays += [bands, "bij"]
    return da.blockwise(
        _one_chunk, "ij", *arrays, fn=fn, names=names, options=options,
        dtype=object, adjust_chunks={"i": 1, "j": 1}, concatenate=True,
        meta=np.empty((0, 0), object),
    )  # fmt: skip


def _one_chunk(
    ids: np.ndarray, classes: np.ndarray, rows: np.ndarray, cols: np.ndarray, *bands: Any, fn: Any,
    names: list[str] | None, options: dict,
) -> np.ndarray:  # fmt: skip
    out = np.empty((1, 1), object)
    band_values = dict(zip(names or [], np.asarray(bands[0]), strict=True)) if bands else None
    out[0, 0] = fn(ids, classes, (int(rows[0]), int(cols[0])), band_values, **options)
    return out


def objects_of(labels: Any, rule: dict[str, Any]) -> tuple[xr.DataArray, da.Array]:
    """The object ids of ``labels`` and the class map they were made from, in the ids' chunks.

    A map of ids already (what ``instances`` and ``segment_instances`` return: ``attrs`` say so) is
    taken as it is, each id one object of class 1; ``rule`` may then only hold a region.
    """
    if isinstance(labels, xr.DataArray) and labels.attrs.get(IDS_ATTR):
        ids = labels
        if set(rule) - {"region", "region_crs"} or rule.get("region") is not None:
            raise OptionError(
                f"{sorted(k for k, v in rule.items() if v is not None)} given with a map of object "
                "ids, whose objects are made already: pass the class map instead, or leave them out"
            )
        data = ids.data if isinstance(ids.data, da.Array) else da.from_array(ids.data)
        return ids.copy(data=data), (data > 0).astype(np.uint8)
    array = label_map(labels)
    return instances_and_classes(array, LabelRule.of(array, **rule))


def apply_points(transform: Affine, cols: Any, rows: Any) -> tuple[Any, Any]:
    """``transform`` of many points at once (``Affine * (x, y)`` takes one)."""
    a, b, c, d, e, f = transform[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def delayed_blocks(array: Any) -> list[Any]:
    """Each block of ``array`` as a Delayed, all over one optimised graph (what the legacy engine's
    ``to_delayed`` does, which array-expr lacks): a block passed to ``dask.delayed`` as an array
    would bring its own copy of the graph, fused, and the merge of ``instances`` would run once a
    partition.
    """
    from dask.core import flatten
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph

    keys = array.__dask_keys__()
    graph = array.__dask_optimize__(array.__dask_graph__(), keys)
    layer = f"delayed-{array.name}"
    graph = HighLevelGraph.from_collections(layer, graph, dependencies=())
    return [Delayed(key, graph, layer=layer) for key in flatten(keys)]
