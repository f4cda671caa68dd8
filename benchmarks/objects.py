"""Objects from a class map (issue 29, item 7): labelling and polygonising beside the whole-image tools.

    .venv/bin/python benchmarks/objects.py [--sizes 4000 10000] [--chunk 1024] [--polygons-up-to 4000]

Each size: a class map of 3 classes cut from smoothed noise (objects of every size, crossing every chunk
border), chunked at ``--chunk`` px; timed once each, in one run, on dask's threads: ``scipy.ndimage.label``
per class on the whole image, ``sd.instances`` (computed), dask-image's ``ndmeasure.label`` of one class,
``rasterio.features.shapes`` on the whole image and ``sd.polygons`` (up to ``--polygons-up-to`` px). Prints a
markdown table for docs/benchmarks.md: seconds, objects/s and the ratios to scipy and rasterio.
"""

from __future__ import annotations

import argparse
import functools
import platform
import subprocess
import time

import dask
import dask.array as da
import numpy as np
from rasterio import features
from scipy import ndimage

import seamless_dask as sd


def class_map(size: int) -> np.ndarray:
    noise = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(size, size)), 4)
    return np.digitize(noise, np.quantile(noise, [1 / 3, 2 / 3])).astype("uint8")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(size: int, chunk: int, polygons: bool) -> dict:
    labels = class_map(size)
    lazy = da.from_array(labels, chunk)
    scipy_s, _ = timed(lambda: [ndimage.label(labels == c) for c in (1, 2)])
    ours_s, ids = timed(lambda: sd.instances(lazy).compute().values)
    objects = len(np.unique(ids)) - 1
    row = {"size": size, "objects": objects, "scipy": scipy_s, "instances": ours_s}
    try:
        from dask_image import ndmeasure

        row["dask-image"], _ = timed(lambda: np.asarray(ndmeasure.label(lazy == 1)[0]))
    except ImportError:
        row["dask-image"] = float("nan")
    if polygons:
        row["shapes"], _ = timed(lambda: list(features.shapes(labels, mask=labels > 0)))
        row["polygons"], frame = timed(functools.partial(sd.polygons, lazy))
        assert len(frame) == objects
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 10000])
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--polygons-up-to", type=int, default=4000)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, commit {commit}, "
          f"{args.chunk} px chunks, dask threads")  # fmt: skip
    print("| px | objects | scipy label | sd.instances (x scipy) | dask-image label, 1 class "
          "| rasterio shapes | sd.polygons (x shapes) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with dask.config.set(scheduler="threads"):
        for size in args.sizes:
            r = run(size, args.chunk, size <= args.polygons_up_to)
            polys = (f"{r['shapes']:.1f} s | {r['polygons']:.1f} s ({r['polygons'] / r['shapes']:.0f} x)"
                     if "polygons" in r else "- | -")  # fmt: skip
            print(f"| {size:,} | {r['objects']:,} | {r['scipy']:.2f} s | {r['instances']:.2f} s "
                  f"({r['instances'] / r['scipy']:.1f} x) | {r['dask-image']:.1f} s | {polys} |")  # fmt: skip


if __name__ == "__main__":
    main()
