"""Objects from a class map at scale (issue 29, item 7): labelling and polygonising on a local cluster
beside the whole-image tools, with the client's and the workers' peak memory.

    .venv/bin/python benchmarks/objects.py [--sizes 10000 40000] [--chunk 1024] [--workers 2]
                                           [--whole-up-to 10000]

Each size: a class map made lazily, chunk by chunk, and written to zarr (what is timed reads it):
white noise smoothed by a Gaussian of sigma 4 px through ``map_overlap``, cut at its +-0.43 sigma
levels (class 1 below, class 2 above, 0 between, a third each: objects of every size crossing every
chunk border, none spanning the scene); timed on a ``LocalCluster`` of ``--workers`` processes of one thread:

- ``sd.instances`` written to zarr (``sd.to_zarr``): every id computed and stored;
- ``sd.polygons(lazy=True)`` written to one GeoParquet file (``sd.to_vector``: each chunk's whole
  objects written by the task that made them, the objects that cross borders merged last);
- up to ``--whole-up-to`` px, the whole-image tools on the map in memory, in this process:
  ``scipy.ndimage.label`` per class and ``rasterio.features.shapes``.

Peak memory: RSS sampled every 0.1 s, each step on a fresh cluster: the client's and the
workers' (summed) above what they held when the step began.
"per core" ratios multiply our wall time by the workers (each of one core) before dividing by the
one-core whole-image tool's. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import psutil
import pyarrow.parquet as pq
from rasterio import features
from scipy import ndimage

import seamless_dask as sd

SIGMA = 4.0
LEVEL = 0.4307  # the normal's 1/3 and 2/3 quantiles, in units of the smoothed noise's std


def class_map(size: int, chunk: int) -> da.Array:
    noise = da.random.RandomState(0).normal(size=(size, size), chunks=chunk)
    smooth = noise.map_overlap(
        ndimage.gaussian_filter, depth=int(4 * SIGMA), boundary="reflect", sigma=SIGMA
    )
    level = LEVEL / (2 * np.sqrt(np.pi) * SIGMA)  # the std of white noise smoothed in 2-D
    return da.where(smooth < -level, 1, da.where(smooth > level, 2, 0)).astype("uint8")


class Peaks:
    """The peak RSS of this process and of the workers' processes (summed), each above where it
    started.
    """

    def __init__(self, pids: list[int]) -> None:
        self.me, self.workers = psutil.Process(), [psutil.Process(p) for p in pids]
        self.base = self.me.memory_info().rss
        self.worker_base = sum(p.memory_info().rss for p in self.workers)
        self.client = self.worker = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.client = max(self.client, self.me.memory_info().rss - self.base)
            now = sum(p.memory_info().rss for p in self.workers) - self.worker_base
            self.worker = max(self.worker, now)

    def __enter__(self) -> Peaks:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def _warm() -> None:
    import dask_geopandas  # noqa: F401
    import geopandas  # noqa: F401
    import rasterio.features  # noqa: F401
    import scipy.ndimage  # noqa: F401

    import seamless_dask  # noqa: F401


def measured(fn, workers: int):
    """``fn()`` timed on a fresh ``seamless_dask.cluster.local_cluster`` (so that no step inherits
    another's heap; its workers' glibc mmap threshold is set, as the CLI's are: a plain
    ``LocalCluster``'s nannies pin it at 128 KiB, which maps every large array afresh).
    """
    from seamless_dask.cluster import local_cluster

    with (
        local_cluster(n_workers=workers, threads_per_worker=1, memory_limit="10GiB") as client,
        dask.config.set(scheduler=client),
    ):
        pids = list(client.run(os.getpid).values())
        client.run(_warm)  # imports paid before the clock starts, as on a cluster that ran a job
        with Peaks(pids) as peaks:
            start = time.perf_counter()
            out = fn()
            wall = time.perf_counter() - start
    return wall, peaks.client / 2**20, peaks.worker / 2**20, out


def whole_image(lazy: da.Array) -> dict:
    labels = lazy.compute(scheduler="threads")
    start = time.perf_counter()
    count = sum(ndimage.label(labels == c)[1] for c in (1, 2))
    scipy_s = time.perf_counter() - start
    start = time.perf_counter()
    shapes = sum(1 for _ in features.shapes(labels, mask=labels > 0))
    return {"scipy": scipy_s, "shapes": time.perf_counter() - start, "count": count,
            "shapes_count": shapes}  # fmt: skip


def run(size: int, chunk: int, workers: int, whole: bool, scratch: Path) -> dict:
    written = scratch / f"classes-{size}.zarr"
    with dask.config.set(scheduler="threads"):  # made once; what is timed reads it, as a job would
        class_map(size, chunk).to_zarr(str(written))
    lazy = da.from_zarr(str(written))
    row: dict = {"size": size}
    row["instances"] = measured(
        lambda: sd.to_zarr(sd.instances(lazy), scratch / f"ids-{size}.zarr"), workers
    )
    target = scratch / f"objects-{size}.parquet"
    row["polygons"] = measured(
        lambda: sd.to_vector(sd.polygons(lazy, lazy=True), str(target)), workers
    )
    row["objects"] = pq.ParquetFile(target).metadata.num_rows  # one file (to_vector)
    if whole:
        row.update(whole_image(lazy))
        assert row["objects"] == row["count"] == row["shapes_count"], row
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--whole-up-to", type=int, default=10000)
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, commit {commit}, {args.chunk} px chunks, "
          f"{args.workers} worker processes of 1 thread")  # fmt: skip
    print("| px | objects | sd.instances -> zarr | scipy label (ours x cores / scipy) "
          "| sd.polygons -> GeoParquet | rasterio shapes (ours x cores / shapes) "
          "| objects/s (polygons) | peak client / workers, instances | the same, polygons |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            r = run(size, args.chunk, args.workers, size <= args.whole_up_to, Path(scratch))
            (ids_s, ids_c, ids_w, _), (pol_s, pol_c, pol_w, _) = r["instances"], r["polygons"]
            n = args.workers
            scipy = (f"{r['scipy']:.1f} s ({ids_s * n / r['scipy']:.1f} x)" if "scipy" in r
                     else "does not fit")  # fmt: skip
            shapes = (f"{r['shapes']:.1f} s ({pol_s * n / r['shapes']:.1f} x)" if "shapes" in r
                      else "does not fit")  # fmt: skip
            print(f"| {size:,} | {r['objects']:,} | {ids_s:.1f} s | {scipy} | {pol_s:.1f} s | {shapes} "
                  f"| {r['objects'] / pol_s:,.0f} | {ids_c:,.0f} / {ids_w:,.0f} MiB "
                  f"| {pol_c:,.0f} / {pol_w:,.0f} MiB |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
