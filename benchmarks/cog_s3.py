"""A COG written to S3 by the workers (issue 32, item 1) beside the same COG written to a local path, on
one local cluster: wall time and the peak memory of the client and of the workers.

    .venv/bin/python benchmarks/cog_s3.py [--size 10000] [--chunk 2048] [--workers 2]

The S3 is moto's server in this process, on loopback (what the tests use; a real bucket is farther
and faster). Each case is a lazy raster read from a zarr store written first (so that what is timed
is the write, not the making of the pixels): a ``(y, x)`` uint8 class map (``objects.py``'s
smoothed-noise classes) and a ``(class, y, x)`` float32 map of two smooth bands, at ``--size`` and
half of it. Local: the workers write windows of a scratch GeoTIFF, rio-cogeo lays it out
(``cog_translate``); S3: the workers compress the tiles of every level and upload them as parts
(``io/_cog_parts.py``). Both COGs are read back and compared pixel for pixel. Memory as in
``objects.py`` (RSS sampled every 0.1 s above each step's start, a fresh cluster a step). Prints a
markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
from objects import class_map, measured
from scipy import ndimage

import seamless_dask as sd


def smooth_bands(size: int, chunk: int) -> da.Array:
    noise = da.random.RandomState(1).normal(size=(size, size), chunks=chunk)
    smooth = noise.map_overlap(ndimage.gaussian_filter, depth=16, boundary="reflect", sigma=4)
    p = 1 / (1 + da.exp(-40 * smooth))
    return da.stack([1 - p, p]).astype("float32")


def geo(data: da.Array, nodata: float) -> xr.DataArray:
    size = data.shape[-1]
    dims = ("class", "y", "x") if data.ndim == 3 else ("y", "x")
    coords = {"y": 5e6 - 10 * np.arange(size) - 5, "x": 3e5 + 10 * np.arange(size) + 5}
    return (
        xr.DataArray(data, dims=dims, coords=coords, name="r")
        .rio.write_crs(32631)
        .rio.write_nodata(nodata)
    )


def stored(data: da.Array, nodata: float, folder: Path, chunk: int) -> xr.DataArray:
    """``data`` written to zarr once, and opened lazily in chunks of ``chunk``."""
    path = folder / f"input-{data.ndim}.zarr"
    geo(data, nodata).to_dataset().to_zarr(path, mode="w")
    return geo(xr.open_zarr(path)["r"].data.rechunk(chunk), nodata)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    import s3fs

    s3 = s3fs.S3FileSystem(skip_instance_cache=True)
    s3.mkdir("bucket")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        cases = [
            ("class map uint8", args.size, lambda n: class_map(n, args.chunk), 255),
            ("2 bands float32", args.size // 2, lambda n: smooth_bands(n, args.chunk), np.nan),
        ]
        for name, size, make, nodata in cases:
            raster = stored(make(size), nodata, folder, args.chunk)
            local = folder / f"{name[:5]}.tif"
            url = f"s3://bucket/{name[:5]}.tif"
            wall_l, client_l, workers_l, _ = measured(
                functools.partial(sd.to_cog, raster, local), args.workers
            )
            wall_s, client_s, workers_s, _ = measured(
                functools.partial(sd.to_cog, raster, url), args.workers
            )
            s3.invalidate_cache()
            s3.get(url.removeprefix("s3://"), str(folder / "back.tif"))
            with rasterio.open(folder / "back.tif") as a, rasterio.open(local) as b:
                same = all(
                    np.array_equal(a.read(window=w), b.read(window=w), equal_nan=True)
                    for _, w in a.block_windows(1)
                )
                mib = os.path.getsize(folder / "back.tif") / 2**20, os.path.getsize(local) / 2**20
            rows.append(
                (name, size, wall_l, wall_s, client_l, client_s, workers_l, workers_s, *mib, same)
            )
            print(rows[-1], flush=True)
    server.stop()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"\n{time.strftime('%Y-%m-%d')}, {machine}, commit {commit}, "
          f"{args.workers} workers of one thread, chunks {args.chunk}\n")  # fmt: skip
    print(
        "| raster | px | local COG s | S3 COG s (parts) | S3 / local | peak client MiB local / S3 | "
        "peak workers MiB local / S3 | MiB S3 / local | pixels equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, wl, ws, cl, cs, wol, wos, ms, ml, same in rows:
        print(f"| {name} | {size:,} | {wl:.1f} | {ws:.1f} | {ws / wl:.2f} | {cl:.0f} / {cs:.0f} | "
              f"{wol:.0f} / {wos:.0f} | {ms:.1f} / {ml:.1f} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
