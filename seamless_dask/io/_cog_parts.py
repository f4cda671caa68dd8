"""A COG on S3 written by workers that share no folder: every tile of every level compressed in the
graph, the file uploaded as one S3 multipart upload in one pass over the data, its header last.

This is odc-geo's design (``save_cog_with_dask``, odc-geo#119 and #206), which pads the image to a
multiple of ``2 ** levels`` (docs/outputs.md); here the COG has the result's exact size:

- **Levels.** Level 0 is the result, rechunked to ``blocksize * 2 ** m`` px so that a chunk holds
  whole COG tiles; each overview halves the level above it (``nearest``: every second pixel;
  ``average``: the mean of the 2 x 2 pixels that are not nodata), a block from one block above
  while blocks are larger than a tile, from 2 x 2 of them after: a quadtree of tasks, each block of
  every level made once. The levels are rio-cogeo's (overviews while the smaller side exceeds a
  tile).
- **Tiles.** Each block's tiles are cut (edge tiles padded with nodata), pixel-interleaved as
  GDAL's COG profiles are, and compressed (deflate, lzw, zstd, or none), in the block's own task.
- **Parts.** The file is, in order: the header, the smallest overview's tiles, ..., level 0's. Each
  level's blocks flow through a chain of tasks (in file order) that uploads a part whenever it holds
  at least :data:`MIN_PART` bytes. A level keeps its first bytes back (at least S3's 5 MiB minimum)
  for the last task, which joins them with the tail of the level before into one part, and puts
  the header, written with every tile's offset and size, first. Part numbers are reserved per
  level in file order (S3 orders parts by number, gaps allowed); a small COG is one part.
- **Whole or nothing.** S3 shows the object only when the upload completes; a failed run aborts its
  upload (its id is kept beside the target in ``<target>.seamless-<run>.upload``, so only this run's
  upload is ever aborted).
"""

from __future__ import annotations

import io
import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from dask.base import tokenize
from dask.delayed import Delayed

from ..classes import classes_of
from ..exceptions import OptionError
from ..graph.layers import block_keys, graph_with, rechunk
from ._pam import place_sidecar
from ._target import SCRATCH_INFIX, UPLOAD_SUFFIX, Target, abort_marked_upload

S3_PROTOCOLS = ("s3", "s3a")
MIN_PART = 8 << 20  # above S3's 5 MiB minimum for every part but the last
S3_MINIMUM = 5 << 20
MAX_PARTS = 10_000
CODECS = ("deflate", "lzw", "zstd", "raw")
RESAMPLINGS = ("nearest", "average")
# the tags of a GeoTIFF that say where it is and what its values mean (GDAL's own metadata and
# nodata among them); the structural ones tifffile writes for each level itself
GEO_TAGS = frozenset({33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113})


def writes_parts(target: Target) -> bool:
    """Whether a COG at ``target`` is written as a multipart upload by the workers (S3 URLs)."""
    return target.url.split("://", 1)[0] in S3_PROTOCOLS


@dataclass(frozen=True)
class Level:
    """One level of the COG: its size, the size of its blocks and where its blocks start."""

    shape: tuple[int, int]
    rows: tuple[int, ...]  # first pixel row of each block row
    cols: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """What every task of the upload needs to know: the levels, tiles, codec and part numbers."""

    levels: tuple[Level, ...]
    blocksize: int
    bands: int  # 0 for a (y, x) result
    dtype: str
    compress: str
    fill: float  # what pads an edge tile: the nodata value, or 0
    nodata: float | None  # what an average leaves out (NaN always)
    resampling: str
    part_size: int
    first_part: tuple[int, ...]  # each level's first part number (levels in file order: last first)
    last_part: int

    def tiles(self, level: int) -> tuple[int, int]:
        h, w = self.levels[level].shape
        return -(-h // self.blocksize), -(-w // self.blocksize)


@dataclass(frozen=True)
class Upload:
    """One run's upload: where to, the run's id and the layout."""

    target: Target
    run: str
    layout: Layout


class Payload(NamedTuple):
    """One block's compressed tiles, back to back, and each tile's size."""

    data: bytes
    sizes: np.ndarray


class Stream(NamedTuple):
    """A level's upload so far: bytes kept back for the join, the parts uploaded, the bytes not yet
    uploaded, the next part number and every tile size in file order.
    """

    kept: bytes
    parts: tuple[tuple[int, str], ...]
    tail: bytes
    next_part: int
    sizes: tuple[np.ndarray, ...]


def part_writes(result: xr.DataArray, target: Target, run: str, options: tuple) -> Delayed:
    """A Delayed that writes ``result`` as a COG at the S3 ``target`` and returns its URL;
    ``options`` are ``(compress, blocksize, overview_resampling)``.

    The upload is started here, before any task runs, so that a failed run's
    :func:`abort_upload` always finds it (a task still running as the run fails could start one
    after it). A graph never computed leaves an upload of no parts, which the next claim on the
    target aborts (:func:`~seamless_dask.io._target.remove_scratch`).
    """
    layout, level0 = plan(result, *options)
    job = Upload(target, run, layout)
    header = Header.of(result, layout)
    upload = open_upload(job)
    name = "seamless-cog-parts-" + tokenize(level0.name, target.url, run, layout)
    layer: dict = {}
    blocks: list[np.ndarray] = [block_keys(level0).reshape(level0.numblocks[-2:])]
    for k in range(1, len(layout.levels)):
        blocks.append(_overview_tasks(layer, name, k, blocks[-1], layout))
    last_steps = []
    for k, keys in enumerate(blocks):
        step: Any = None  # a level's chain starts empty
        for j, i in np.ndindex(*keys.shape):
            pack = (name, "pack", k, j, i)
            layer[pack] = (_pack, keys[j, i], layout)
            layer[(name, "step", k, j, i)] = (_step, step, pack, upload, job, k)
            step = (name, "step", k, j, i)
        last_steps.append(step)
    final = "seamless-cog-parts-final-" + tokenize(name)
    names = list(getattr(classes_of(result.attrs), "names", []) or [])
    layer[final] = (_finish, last_steps, upload, job, header, names)
    return Delayed(final, graph_with(final, layer, [level0]))


def plan(
    result: xr.DataArray, compress: str, blocksize: int, resampling: str
) -> tuple[Layout, Any]:
    """The layout of the COG of ``result`` and its level 0 (``result``'s dask array in whole tiles)."""
    from rasterio.rio.overview import get_maximum_overview_level

    if compress.lower() not in CODECS:
        raise OptionError(
            f"a COG on S3 is compressed in the workers with {CODECS}, got compress={compress!r}: "
            "use compress='deflate' (or write the COG locally and upload it)"
        )
    if resampling not in RESAMPLINGS:
        raise OptionError(
            f"a COG on S3 builds its overviews with {RESAMPLINGS}, got "
            f"overview_resampling={resampling!r}: use 'nearest' for labels, 'average' otherwise"
        )
    array = result.data
    h, w = result.shape[-2:]
    scale = max(
        1, round(math.log2(max(max(array.chunks[-2][0], array.chunks[-1][0]) / blocksize, 1)))
    )
    side = blocksize * 2**scale
    level0 = rechunk(array, (*array.chunks[:-2], _even(h, side), _even(w, side)))
    n_levels = 1 + get_maximum_overview_level(w, h, minsize=blocksize)
    levels, size = [], side
    for k in range(n_levels):
        shape = (-(-h // 2**k), -(-w // 2**k))
        levels.append(
            Level(shape, tuple(range(0, shape[0], size)), tuple(range(0, shape[1], size)))
        )
        size = max(blocksize, size // 2)
    bands = result.shape[0] if result.ndim == 3 else 0
    raw = [lv.shape[0] * lv.shape[1] * max(bands, 1) * result.dtype.itemsize for lv in levels]
    bound = [int(r * 1.5) + 1024 for r in raw]  # compressed never beyond 1.5 x raw (lzw's worst)
    part_size = max(MIN_PART, -(-sum(bound) // (MAX_PARTS - 3 * n_levels - 1)))
    first, number = [0] * n_levels, 1
    for k in reversed(range(n_levels)):  # file order: the smallest overview first
        first[k] = number
        number += 2 + bound[k] // part_size
    nodata = result.rio.nodata
    fill = 0.0 if nodata is None else float(nodata)
    layout = Layout(tuple(levels), blocksize, bands, str(result.dtype), compress.lower(), fill,
                    None if nodata is None else float(nodata), resampling, part_size,
                    tuple(first), number)  # fmt: skip
    return layout, level0


def _even(size: int, side: int) -> tuple[int, ...]:
    return (side,) * (size // side) + ((size % side,) if size % side else ())


def _overview_tasks(
    layer: dict, name: str, k: int, above: np.ndarray, layout: Layout
) -> np.ndarray:
    """The tasks of level ``k``'s blocks, each halving one block of the level above, or 2 x 2."""
    level = layout.levels[k]
    grid = (len(level.rows), len(level.cols))
    step = 1 if grid == above.shape else 2
    keys = np.empty(grid, dtype=object)
    for j, i in np.ndindex(*grid):
        quad = [
            [above[y, x] for x in range(i * step, min((i + 1) * step, above.shape[1]))]
            for y in range(j * step, min((j + 1) * step, above.shape[0]))
        ]
        keys[j, i] = (name, "level", k, j, i)
        layer[keys[j, i]] = (_halve, quad, layout.resampling, layout.nodata)
    return keys


def _halve(quad: list[list[np.ndarray]], resampling: str, nodata: float | None) -> np.ndarray:
    """The blocks of ``quad`` put together, at half their resolution (an odd side rounds up); an
    average leaves ``nodata`` and NaN out, and is nodata (else NaN, or 0 for integers) where all are.
    """
    block = np.concatenate([np.concatenate(row, axis=-1) for row in quad], axis=-2)
    if resampling == "nearest":
        return np.ascontiguousarray(block[..., ::2, ::2])
    h, w = block.shape[-2:]
    values = block.astype(np.float64)
    if nodata is not None and not np.isnan(nodata):
        values[block == nodata] = np.nan
    integer = np.issubdtype(block.dtype, np.integer)
    fill = nodata if nodata is not None else (0 if integer else np.nan)
    pad = [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)]
    values = np.pad(values, pad, constant_values=np.nan)
    values = values.reshape(*values.shape[:-2], values.shape[-2] // 2, 2, values.shape[-1] // 2, 2)
    count = np.sum(~np.isnan(values), axis=(-3, -1))
    with np.errstate(invalid="ignore"):
        mean = np.nansum(values, axis=(-3, -1)) / count
    if integer:  # half up, as GDAL rounds an average
        mean = np.floor(mean + 0.5)
    return np.where(count == 0, fill, mean).astype(block.dtype)


def _pack(block: np.ndarray, layout: Layout) -> Payload:
    """``block``'s tiles (row by row), each padded to a whole tile, interleaved and compressed."""
    size = layout.blocksize
    if block.ndim == 3:  # (band, y, x) -> (y, x, band): GDAL's pixel interleaving
        block = np.moveaxis(block, 0, -1)
    h, w = block.shape[:2]
    pieces, sizes = [], []
    for y in range(0, h, size):
        for x in range(0, w, size):
            tile = block[y : y + size, x : x + size]
            if tile.shape[:2] != (size, size):
                whole = np.full((size, size, *block.shape[2:]), layout.fill, dtype=block.dtype)
                whole[: tile.shape[0], : tile.shape[1]] = tile
                tile = whole
            encoded = _encode(np.ascontiguousarray(tile).astype("<" + tile.dtype.str[1:]), layout)
            pieces.append(encoded)
            sizes.append(len(encoded))
    return Payload(b"".join(pieces), np.asarray(sizes, dtype=np.int64))


def _encode(tile: np.ndarray, layout: Layout) -> bytes:
    if layout.compress == "deflate":
        return zlib.compress(tile.tobytes(), 6)
    if layout.compress == "raw":
        return tile.tobytes()
    try:
        import imagecodecs
    except ImportError:
        raise OptionError(
            f"compress={layout.compress!r} needs imagecodecs on the workers: pip install "
            "imagecodecs, or use compress='deflate'"
        ) from None
    if layout.compress == "lzw":
        return bytes(imagecodecs.lzw_encode(tile.tobytes()))
    return bytes(imagecodecs.zstd_encode(tile.tobytes(), level=9))


def _s3(target: Target) -> tuple[Any, str, str]:
    fs = target.fs
    bucket, key, _ = fs.split_path(target.path)
    return fs, bucket, key


def upload_marker(target: Target, run: str) -> Target:
    """Where run ``run`` keeps its upload's id, beside the target."""
    return target.sibling(SCRATCH_INFIX + run + UPLOAD_SUFFIX)


def open_upload(job: Upload) -> str:
    """Start the run's multipart upload and keep its id beside the target; its id."""
    fs, bucket, key = _s3(job.target)
    upload = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    marker = upload_marker(job.target, job.run)
    marker.fs.pipe_file(marker.path, upload.encode())
    return str(upload)


def _upload_part(target: Target, upload: str, number: int, data: bytes) -> tuple[int, str]:
    fs, bucket, key = _s3(target)
    answer = fs.call_s3(
        "upload_part", Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data
    )
    return number, str(answer["ETag"])


def _step(stream: Stream | None, payload: Payload, upload: str, job: Upload, k: int) -> Stream:
    """``stream`` (``None``: level ``k``'s start) with ``payload`` after it: kept back until the
    level holds ``part_size`` bytes (the join's share), then uploaded a part at a time once
    ``part_size`` bytes are waiting.
    """
    layout = job.layout
    if stream is None:
        stream = Stream(b"", (), b"", layout.first_part[k] + 1, ())
    sizes = (*stream.sizes, payload.sizes)
    if not stream.parts and len(stream.kept) < layout.part_size:
        return stream._replace(kept=stream.kept + payload.data, sizes=sizes)
    tail = stream.tail + payload.data
    if len(tail) < layout.part_size:
        return stream._replace(tail=tail, sizes=sizes)
    part = _upload_part(job.target, upload, stream.next_part, tail)
    return Stream(stream.kept, (*stream.parts, part), b"", stream.next_part + 1, sizes)


def _finish(
    streams: list[Stream], upload: str, job: Upload, header: Header, names: list[str]
) -> str:
    """The header, the joins and the last part uploaded (a COG smaller than two parts is that one
    part), the upload completed, the marker removed and the category names placed.
    """
    target, layout = job.target, job.layout
    fs, bucket, key = _s3(target)
    pending, parts = header.patched(*header.offsets(streams, layout)), []
    for k in reversed(range(len(streams))):
        stream = streams[k]
        pending += stream.kept
        if stream.parts:
            parts.append(_upload_part(target, upload, layout.first_part[k], pending))
            parts.extend(stream.parts)
            pending = stream.tail
        else:
            pending += stream.tail
    parts.append(_upload_part(target, upload, layout.last_part, pending))  # the last: any size
    fs.call_s3(
        "complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
    )  # fmt: skip
    marker = upload_marker(target, job.run)
    marker.fs.rm(marker.path)
    place_sidecar(target, names)
    return target.url


def abort_upload(target: Target, run: str) -> None:
    """Abort run ``run``'s upload (the one its marker names, never another's) and remove the
    marker.
    """
    marker = upload_marker(target, run)
    if marker.exists():  # the store asked, not a listing cached before the marker was written
        abort_marked_upload(target, marker.path)


@dataclass(frozen=True)
class Header:
    """The COG's IFDs, written by tifffile with empty tiles, and where each level's tile offsets and
    byte counts lie in it (patched once every tile's size is known).
    """

    data: bytes
    fields: tuple[tuple[int, int, int, int], ...]  # per level: offsets at, type, counts at, type

    @classmethod
    def of(cls, result: xr.DataArray, layout: Layout) -> Header:
        import tifffile

        geo, colormap = _geo_tags(result, layout.resampling)
        photometric = "palette" if colormap is not None else "minisblack"
        compression = {"deflate": "zlib", "lzw": "lzw", "zstd": "zstd", "raw": None}[
            layout.compress
        ]
        buffer = io.BytesIO()
        with tifffile.TiffWriter(buffer, bigtiff=True) as tiff:
            for k, level in enumerate(layout.levels):
                shape = (*level.shape, layout.bands) if layout.bands else level.shape
                tiff.write(
                    itertools.repeat(b""), shape=shape, dtype=layout.dtype,
                    tile=(layout.blocksize, layout.blocksize), compression=compression,
                    photometric=photometric, colormap=colormap,
                    planarconfig="contig" if layout.bands else None,
                    extratags=geo if k == 0 else [], subfiletype=1 if k else 0,
                    software=False, metadata=None, resolution=None,
                )  # fmt: skip
        data = buffer.getvalue()
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            tags = [page.tags for page in tiff.pages if isinstance(page, tifffile.TiffPage)]
            fields = tuple(
                (
                    t["TileOffsets"].valueoffset,
                    int(t["TileOffsets"].dtype),
                    t["TileByteCounts"].valueoffset,
                    int(t["TileByteCounts"].dtype),
                )
                for t in tags
            )
        return cls(data, fields)

    def offsets(
        self, streams: Sequence[Stream], layout: Layout
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every tile's offset and byte count, level by level in tile order, from the sizes the
        streams saw in file order (blocks row by row, each block's tiles row by row).
        """
        position = len(self.data)
        offsets, counts = (
            [np.empty(0, np.int64)] * len(streams),
            [np.empty(0, np.int64)] * len(streams),
        )
        for k in reversed(range(len(streams))):
            ty, tx = layout.tiles(k)
            order = _tile_order(layout, k)
            sizes = np.concatenate(streams[k].sizes) if streams[k].sizes else np.empty(0, np.int64)
            if len(sizes) != ty * tx:
                raise RuntimeError(f"level {k} of the COG has {len(sizes)} tiles, not {ty * tx}")
            starts = position + np.concatenate([[0], np.cumsum(sizes)[:-1]])
            position += int(sizes.sum())
            offsets[k], counts[k] = np.empty(ty * tx, np.int64), np.empty(ty * tx, np.int64)
            offsets[k][order], counts[k][order] = starts, sizes
        return offsets, counts

    def patched(self, offsets: list[np.ndarray], counts: list[np.ndarray]) -> bytes:
        data = bytearray(self.data)
        for (at, kind, counts_at, counts_kind), values, sizes in zip(
            self.fields, offsets, counts, strict=True
        ):
            for where, code, numbers in ((at, kind, values), (counts_at, counts_kind, sizes)):
                fmt = {16: "Q", 4: "I", 3: "H"}[code]
                struct.pack_into(f"<{len(numbers)}{fmt}", data, where, *numbers.tolist())
        return bytes(data)


def _tile_order(layout: Layout, k: int) -> np.ndarray:
    """The tile index (row by row over the level) of each tile in file order."""
    level, size = layout.levels[k], layout.blocksize
    _, tx = layout.tiles(k)
    order: list[int] = []
    for (y0, y1), (x0, x1) in itertools.product(
        _spans(level.rows, level.shape[0]), _spans(level.cols, level.shape[1])
    ):
        for y in range(y0 // size, -(-y1 // size)):
            order.extend(y * tx + x for x in range(x0 // size, -(-x1 // size)))
    return np.asarray(order, dtype=np.int64)


def _spans(starts: tuple[int, ...], total: int) -> list[tuple[int, int]]:
    return list(zip(starts, (*starts[1:], total), strict=True))


def _geo_tags(result: xr.DataArray, resampling: str) -> tuple[list[tuple], Any]:
    """The GeoTIFF tags GDAL writes for ``result``'s CRS, transform, nodata, band scales and
    ``seamless_*`` attributes (from a one-pixel GeoTIFF of them), and its colour table.
    """
    import tifffile
    from rasterio.io import MemoryFile

    nodata = result.rio.nodata
    count = result.shape[0] if result.ndim == 3 else 1
    profile = {"driver": "GTiff", "width": 1, "height": 1, "count": count, "dtype": str(result.dtype),
               "crs": result.rio.crs, "transform": result.rio.transform(recalc=True),
               "nodata": nodata}  # fmt: skip
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            describe(dst, result)
            dst.update_tags(OVERVIEW_RESAMPLING=resampling.upper())  # as rio-cogeo says it
        with tifffile.TiffFile(io.BytesIO(memory.read())) as tiff:
            found = tiff.pages.first.tags
            tags = [(t.code, int(t.dtype), t.count, t.value, True) for t in found.values()
                    if t.code in GEO_TAGS]  # fmt: skip
            colormap = found[320].value if 320 in found else None
    return tags, colormap


def describe(dst: Any, result: xr.DataArray) -> None:
    """What a GeoTIFF of ``result`` says of its values, written into the open dataset ``dst``: the
    ``seamless_*`` attributes as tags, quantised probabilities' band scale and offset, and the
    classes' colour table (QGIS shows the classes). Both COG writers call it.
    """
    dst.update_tags(**{k: str(v) for k, v in result.attrs.items() if k.startswith("seamless_")})
    if "scale_factor" in result.attrs:
        dst.scales = (float(result.attrs["scale_factor"]),) * dst.count
        dst.offsets = (float(result.attrs.get("add_offset", 0.0)),) * dst.count
    classes = classes_of(result.attrs, default=True)
    if classes is not None and result.ndim == 2 and result.dtype in (np.uint8, np.uint16):
        dst.write_colormap(1, classes.colormap(result.rio.nodata))
