"""Peak memory as the image grows (I4): synthetic COGs of 10000, 20000 and 40000 px square (run by hand).

    .venv/bin/python benchmarks/memory_scale.py [--sizes 10000 20000 40000] [--data /tmp/seamless-bench]

Each size: a 3-band uint8 COG is made on disk (once; reused on later runs), then segmented by the CLI
exactly as a user runs it (a LocalCluster sized to the machine) with a cheap model (a 1x1 conv, so that
the pipeline, not the model, is what is measured) to a labels zarr. A sampler polls the RSS of the whole
process tree (CLI, scheduler, worker processes) every 0.2 s; the peak is reported with wall time and
tiles per second. Goal: peak <= 2 GB and flat (40000 px <= 1.2 x 10000 px).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TILE, OVERLAP = 512, 64


def cheap_model():
    """'memory_scale:cheap_model': a 1x1 conv, 3 bands to 2 classes, inputs scaled from 0-255."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 1)
    return torch.nn.Sequential(conv).eval()


def make_cog(path: Path, size: int) -> Path:
    """A 3-band uint8 COG of ``size`` px square, written block by block (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    if path.exists():
        return path
    scratch = path.with_suffix(".scratch.tif")
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32631",
        "transform": from_origin(300_000, 6_000_000, 10, 10), "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate", "BIGTIFF": "YES",
    }  # fmt: skip
    step = 2048
    with rasterio.open(scratch, "w", **profile) as dst:
        for y in range(0, size, step):
            h = min(step, size - y)
            yy = np.arange(y, y + h)[:, None]
            for x in range(0, size, step):
                w = min(step, size - x)
                xx = np.arange(x, x + w)[None, :]
                fields = ((yy // 300 + xx // 300) % 3 * 70 + 30).astype(np.uint8)
                texture = ((yy * 7 + xx * 13) % 23).astype(np.uint8)
                block = np.stack([fields + texture, fields, 200 - fields]).astype(np.uint8)
                dst.write(block, window=Window(x, y, w, h))
    cog_translate(scratch, path, cog_profiles.get("deflate"), in_memory=False, quiet=True,
                  config={"GDAL_NUM_THREADS": "ALL_CPUS"})  # fmt: skip
    scratch.unlink()
    return path


def peak_rss_of_tree(process, stop: threading.Event, out: list[int]) -> None:
    import psutil

    root = psutil.Process(process.pid)
    peak = 0
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            break
        time.sleep(0.2)
    out.append(peak)


def run_one(cog: Path, out_dir: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in bytes, tiles) of one CLI run on ``cog``."""
    import rasterio

    import seamless_dask as sd

    with rasterio.open(cog) as src:
        tiles = sd.TileGrid((src.height, src.width), TILE, OVERLAP).n_tiles
    target = out_dir / (cog.stem + "-labels.zarr")
    shutil.rmtree(target, ignore_errors=True)
    command = [
        sys.executable, "-m", "seamless_dask.cli", "segment", str(cog), str(target),
        "--model", "memory_scale:cheap_model", "--tile-size", str(TILE), "--overlap", str(OVERLAP),
        "--num-classes", "2", "--normalize", "0/255", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    stop, peak = threading.Event(), []
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    sampler = threading.Thread(target=peak_rss_of_tree, args=(process, stop, peak))
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"the CLI failed on {cog} (exit {code})")
    shutil.rmtree(target, ignore_errors=True)
    return seconds, peak[0], tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 40_000])
    parser.add_argument("--data", type=Path, default=Path("/tmp/seamless-bench"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        t = time.perf_counter()
        cog = make_cog(args.data / f"synthetic-{size}.tif", size)
        print(f"{size} px COG ready ({time.perf_counter() - t:.0f} s)", flush=True)
        seconds, peak, tiles = run_one(cog, args.data)
        rows.append((size, tiles, seconds, peak))
        print(f"{size} px: {tiles} tiles in {seconds:.1f} s, peak RSS {peak / 2**30:.2f} GiB", flush=True)
    import dask
    import torch

    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, dask {dask.__version__}; tile {TILE}, overlap {OVERLAP}, 1x1 conv, CLI "
          "with its default LocalCluster, labels to zarr\n")  # fmt: skip
    print("| image (px) | tiles | wall (s) | tiles/s | peak RSS, process tree (GiB) | peak / smallest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size, tiles, seconds, peak in rows:
        ratio = peak / rows[0][3]
        row = [f"{size} x {size}", tiles, f"{seconds:.1f}", f"{tiles / seconds:.1f}"]
        row += [f"{peak / 2**30:.2f}", f"{ratio:.2f}"]
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
