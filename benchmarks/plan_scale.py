"""What ``segment`` costs the client before anything runs, as the scene grows (run by hand).

    .venv/bin/python benchmarks/plan_scale.py [--sizes 100000 300000 1000000] [--chunks 2048 5120]
    .venv/bin/python benchmarks/plan_scale.py --write [--sizes 300000 1000000]

Each size runs in a fresh process: a lazy ``(3, n, n)`` uint8 dask array of zeros (no disk), ``segment`` with
a 5 x 5 model (tile 256, overlap 64), then one 1000 x 1000 px window computed. Reported: the seconds
``segment`` takes to return and the process's peak RSS then (torch and dask imported: about 550 MB before any
graph), the window's seconds and the peak RSS after it (a chunk's float64 accumulator is most of that). A
size the client refuses prints the refusal.

``--progress``: what the tile bar's count costs the client on a zarr write's graph
(``progress.tile_counts``): one entry a chunk, from the plan, never a task made or read, so its cost grows
with the chunks, not the tiles (``--chunks 4096`` for the issue's figures). It runs on earlier commits too.

``--write``: what a cluster write costs the client before and as it runs, without a cluster: the zarr store's
template (``to_zarr(compute=False)``), then every wave planned, lazily (``wave_plan.lazy_waves``, as
``waves.compute`` does) and, up to 300,000 px, from the whole graph (``plan_waves``) for comparison.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import time


def one(size: int, chunks: int) -> str:
    """One row, measured in this process."""
    import dask.array as da

    import seamless_dask as sd
    from seamless_dask.testing import Brightness

    image = da.zeros((3, size, size), dtype="uint8", chunks=(3, chunks, chunks))
    start = time.perf_counter()
    try:
        labels = sd.segment(
            image, Brightness(), tile_size=256, overlap=64, num_classes=2, weights="trust"
        )
    except sd.SeamlessError as error:
        return f"| {size:,} | {chunks} | refused: {str(error)[:90]}... | | | |"
    planned = time.perf_counter() - start
    planned_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    labels[:1000, :1000].compute()
    window = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tiles = sd.plan((size, size), tile_size=256, overlap=64, chunks=chunks).grid.n_tiles
    return f"| {size:,} ({tiles:,} tiles) | {chunks} | {planned:.2f} | {planned_rss:.0f} | {window:.2f} | {rss:.0f} |"


def one_write(size: int, planner: str) -> str:
    """One ``--write`` row, measured in this process."""
    import os
    import tempfile

    import dask.array as da
    import xarray as xr

    import seamless_dask as sd
    from seamless_dask.cluster import wave_plan
    from seamless_dask.testing import Brightness

    image = xr.DataArray(
        da.zeros((3, size, size), dtype="uint8", chunks=(3, 2048, 2048)), dims=("band", "y", "x")
    )
    labels = sd.segment(image, Brightness(), tile_size=256, overlap=64, num_classes=2)
    start = time.perf_counter()
    writes = sd.to_zarr(labels, os.path.join(tempfile.mkdtemp(), "labels.zarr"), compute=False)
    template, template_rss = time.perf_counter() - start, _rss()
    start = time.perf_counter()
    graph, first = writes.__dask_graph__(), float("nan")
    if planner == "whole":
        count = len(wave_plan.plan_waves(graph, writes.key, 4).waves)  # type: ignore[union-attr]
    else:
        waves = iter(wave_plan.lazy_waves(graph, writes.key, 4))  # type: ignore[arg-type]
        next(waves)
        first = time.perf_counter() - start
        count = 1 + sum(1 for _ in waves)
    planned = time.perf_counter() - start
    return (
        f"| {size:,} | {planner} | {template:.1f} | {template_rss:.0f} | {count} | {first:.2f} | {planned:.1f} | "
        f"{_rss():.0f} |"
    )


def one_progress(size: int, chunks: int) -> str:
    """One ``--progress`` row, measured in this process."""
    import dask.array as da
    import xarray as xr

    import seamless_dask as sd
    from seamless_dask.testing import Brightness

    try:
        from seamless_dask.cluster import progress
    except ImportError:  # before the house was regrouped
        from seamless_dask import progress  # type: ignore[no-redef]

    image = xr.DataArray(
        da.zeros((3, size, size), dtype="uint8", chunks=(3, chunks, chunks)),
        dims=("band", "y", "x"),
    )
    labels = sd.segment(
        image, Brightness(), tile_size=256, overlap=64, num_classes=2, chunks=chunks
    )
    writes = sd.to_zarr(labels, "memory://progress.zarr", compute=False)
    before = _rss()
    start = time.perf_counter()
    counts = progress.tile_counts(writes)
    seconds = time.perf_counter() - start
    return (
        f"| {size:,} | {chunks} | {len(counts):,} | {sum(counts.values()):,} | {seconds:.3f} | "
        f"{_rss() - before:.0f} |"
    )


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Print the table, one fresh process per row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--chunks", type=int, nargs="+", default=[2048, 5120])
    parser.add_argument(
        "--write", action="store_true", help="a zarr write's template and wave planning"
    )
    parser.add_argument(
        "--progress", action="store_true", help="the tile bar's count on a write's graph"
    )
    parser.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--one-progress", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--one-write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one(*args.one))
        return
    if args.one_progress:
        print(one_progress(*args.one_progress))
        return
    if args.one_write:
        print(one_write(int(args.one_write[0]), args.one_write[1]))
        return
    print(
        f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    if args.write:
        _write_table(args.sizes)
        return
    if args.progress:
        header = "| scene (px) | chunks | entries | tiles | tile_counts (s) | RSS added (MB) |"
        _table(header, "--one-progress", args.sizes, args.chunks)
        return
    header = (
        "| scene (px) | chunks | segment returns (s) | peak RSS then (MB) | 1000 px window (s) | "
        "peak RSS (MB) |"
    )
    _table(header, "--one", args.sizes, args.chunks)


def _table(header: str, flag: str, sizes: list[int], chunk_sizes: list[int]) -> None:
    """The table under ``header``: a row a size and chunk size, each from a fresh process."""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for size in sizes:
        for chunks in chunk_sizes:
            row = subprocess.run(
                [sys.executable, __file__, flag, str(size), str(chunks)],
                check=False,
                capture_output=True,
                text=True,
            )
            print(row.stdout.strip() or f"| {size:,} | {chunks} | failed: {row.stderr[-200:]} |")


def _write_table(sizes: list[int]) -> None:
    columns = [
        "scene (px)",
        "planner",
        "template (s)",
        "RSS then (MB)",
        "waves",
        "first wave (s)",
        "all waves (s)",
    ]
    print("| " + " | ".join([*columns, "peak RSS (MB)"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        for planner in ("whole", "lazy") if size <= 300_000 else ("lazy",):
            row = subprocess.run(
                [sys.executable, __file__, "--one-write", str(size), planner],
                check=False,
                capture_output=True,
                text=True,
            )
            print(
                row.stdout.strip()
                or f"| {size:,} | {planner} | failed: {row.stderr.strip()[-200:]} | | | | | |"
            )


if __name__ == "__main__":
    main()
