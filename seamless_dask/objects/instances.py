"""Objects from a class map: one id per connected region of one class, unique over the scene, the same
for every chunking, lazily.

Why not dask-image's ``ndmeasure.label``: it labels one foreground (not one class at a time, so touching
objects of two classes would merge), and its global relabelling costs far more than the labelling
(docs/objects.md has the figures). Here each chunk is labelled by ``skimage.measure.label``, every
class in one pass (pixels of one value that touch are one piece); what crosses a chunk border is
matched on the border's two rows (or columns) only, so the merge grows with the chunks' faces, not
with the scene:

1. per chunk, a small task: the chunk labelled, each piece of an object named by its first pixel in
   the scene (1 + its row-major index: unique over the scene, whatever the chunking), and the chunk's
   four edges kept (piece ids and classes);
2. one task over all edges: the pairs of pieces that touch across a border, same class, and their
   components (``scipy.sparse.csgraph``): every piece of a component takes its smallest id;
3. per chunk: the chunk labelled again (cheaper than holding every chunk's ids until step 2 ends) and
   the few pieces that cross a border renamed (the pieces' names, not the pixels).

An object's id is thus 1 + the row-major index of its first pixel in the scene: unique, the same for every
chunking (bit for bit), not contiguous (docs/objects.md: renumbering). The class map's blocks are read by
steps 1 and 3 only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from scipy import sparse
from scipy.sparse import csgraph

from ..exceptions import RasterError
from .rule import LabelRule

UINT32_MAX = int(np.iinfo(np.uint32).max)
IDS_ATTR = "object_ids"  # set on maps of object ids: the table and polygons take them as they are
DEFAULT_CHUNK = 2048  # for a class map in memory: what a chunk of a lazily read raster is
# the steps' names: seamless_dask's keys (graph.keys.PREFIX), whose chunk rows the waves of a
# write read (the merge reaches every row, so the first wave holds every chunk's step 1 for the
# waves after it; named otherwise, the waves past the first two rows labelled their chunks again)
NAME = "seamless-objects-"


def instances(
    labels: Any,
    *,
    connectivity: int = 1,
    classes: list[int] | tuple[int, ...] | None = None,
    nodata: int | None = None,
    region: Any = None,
    region_crs: Any = None,
) -> xr.DataArray:
    """Object ids of a class map, lazily: one id per connected region of one class, 0 for background.

    Parameters
    ----------
    labels
        A class map ``(y, x)`` of integers (or booleans): any :func:`seamless_dask.segment` result, a
        label raster, a zarr variable, a numpy array. Its chunks are kept (an array in memory is cut
        into 2048 px chunks).
    connectivity
        1: pixels that share an edge are one object (4-connectivity, ``scipy.ndimage.label``'s
        default, ``rasterio.features.shapes``' ``connectivity=4``); 2: corners too (8).
    classes
        The classes whose regions are objects; ``None``: every class but 0, which is background by the
        field's convention, and the map's nodata. Objects of different classes that touch stay apart.
    nodata
        The map's nodata value, if its ``rio.nodata`` / ``_FillValue`` does not say it: never an object.
    region, region_crs
        Where objects are wanted, as ``segment`` takes it (a shapely geometry or GeoJSON mapping in the
        map's CRS, or in ``region_crs``; pixel coordinates for a map without one): pixels whose centre
        lies outside are no object's, so an object the region's edge crosses is cut there (as a
        ``segment(..., region=)`` map already is: its nodata outside).

    Returns
    -------
    xarray.DataArray
        ``uint32`` ids (``uint64`` when the scene has more pixels than ``uint32`` holds), the map's
        coords, CRS and transform, ``attrs["object_classes"]`` and ``attrs["connectivity"]``. An object's
        id is 1 + the row-major index of its first pixel: the same for every chunking, and the objects
        are ``scipy.ndimage.label``'s of each class on the whole map.

    Examples
    --------
    >>> import numpy as np, seamless_dask as sd
    >>> labels = np.array([[1, 1, 0, 2], [0, 1, 0, 2], [2, 0, 0, 0]])
    >>> sd.instances(labels).compute().values  # each object's id: 1 + the index of its first pixel
    array([[1, 1, 0, 4],
           [0, 1, 0, 4],
           [9, 0, 0, 0]], dtype=uint32)
    """
    array = label_map(labels)
    rule = LabelRule.of(array, connectivity=connectivity, classes=classes, nodata=nodata,
                        region=region, region_crs=region_crs)  # fmt: skip
    return instances_and_classes(array, rule)[0]


def instances_and_classes(array: xr.DataArray, rule: LabelRule) -> tuple[xr.DataArray, da.Array]:
    """``instances``' ids of a class map (``label_map``'s), and the classes as its last step read
    them, for whatever reads them again (one reader of the input's blocks: ``label_array``).
    """
    ids, classes = label_array(array.data, rule)
    out = xr.DataArray(ids, dims=array.dims, coords=array.coords, name="instances")
    out.attrs.update(
        object_classes=list(rule.classes) if rule.classes is not None else "all but 0 and nodata",
        connectivity=rule.connectivity,
        long_name="object id (0: no object)",
    )
    out.attrs[IDS_ATTR] = 1
    if array.rio.crs is not None:
        out = out.rio.write_crs(array.rio.crs)
    if "x" in array.coords and "y" in array.coords:
        out = out.rio.write_transform(array.rio.transform(recalc=False))
    for key in ("pixel_size", "pixel_unit"):
        if key in array.attrs:
            out.attrs[key] = array.attrs[key]
    return out.rio.write_nodata(0, encoded=False), classes


def label_array(data: Any, rule: LabelRule) -> tuple[da.Array, da.Array]:
    """The three steps of the module's docstring over a 2-D dask (or numpy) array of classes, as
    blockwise steps (both of dask's array engines take them): a chunk learns where it lies from the
    blocks of two ``arange`` arrays beside it. Returns the ids and the class map as step 3 read it.

    Step 1 keeps each class block compressed (zlib: a class map packs 5 to 50 times), and
    step 3 (and whatever else reads the classes again: the table, the polygons) unpacks it: the
    input's own blocks then have one reader, so dask need not hold them (a model's output, or a
    store's reads) until the merge, which waits for every chunk, is done.
    """
    data = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), DEFAULT_CHUNK)
    dtype = np.dtype(np.uint32 if data.size < UINT32_MAX else np.uint64)
    width = data.shape[1]
    rows, cols = (da.arange(n, chunks=c) for n, c in zip(data.shape, data.chunks, strict=True))
    place = {"rule": rule, "width": width, "ids": dtype}
    first = da.blockwise(
        _edges_block, "ij", data, "ij", rows, "i", cols, "j", **place,
        token=NAME + "edges", dtype=object, adjust_chunks={"i": 1, "j": 1},
        meta=np.empty((0, 0), object),
    )  # fmt: skip
    objects = {"dtype": object, "meta": np.empty((0, 0), object)}
    # map_blocks' full names (its token= is name= on array-expr), unique by their input's
    edges = first.map_blocks(_part, 0, name=f"{NAME}edge-strips-{first.name[-32:]}", **objects)
    packed = first.map_blocks(_part, 1, name=f"{NAME}packed-{first.name[-32:]}", **objects)
    merge = edges.rechunk(edges.shape).map_blocks(
        _merge_block, rule.connectivity, dtype, name=f"{NAME}merge-{first.name[-32:]}",
        chunks=((1,), (1,)), dtype=object, meta=np.empty((0, 0), object),
    )  # fmt: skip
    # each block's first row and column, a block an entry (the packed blocks' chunks are 1 x 1)
    starts = [da.from_array(np.cumsum([0, *c])[:-1], chunks=1) for c in data.chunks]
    ids = da.blockwise(
        _relabel_block, "ij", packed, "ij", merge, "kl", starts[0], "i", starts[1], "j", **place,
        token=NAME + "ids", dtype=dtype, adjust_chunks={"i": data.chunks[0], "j": data.chunks[1]},
        concatenate=True, meta=np.empty((0, 0), dtype),
    )  # fmt: skip
    # unpacked only once the merge is done (its dependency), so not all at once before it
    classes = da.blockwise(
        _unpack_block, "ij", packed, "ij", merge, "kl", token=NAME + "classes", dtype=data.dtype,
        adjust_chunks={"i": data.chunks[0], "j": data.chunks[1]},
        concatenate=True, meta=np.empty((0, 0), data.dtype),
    )  # fmt: skip
    return ids, classes


def _edges_block(
    block: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    rule: LabelRule,
    width: int,
    ids: Any,
) -> np.ndarray:
    out = np.empty((1, 1), object)
    block = np.ascontiguousarray(block)
    edges = _edges(block, rule, (int(rows[0]), int(cols[0])), width, ids)
    out[0, 0] = (edges, Packed.of(block))
    return out


def _part(block: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((1, 1), object)
    out[0, 0] = block[0, 0][k]
    return out


def _unpack_block(packed: np.ndarray, merge: np.ndarray) -> np.ndarray:
    return packed[0, 0].unpack()


@dataclass(frozen=True)
class Packed:
    """A class block compressed (zlib, level 1: a few ms a megapixel each way; numcodecs' blosc is
    faster, but importing numcodecs without google-crc32c prints a DeprecationWarning on a user's
    stderr).
    """

    data: bytes
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, block: np.ndarray) -> Packed:
        """``block`` compressed."""
        return cls(zlib.compress(block.tobytes(), 1), block.shape, str(block.dtype))

    def unpack(self) -> np.ndarray:
        """The block again."""
        raw = zlib.decompress(self.data)
        return np.frombuffer(raw, self.dtype).reshape(self.shape).copy()


def _merge_block(edges: np.ndarray, connectivity: int, dtype: Any) -> np.ndarray:
    out = np.empty((1, 1), object)
    out[0, 0] = _merge(edges, connectivity, dtype)
    return out


def _relabel_block(
    packed: np.ndarray,
    merge: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    rule: LabelRule,
    width: int,
    ids: Any,
) -> np.ndarray:
    origin = (int(rows[0]), int(cols[0]))
    block = packed[0, 0].unpack()
    return _relabel(block, merge[0, 0], rule, origin=origin, width=width, dtype=ids)


@dataclass(frozen=True)
class Edges:
    """What step 2 needs of one chunk: its four edges' piece ids and classes."""

    ids: dict[str, np.ndarray]  # "top", "bottom", "left", "right"
    classes: dict[str, np.ndarray]


def _sides(array: np.ndarray) -> dict[str, np.ndarray]:
    return {"top": array[0], "bottom": array[-1], "left": array[:, 0], "right": array[:, -1]}


def _edges(
    block: np.ndarray, rule: LabelRule, origin: tuple[int, int], width: int, dtype: Any
) -> Edges:
    block = np.asarray(block)
    found, names = rule.pieces(block, origin, width, dtype)  # only the edges named
    return Edges(
        {k: names[v] for k, v in _sides(found).items()},
        {k: v.copy() for k, v in _sides(block).items()},
    )


@dataclass(frozen=True)
class Merge:
    """Step 2's answer: the pieces that touch another chunk's, and their object's id."""

    keys: np.ndarray  # sorted piece ids
    values: np.ndarray  # the smallest piece id of each one's object


def _merge(edges: np.ndarray, connectivity: int, dtype: Any) -> Merge:
    pairs = [*_across(edges, connectivity, "rows"), *_across(edges, connectivity, "cols")]
    if not pairs:
        return Merge(np.zeros(0, dtype), np.zeros(0, dtype))
    a, b = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    keys, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(keys)
    graph = sparse.coo_matrix((np.ones(len(a)), (inverse[: len(a)], inverse[len(a) :])), (n, n))
    _, component = csgraph.connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, np.iinfo(dtype).max, dtype)
    np.minimum.at(smallest, component, keys)
    return Merge(keys, smallest[component])


def _across(
    edges: np.ndarray, connectivity: int, axis: str
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The piece pairs that touch across each border between chunk rows (``"rows"``) or columns: the
    scene-long strip of the last row of pieces above and the first row below, shifted by one either
    way for corners (connectivity 2), same class and both objects.
    """
    n_rows, n_cols = edges.shape
    borders = range(n_rows - 1) if axis == "rows" else range(n_cols - 1)
    first, second = ("bottom", "top") if axis == "rows" else ("right", "left")
    for k in borders:
        line = (
            [(k, j) for j in range(n_cols)] if axis == "rows" else [(i, k) for i in range(n_rows)]
        )
        after = [(i + 1, j) if axis == "rows" else (i, j + 1) for i, j in line]
        up, up_class = _strip(edges, line, first)
        down, down_class = _strip(edges, after, second)
        for shift in (0,) if connectivity == 1 else (-1, 0, 1):
            b, cb = (
                _shifted(down, shift),
                _shifted(down_class, shift),
            )  # up[k] beside down[k - shift]
            touch = (up > 0) & (b > 0) & (up_class == cb)
            if touch.any():
                yield up[touch], b[touch]


def _strip(
    edges: np.ndarray, cells: list[tuple[int, int]], side: str
) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([edges[i, j].ids[side] for i, j in cells])
    return ids, np.concatenate([edges[i, j].classes[side] for i, j in cells])


def _shifted(strip: np.ndarray, shift: int) -> np.ndarray:
    """``strip`` moved by ``shift`` places, the places left empty 0 (never an object)."""
    if shift == 0:
        return strip
    out = np.zeros_like(strip)
    if shift > 0:
        out[shift:] = strip[:-shift]
    else:
        out[:shift] = strip[-shift:]
    return out


def _relabel(
    block: np.ndarray,
    merge: Merge,
    rule: LabelRule,
    *,
    origin: tuple[int, int],
    width: int,
    dtype: Any,
) -> np.ndarray:
    found, names = rule.pieces(np.asarray(block), origin, width, dtype)
    if len(merge.keys):  # the pieces renamed, not the pixels
        where = np.minimum(np.searchsorted(merge.keys, names), len(merge.keys) - 1)
        hit = (merge.keys[where] == names) & (names > 0)
        names[hit] = merge.values[where[hit]]
    return names[found]


def label_map(labels: Any) -> xr.DataArray:
    """``labels`` as the ``(y, x)`` integer map ``instances`` reads (a one-band map squeezed, booleans
    as 0/1); anything else refused naming the rule.
    """
    if not isinstance(labels, xr.DataArray):
        labels = labels if isinstance(labels, da.Array) else np.asarray(labels)
    if not isinstance(labels, xr.DataArray):
        dims = ("y", "x") if labels.ndim == 2 else tuple(f"dim_{k}" for k in range(labels.ndim))
        labels = xr.DataArray(labels, dims=dims)
    array = labels
    if "band" in array.dims and array.sizes["band"] == 1:
        array = array.squeeze("band", drop=True)
    if array.ndim != 2:
        raise RasterError(
            f"instances takes a class map of dims (y, x); got dims {array.dims} of shape "
            f"{array.shape}: select one band or plane first (e.g. .isel(band=0))"
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise RasterError(
            f"instances takes integer class labels; got {array.dtype}: a probability map is not a class "
            "map: take its argmax (segment's default output) or threshold it, e.g. (probabilities > 0.5)"
        )
    return array
