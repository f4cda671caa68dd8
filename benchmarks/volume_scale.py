"""A volume larger than the workers' memory, lazily on a local cluster (run by hand).

    .venv/bin/pip install -e ".[bench]"      # MONAI; it does not pull a new torch
    .venv/bin/python benchmarks/volume_scale.py [--shape 512,2048,2048] [--memory-limit 3GiB]

A ``Z x Y x X`` uint8 volume (smoothed noise) is written once to a zarr store on local disk (chunks
64 x 256 x 256). Then, each in its own process:

- ``bare``: the MONAI 3-D UNet of ``volumes.py`` over the same tiles (64^3, overlap 0.25, batch 4), no
  blending: a z slab of 64 slices read at a time, its tiles run, nothing kept (the floor);
- ``seamless``: ``sd.to_zarr(segment(volume, net, tile_size=(64, 64, 64), overlap=0.25,
  normalize=(0, 255)), out)`` on ``seamless_dask.cluster.local_cluster`` (a ``LocalCluster``) of 2
  worker processes of 1 thread, each with ``--memory-limit`` (their sum below the volume's float32
  size): the write goes out in waves of chunk rows, so what the workers hold is a slab of chunks
  (all z and x, one row of y), not the volume. What waits is sums (3 classes and the weight): a
  chunk of 144^3 (the default, two tiles moved onto the lattice) owes itself 71 MiB of float64 and
  each neighbour a face of 4 MiB of float32, 56 chunks a row at 512 x 2048 x 2048.

Reported: wall, time / bare, the peak RSS of the client and of the workers (their processes summed,
sampled every 0.5 s), and the label voxels written per second. Both use 2 cores (torch threads: 2 for
``bare``, 1 a worker).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from peers import _commit  # type: ignore[import-not-found]

HERE = Path(__file__).resolve().parent
TILE = 64


def build_model():
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Smoothed uint8 noise, written slab by slab (never whole in memory)."""
    import zarr
    from scipy.ndimage import uniform_filter

    if (path / ".done").exists():
        return
    store = zarr.open_array(str(path), mode="w", shape=shape, chunks=(64, 256, 256), dtype="uint8",
                            zarr_format=2)  # fmt: skip
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], 64):
        slab = rng.random((min(64, shape[0] - z), *shape[1:]), dtype=np.float32)
        slab = uniform_filter(slab, 5)
        store[z : z + len(slab)] = np.clip((slab - 0.5) * 8 * 255 + 128, 0, 255).astype(np.uint8)
    (path / ".done").touch()


class Sampler(threading.Thread):
    """Peak RSS of this process and of its children (the cluster's nannies and workers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.client = self.workers = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop.is_set():
            try:
                children = sum(c.memory_info().rss for c in me.children(recursive=True))
                self.client = max(self.client, me.memory_info().rss)
                self.workers = max(self.workers, children)
            except psutil.Error:
                pass
            time.sleep(0.5)


def bare(volume: Path) -> dict:
    import torch
    import zarr

    from seamless_dask.tiling.lattice import Lattice

    torch.set_num_threads(2)
    source = zarr.open_array(str(volume), mode="r")
    net = build_model()
    # the tiles segment runs (an in-memory tiler would hold a weight map of the whole volume)
    lattice = Lattice.build(source.shape, (TILE,) * 3, 0.25)
    zs, ys, xs = (axis.origins for axis in lattice.axes)
    plane = [(y, x) for y in ys for x in xs]
    start = time.perf_counter()
    with torch.no_grad():
        for z in zs:
            slab = torch.from_numpy(source[z : z + TILE].astype(np.float32) / 255)
            for first in range(0, len(plane), 4):
                batch = [slab[:, y : y + TILE, x : x + TILE] for y, x in plane[first : first + 4]]
                net(torch.stack(batch)[:, None])
    return {"seconds": time.perf_counter() - start, "tiles": lattice.n_tiles}


def seamless(volume: Path, out: Path, memory_limit: str) -> dict:
    import dask.array as da
    import xarray as xr

    import seamless_dask as sd
    from seamless_dask.cluster import local_cluster

    os.environ["OMP_NUM_THREADS"] = "1"  # the workers inherit it: 1 torch thread each
    data = xr.DataArray(da.from_zarr(str(volume)), dims=("z", "y", "x"))
    net = build_model()
    sampler = Sampler()
    with local_cluster(n_workers=2, threads_per_worker=1, torch_threads=1,
                       memory_limit=memory_limit, dashboard=False):  # fmt: skip
        sampler.start()
        start = time.perf_counter()
        labels = sd.segment(data, net, tile_size=(TILE,) * 3, overlap=0.25, normalize=(0, 255),
                            batch_size=4)  # fmt: skip
        written = sd.to_zarr(labels, out, overwrite=True)
        seconds = time.perf_counter() - start
        sampler.stop.set()
    stored = xr.open_zarr(out)["labels"]
    assert stored.shape == data.shape and written > 0
    return {"seconds": seconds, "client": sampler.client, "workers": sampler.workers,
            "chunks": written}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="512,2048,2048")
    parser.add_argument("--memory-limit", default="3GiB")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "seamless-vol")
    parser.add_argument(
        "--reuse-bare", action="store_true", help="keep the last bare.json of --data"
    )
    parser.add_argument("--child", choices=["bare", "seamless"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    volume = args.data / f"volume-{'x'.join(map(str, shape))}.zarr"
    if args.child == "bare":
        args.out.write_text(json.dumps(bare(volume)))
        return
    if args.child == "seamless":
        result = seamless(volume, args.data / "labels.zarr", args.memory_limit)
        args.out.write_text(json.dumps(result))
        return
    args.data.mkdir(parents=True, exist_ok=True)
    make_volume(volume, shape)  # type: ignore[arg-type]
    results = {}
    for method in ("bare", "seamless"):
        out = args.data / f"{method}.json"
        if method == "bare" and args.reuse_bare and out.exists():
            results[method] = json.loads(out.read_text())
            continue
        subprocess.run([sys.executable, __file__, "--child", method, "--shape", args.shape,
                        "--memory-limit", args.memory_limit, "--data", str(args.data),
                        "--out", str(out)], check=True)  # fmt: skip
        results[method] = json.loads(out.read_text())
    voxels = int(np.prod(shape))
    mib = 2**20
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, commit "
          f"{_commit()}; {args.shape.replace(',', ' x ')} uint8 ({voxels / 2**30:.1f} GiB, float32 "
          f"{4 * voxels / 2**30:.1f} GiB), {results['bare']['tiles']} tiles of {TILE}^3, overlap "
          f"0.25, batch 4; workers: 2 x 1 thread, memory_limit {args.memory_limit} each")  # fmt: skip
    bare_s, ours = results["bare"]["seconds"], results["seamless"]
    print("| method | wall (s) | time / bare | client peak (MiB) | workers peak (MiB) | Mvoxel/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| bare loop (z slabs, no blend, no write) | {bare_s:.0f} | 1.00 | | | "
          f"{voxels / bare_s / 1e6:.1f} |")  # fmt: skip
    print(f"| seamless_dask to_zarr on LocalCluster | {ours['seconds']:.0f} | "
          f"{ours['seconds'] / bare_s:.2f} | {ours['client'] / mib:.0f} | "
          f"{ours['workers'] / mib:.0f} | {voxels / ours['seconds'] / 1e6:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
