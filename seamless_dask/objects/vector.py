"""Polygons written to GeoParquet, GeoPackage and FlatGeobuf (pyogrio), for GDAL and QGIS: a lazy
frame of :func:`~seamless_dask.objects.shapes.polygons` chunk by chunk into one file, anything else
as it is; and the checks that keep a write from replacing a file seamless_dask did not make.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
import pandas as pd

from ..exceptions import OptionError
from .shapes import PLANS, Finish, WritePlan, border_of, merged_of, whole_of

DRIVERS = {"gpkg": "GPKG", "fgb": "FlatGeobuf"}  # what pyogrio writes, by suffix


def remove_written_vector(path: str, *, check_only: bool = False) -> None:
    """Delete a vector file that ``to_vector`` wrote (its ``id``, ``class`` and ``area_px`` columns
    say so); refuse anything else, which seamless_dask did not make (``check_only``: refuse, and
    delete nothing).
    """
    import os

    if not os.path.exists(path):
        return
    try:
        if str(path).lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            fields = set(pq.read_schema(path).names)
        else:
            import pyogrio

            fields = set(pyogrio.read_info(path)["fields"])
    except Exception:  # unreadable: not ours either
        fields = set()
    if not {"id", "class", "area_px"} <= fields or os.path.isdir(path):
        raise OptionError(
            f"{path!r} exists and is not polygons seamless_dask wrote (no id, class and area_px "
            "columns): it is not replaced; give another path or move it away"
        )
    if not check_only:
        os.remove(path)


def to_vector(frame: Any, path: str, *, layer: str | None = None) -> str:
    """Write polygons to GeoParquet (``.parquet``), GeoPackage (``.gpkg``) or FlatGeobuf (``.fgb``),
    with the CRS and class names, for GDAL/QGIS (pyogrio writes the last two).

    A lazy frame of ``polygons(..., lazy=True)`` is written a chunk at a time, by the workers, into
    one file of any of the three (memory bounded by the chunks in flight and the pieces that cross
    a border); any other lazy frame a partition at a time: GeoParquet as one file a partition in a
    folder (dask-geopandas), GeoPackage and FlatGeobuf appended to one file.
    """
    suffix = str(path).rsplit(".", 1)[-1].lower()
    if suffix not in ("parquet", "gpkg", "fgb"):
        raise OptionError(
            f"{path!r}: write polygons to .parquet (GeoParquet), .gpkg (GeoPackage) or .fgb (FlatGeobuf)"
        )
    lazy = hasattr(frame, "npartitions")
    plan = PLANS.get(getattr(frame, "_name", "")) if lazy else None
    if plan is not None and "://" not in str(path):
        _streamed(plan, str(path), suffix, layer)
        return str(path)
    if suffix == "parquet":
        frame.to_parquet(path)  # a lazy frame: a file a partition, each written by its task
    elif lazy:
        _append_partitions(frame, str(path), suffix, layer)
    else:
        frame.to_file(path, **_gdal_options(suffix, layer))
    return str(path)


def _gdal_options(suffix: str, layer: str | None) -> dict[str, Any]:
    return {"driver": DRIVERS[suffix], "engine": "pyogrio", **({"layer": layer} if layer else {})}


def _append_partitions(frame: Any, path: str, suffix: str, layer: str | None) -> None:
    """A lazy frame into one GeoPackage or FlatGeobuf: its partitions computed in one graph (each
    chunk read once) into GeoParquet parts in a folder beside ``path``, which the workers must see,
    then appended one part at a time (``_joined_parts``), the folder removed.
    """
    import os
    import shutil
    import tempfile

    parts = tempfile.mkdtemp(prefix=".seamless-parts-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        frame.to_parquet(parts, write_index=False)
        files = sorted(
            (f for f in os.listdir(parts) if f.endswith(".parquet")),
            key=lambda f: int("".join(c for c in f if c.isdigit()) or 0),
        )
        _joined_parts([os.path.join(parts, f) for f in files], path, suffix, layer)
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _streamed(plan: WritePlan, path: str, suffix: str, layer: str | None) -> None:
    """``plan``'s frame into one file at ``path``: each chunk's whole objects written as a GeoParquet
    part by the task that made them, into a folder beside ``path`` (which the workers must see),
    the pieces that cross a border kept on the workers and merged into the last part, then the
    parts joined into ``path`` one at a time (for GeoPackage and FlatGeobuf, GDAL writes from one
    process); the folder removed.
    """
    import os
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=".seamless-parts-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        names = [os.path.join(folder, f"part.{k:07d}.parquet") for k in range(len(plan.blocks) + 1)]
        written = [
            dask.delayed(_write_whole)(b, plan.finish, name)
            for b, name in zip(plan.blocks, names[:-1], strict=True)
        ]
        border = [dask.delayed(border_of)(b) for b in plan.blocks]
        # the chunks first, in a graph of their own: dask would otherwise order the merge first
        written, border = dask.persist(written, border)
        merged = dask.delayed(_write_merged)(border, plan.finish, names[-1])
        counts = dask.compute(*written, merged)
        parts = [n for n, c in zip(names, counts, strict=True) if c]
        if not parts:
            parts = [names[-1]]  # no object: the merged part, empty, says the columns
        _joined_parts(parts, path, suffix, layer)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _write_whole(block: np.ndarray, finish: Finish, path: str) -> int:
    _folder_seen(path)
    frame = whole_of(block, finish)
    if len(frame):
        frame.to_parquet(path, index=False)
    return len(frame)


def _write_merged(border: list[pd.DataFrame], finish: Finish, path: str) -> int:
    _folder_seen(path)
    frame = merged_of(border, finish)
    frame.to_parquet(path, index=False)  # even empty: the columns of a scene without objects
    return len(frame)


def _folder_seen(path: str) -> None:
    import os

    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise OSError(
            f"this worker does not see {folder!r}, where to_vector writes each chunk's polygons "
            "before joining them into the file: write beside a folder every worker sees, or to an "
            "object store (s3://bucket/objects.parquet)"
        )


def _joined_parts(parts: list[str], path: str, suffix: str, layer: str | None) -> None:
    """GeoParquet parts into one file at ``path``, a part at a time (GDAL's formats appended from
    this process, an empty part only where it is the first: it says the columns).
    """
    import geopandas

    if suffix != "parquet":
        written = False
        for name in parts:
            part = geopandas.read_parquet(name)
            if len(part) or not written:
                part.to_file(
                    path, **_gdal_options(suffix, layer), **({"mode": "a"} if written else {})
                )
                written = True
        return
    import json

    import pyarrow.parquet as pq

    schema = pq.read_schema(parts[0])
    geo = json.loads(schema.metadata[b"geo"])
    types: set[str] = set()
    for name in parts:  # the file's geometry types: every part's
        column = json.loads(pq.read_schema(name).metadata[b"geo"])["columns"]["geometry"]
        types.update(column.get("geometry_types", []))
    geo["columns"]["geometry"]["geometry_types"] = sorted(types)
    geo["columns"]["geometry"].pop("bbox", None)  # optional; a part's would be wrong for the file
    schema = schema.with_metadata({**schema.metadata, b"geo": json.dumps(geo).encode()})
    with pq.ParquetWriter(path, schema) as out:
        for name in parts:
            out.write_table(pq.read_table(name).cast(schema))


def written_count(path: str) -> int:
    """The objects in a vector file ``to_vector`` wrote (what is in the file, not what was meant)."""
    if str(path).lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    import pyogrio

    return int(pyogrio.read_info(path, force_feature_count=True)["features"])
