"""Instances from an instance model, stitched across chunk borders by keeping each object whole.

A model that names objects itself (Cellpose's flows, StarDist's star polygons, a threshold then a
label, any function from an image to an instance label image) cannot be blended as class scores are:
its labels mean nothing outside its own window. So, as StarDist's ``predict_instances_big`` does, it
runs once per chunk over the chunk and a halo, and each object is taken from one window only, the one
whose chunk holds the object's first pixel (row-major), and whole: a window holds every object that
starts in its chunk and is no larger than the halo. Three steps, each local:

1. per chunk, the model on the chunk and its halo (the window): each object it finds that starts in
   the chunk kept as its mask, named 1 + the scene's row-major index of its first pixel (unique over
   the scene, the same for every chunking);
2. per chunk, the objects kept by it and its eight neighbours painted where they fall in it (where two
   overlap, the smaller id wins).

No step waits for the whole scene (no global merge, nothing held but a chunk's objects), and the
model runs once a window. Cellpose's distributed mode instead matches labels of neighbouring blocks
across their faces, which needs either every block's labels held until all are done, or the model run
twice; docs/objects.md says what each does to an object larger than the halo.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..exceptions import OptionError, RasterError
from .instances import DEFAULT_CHUNK, IDS_ATTR, UINT32_MAX

LARGER = ("keep", "raise")


@dataclass
class Kept:
    """Step 1's answer for one chunk: its box in the scene and the objects that start in it."""

    box: tuple[int, int, int, int]  # y0, x0, y1, x1 of the chunk
    width: int  # the scene's, for ids
    ids: list[int] = field(default_factory=list)
    corners: list[tuple[int, int]] = field(default_factory=list)  # each mask's first row and column
    masks: list[np.ndarray] = field(default_factory=list)
    core: np.ndarray | None = None  # the model's labels over the chunk, for what no one kept whole
    cut: int = 0  # objects that reach the window's edge inside the scene: larger than the halo


def segment_instances(
    image: Any,
    model: Callable[[np.ndarray], np.ndarray],
    *,
    halo: int,
    larger_than_halo: str = "keep",
) -> xr.DataArray:
    """Object ids of ``image`` from an instance model, lazily, stitched across its chunks.

    Parameters
    ----------
    image
        ``(y, x)`` or ``(band, y, x)``: a DataArray (its chunks, coords, CRS and transform kept), a
        dask array or a numpy array (cut into 2048 px chunks).
    model
        A function of a window's pixels (numpy, the image's dims, the chunk and up to ``halo`` px
        around it) to an integer label image ``(y, x)`` of the window: 0 background, one value an
        object (any values: only equality counts).
    halo
        The pixels each window reaches past its chunk on every side: the largest object's extent the
        stitching keeps whole (and the context the model sees at a chunk's edge). At most the
        smallest chunk.
    larger_than_halo
        What to do with an object that reaches the edge of its window inside the scene (it may be cut
        there): ``"keep"`` it as the window saw it, or ``"raise"`` naming it and the halo to use.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` ids, ``uint32`` (``uint64`` past 2^32 px), 0 where no object is: an object's id is 1
        + the row-major index of its first pixel, so a model that sees no further than ``halo`` (a
        threshold then a label) gives the objects and ids of the whole image, for every chunking.

    Examples
    --------
    >>> import numpy as np, seamless_dask as sd
    >>> from scipy import ndimage
    >>> image = np.zeros((6, 8)); image[1:3, 1:3] = image[3:5, 5:8] = 1
    >>> ids = sd.segment_instances(image, lambda w: ndimage.label(w > 0.5)[0], halo=3)
    >>> np.unique(ids.compute().values).tolist()  # two objects, named by their first pixels
    [0, 10, 30]
    """
    if larger_than_halo not in LARGER:
        raise OptionError(
            f"larger_than_halo={larger_than_halo!r}: 'keep' an object the window may have cut, or "
            "'raise' naming it"
        )
    array = _image(image)
    halo = _halo(halo)
    data = array.data
    # chunks larger than the halo: a window needs no more than its eight neighbours, and where a
    # window starts and ends tells its chunk (_core)
    spatial = tuple(_at_least(c, halo + 1) for c in data.chunks[-2:])
    if spatial != data.chunks[-2:]:
        data = data.rechunk(data.chunks[:-2] + spatial)
    dtype = np.dtype(np.uint32 if data.shape[-1] * data.shape[-2] < UINT32_MAX else np.uint64)
    windows = da.overlap.overlap(
        data, depth={data.ndim - 2: halo, data.ndim - 1: halo}, boundary="none"
    )
    # each window's rows and columns in the scene, overlapped as the windows are
    rows, cols = (
        da.overlap.overlap(da.arange(n, chunks=c), depth={0: halo}, boundary="none")
        for n, c in zip(data.shape[-2:], spatial, strict=True)
    )
    bands = "b" if data.ndim == 3 else ""
    kept = da.blockwise(
        _kept_block, "ij", windows, bands + "ij", rows, "i", cols, "j",
        model=_Model(model), halo=halo, scene=data.shape[-2:], rule=larger_than_halo,
        dtype=object, adjust_chunks={"i": 1, "j": 1}, concatenate=True,
        meta=np.empty((0, 0), object),
    )  # fmt: skip
    neighbours = [_shifted(kept, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    ids = da.blockwise(
        _paint_block, "ij", *(a for n in neighbours for a in (n, "ij")),
        ids=dtype, dtype=dtype, adjust_chunks={"i": spatial[0], "j": spatial[1]},
        meta=np.empty((0, 0), dtype),
    )  # fmt: skip
    return _named(ids, array, halo)


@dataclass(frozen=True, eq=False)
class _Model:
    """The user's function, named for dask by a token of its own: a closure over a network (or a
    lock) cannot be hashed deterministically, and each call of ``segment_instances`` is its own job.
    """

    fn: Callable[[np.ndarray], np.ndarray]
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        return self.fn(window)

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.segment_instances.model", self.token)


def _image(image: Any) -> xr.DataArray:
    if not isinstance(image, xr.DataArray):
        data = image if isinstance(image, da.Array) else np.asarray(image)
        dims = {2: ("y", "x"), 3: ("band", "y", "x")}.get(data.ndim)
        if dims is None:
            raise RasterError(
                f"segment_instances takes an image of dims (y, x) or (band, y, x); got shape "
                f"{data.shape}: select one plane first"
            )
        image = xr.DataArray(data, dims=dims)
    if image.dims[-2:] != ("y", "x") or image.ndim not in (2, 3):
        raise RasterError(
            f"segment_instances takes an image of dims (y, x) or (band, y, x); got {image.dims}: "
            "transpose or select first (e.g. .transpose('band', 'y', 'x'))"
        )
    data = image.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), (-1,) * (data.ndim - 2) + (DEFAULT_CHUNK,) * 2)
    if data.ndim == 3:
        data = data.rechunk({0: -1})  # every band in each window
    return image.copy(data=data)


def _halo(halo: int) -> int:
    if not isinstance(halo, int | np.integer) or halo < 0:
        raise OptionError(
            f"halo={halo!r}: give the pixels each window reaches past its chunk, >= 0"
        )
    return int(halo)


def _at_least(chunks: tuple[int, ...], least: int) -> tuple[int, ...]:
    """``chunks`` with each one smaller than ``least`` joined to the one before (or after); the ids
    do not depend on the chunking.
    """
    out: list[int] = []
    for size in chunks:
        if out and (size < least or out[-1] < least):
            out[-1] += size
        else:
            out.append(size)
    return tuple(out)


def _kept_block(
    window: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, model: Any, halo: int,
    scene: tuple[int, int], rule: str,
) -> np.ndarray:  # fmt: skip
    out = np.empty((1, 1), object)
    box = (_core(rows, halo, scene[0]), _core(cols, halo, scene[1]))
    out[0, 0] = _kept(window, *box, model=model, halo=halo, scene=scene, rule=rule)
    return out


def _core(window: np.ndarray, halo: int, length: int) -> tuple[int, int]:
    """The chunk's first pixel and size along one axis, from its window's pixels there (chunks are
    larger than the halo, so a window reaches the scene's edge only from the first or last chunk).
    """
    start = int(window[0]) + (halo if window[0] > 0 else 0)
    stop = int(window[-1]) + 1 - (halo if window[-1] + 1 < length else 0)
    return start, stop - start


def _kept(
    window: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], *, model: Any, halo: int,
    scene: tuple[int, int], rule: str,
) -> Kept:  # fmt: skip
    """Step 1: the model on one window, and the objects that start in its chunk (``rows`` and
    ``cols``: the chunk's first pixel and size along each axis).
    """
    (y0, height), (x0, width) = rows, cols
    origin, size = (y0, x0), (height, width)
    top, left = max(y0 - halo, 0), max(x0 - halo, 0)  # the window's first pixel in the scene
    labels = _labels(model(window), window.shape[-2:], origin)
    kept = Kept((y0, x0, y0 + size[0], x0 + size[1]), scene[1])
    kept.core = labels[y0 - top : y0 - top + height, x0 - left : x0 - left + width]
    values, first = np.unique(labels, return_index=True)
    h, w = labels.shape
    starts = [(v, *divmod(int(f), w)) for v, f in zip(values, first, strict=True) if v != 0]
    if not starts:
        return kept
    from scipy import ndimage

    shift = 0 if values[0] == 0 else 1  # find_objects' labels from 1, 0 the background
    boxes = ndimage.find_objects(np.searchsorted(values, labels) + shift)
    for value, r, c in starts:
        if not (y0 <= top + r < y0 + size[0] and x0 <= left + c < x0 + size[1]):
            continue  # starts in another chunk, which keeps it
        box = boxes[int(np.searchsorted(values, value)) + shift - 1]
        mask = labels[box] == value
        if _reaches_edge(box, (h, w), (top, left), scene):
            kept.cut += 1  # kept chunk by chunk, as pieces (_paint_block)
            if rule == "raise":
                raise RasterError(
                    f"an object starting at row {top + r}, column {left + c} reaches the edge of its "
                    f"window ({halo} px past the chunk): it may be larger than the halo and cut; "
                    f"raise halo= (to the largest object's extent) or pass larger_than_halo='keep'"
                )
            continue
        kept.ids.append((top + r) * scene[1] + left + c + 1)
        kept.corners.append((top + box[0].start, left + box[1].start))
        kept.masks.append(mask)
    return kept


def _labels(found: Any, shape: tuple[int, ...], origin: tuple[int, int]) -> np.ndarray:
    labels = np.asarray(found)
    if labels.shape != tuple(shape) or not (
        np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool
    ):
        raise RasterError(
            f"the instance model gave {labels.dtype} of shape {labels.shape} for the window at row "
            f"{origin[0]}, column {origin[1]} of shape {tuple(shape)}: it must return integer labels "
            "(0 background, one value an object) of the window's (y, x) shape"
        )
    return labels


def _reaches_edge(
    box: tuple[slice, slice], shape: tuple[int, int], top_left: tuple[int, int], scene: tuple
) -> bool:
    """Whether an object's box touches an edge of its window that is not the scene's."""
    (rows, cols), (top, left) = box, top_left
    return bool(
        (rows.start == 0 and top > 0)
        or (cols.start == 0 and left > 0)
        or (rows.stop == shape[0] and top + shape[0] < scene[0])
        or (cols.stop == shape[1] and left + shape[1] < scene[1])
    )


def _shifted(kept: da.Array, dy: int, dx: int) -> da.Array:
    """``kept`` moved so that block ``(i, j)`` holds the neighbour ``(i + dy, j + dx)`` (None past
    the edge): block-aligned slices of ``kept`` padded by one block of None each side.
    """
    ny, nx = kept.shape
    row = da.from_array(np.full((1, nx), None, object), chunks=1)
    padded = da.concatenate([row, kept, row], axis=0)
    col = da.from_array(np.full((ny + 2, 1), None, object), chunks=1)
    padded = da.concatenate([col, padded, col], axis=1)
    return padded[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]


def _paint_block(*neighbours: np.ndarray, ids: Any) -> np.ndarray:
    """Step 2: the objects that the chunk and its neighbours kept, painted where they fall in it."""
    own: Kept = neighbours[4][0, 0]
    y0, x0, y1, x1 = own.box
    out = np.zeros((y1 - y0, x1 - x0), ids)
    found: list[tuple[int, tuple[int, int], np.ndarray]] = []
    for block in neighbours:
        kept = block[0, 0]
        if kept is not None:
            found += zip(kept.ids, kept.corners, kept.masks, strict=True)
    for key, (r, c), mask in sorted(found, key=lambda f: -f[0]):  # the smallest id painted last
        top, left = max(r, y0), max(c, x0)
        bottom, right = min(r + mask.shape[0], y1), min(c + mask.shape[1], x1)
        if top >= bottom or left >= right:
            continue
        part = mask[top - r : bottom - r, left - c : right - c]
        out[top - y0 : bottom - y0, left - x0 : right - x0][part] = key
    _fill_rest(out, own)
    return out


def _fill_rest(out: np.ndarray, own: Kept) -> None:
    """What the model found in the chunk that no window kept whole (an object larger than the
    halo), as the chunk's own pieces: each named 1 + the scene's index of its first pixel here.
    """
    if own.core is None:
        return
    rest = (own.core != 0) & (out == 0)
    if not rest.any():
        return
    y0, x0 = own.box[:2]
    flat = np.flatnonzero(rest)
    _, first, inverse = np.unique(own.core.ravel()[flat], return_index=True, return_inverse=True)
    rows, cols = np.divmod(flat[first], out.shape[1])
    names = ((y0 + rows).astype(out.dtype) * own.width + x0 + cols + 1).astype(out.dtype)
    out.ravel()[flat] = names[inverse]


def _named(ids: da.Array, image: xr.DataArray, halo: int) -> xr.DataArray:
    coords = {k: v for k, v in image.coords.items() if set(v.dims) <= {"y", "x"}}
    out = xr.DataArray(ids, dims=("y", "x"), coords=coords, name="instances")
    out.attrs.update(long_name="object id (0: no object)", halo=halo)
    out.attrs[IDS_ATTR] = 1
    if image.rio.crs is not None:
        out = out.rio.write_crs(image.rio.crs)
    if "x" in image.coords and "y" in image.coords:
        out = out.rio.write_transform(image.rio.transform(recalc=False))
    return out.rio.write_nodata(0, encoded=False)
