"""End to end on a GPU: a scene to zarr on the default LocalCluster, beside the bare model loop (by hand).

    python benchmarks/gpu_e2e.py [--size 16000] [--chunks 2048] [--batch 32] [--json FILE]

The scene is made lazily (smooth blobs from each chunk's coordinates, so no input file is read and
the run measures segmenting and writing), segmented by the U-Net of ``peers.py`` (tile 256, overlap
64, "trim") on ``seamless_dask.cluster.local_cluster()`` (one worker per GPU, ``GPU=1``) and written
to a zarr store under /tmp. Reported: wall, tiles/s against the bare loop (stack, pinned copy, run,
copy back; no blending) on a 4096 px crop at the same batch, the GPU's utilisation and memory sampled
by nvidia-smi every 200 ms, and the peak RSS of the client and the workers (psutil, every 200 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import torch
import xarray as xr
from gpu import bare  # type: ignore[import-not-found]
from peers import build_model  # type: ignore[import-not-found]

import seamless_dask as sd
from seamless_dask import io
from seamless_dask.cluster import local_cluster

TILE, OVERLAP = 256, 64


def blobs(block: np.ndarray, block_info=None) -> np.ndarray:
    """Three bands of smooth structure at several scales, a function of the pixels' coordinates."""
    (_, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    bands = [
        np.sin(y / s + k) * np.cos(x / (1.3 * s) - k) for k, s in enumerate((9.0, 37.0, 151.0))
    ]
    return (0.5 + 0.5 * np.stack(bands) / 1.0).astype(np.float32)


class Sampler:
    """nvidia-smi's utilisation and memory, and the RSS of this process and its children, sampled."""

    def __init__(self) -> None:
        self.gpu: list[tuple[float, float]] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._smi = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
             "-lms", "200"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        self._threads = [
            threading.Thread(target=f, daemon=True) for f in (self._read_smi, self._read_rss)
        ]
        for t in self._threads:
            t.start()

    def _read_smi(self) -> None:
        for line in self._smi.stdout or ():
            util, mem = (float(v) for v in line.split(","))
            self.gpu.append((util, mem))

    def _read_rss(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            procs = [me, *me.children(recursive=True)]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.rss.append(total)

    def stop(self) -> dict:
        self._stop.set()
        self._smi.terminate()
        busy = [u for u, _ in self.gpu]
        return {
            "gpu_util_mean": float(np.mean(busy)) if busy else None,
            "gpu_util_median": float(np.median(busy)) if busy else None,
            "gpu_mem_peak_mib": max((m for _, m in self.gpu), default=None),
            "host_rss_peak_gib": max(self.rss, default=0) / 2**30,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16000)
    parser.add_argument("--chunks", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gpu-e2e.zarr"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/gpu_e2e.py needs a CUDA GPU (torch.cuda.is_available() is False)"
        )
    shutil.rmtree(args.out, ignore_errors=True)
    n = args.size
    model = build_model("unet").eval()

    crop = da.map_blocks(blobs, da.empty((3, 4096, 4096), chunks=(3, 4096, 4096), dtype=np.float32),
                         dtype=np.float32).compute()  # fmt: skip
    gpu_model = build_model("unet").cuda().eval()
    bare(crop[:, :1024, :1024], gpu_model, TILE, 8, "none")
    bare_rate = bare(crop, gpu_model, TILE, args.batch, "none")
    del gpu_model
    torch.cuda.empty_cache()

    pixels = da.map_blocks(blobs, da.empty((3, n, n), chunks=(3, args.chunks, args.chunks), dtype=np.float32),
                           dtype=np.float32)  # fmt: skip
    scene = xr.DataArray(pixels, dims=("band", "y", "x"),
                         coords={"y": np.arange(n) + 0.5, "x": np.arange(n) + 0.5})  # fmt: skip
    tiles = sd.TileGrid((n, n), TILE, OVERLAP).n_tiles
    sampler = Sampler()
    start = time.perf_counter()
    with local_cluster(dashboard=False) as client:
        workers = client.scheduler_info()["workers"]
        ready = time.perf_counter()
        labels = sd.segment(scene, model, tile_size=TILE, overlap=OVERLAP, batch_size=args.batch,
                            chunks=args.chunks)  # fmt: skip
        io.to_zarr(labels, args.out, progress=False)
        done = time.perf_counter()
    seen = sampler.stop()
    written = xr.open_zarr(args.out, mask_and_scale=False)["labels"]
    counts = np.bincount(written.data[::97, ::97].compute().ravel(), minlength=3).tolist()
    record = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "size": n,
        "chunks": args.chunks, "batch": args.batch, "tiles": tiles,
        "workers": {k: {"nthreads": w["nthreads"], "resources": w["resources"]} for k, w in workers.items()},
        "cluster_start_s": ready - start, "job_wall_s": done - ready,
        "tiles_per_s": tiles / (done - ready), "bare_tiles_per_s": bare_rate,
        "ratio_to_bare": tiles / (done - ready) / bare_rate, "label_counts_sampled": counts, **seen,
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
