"""Volumes: seamless_dask beside MONAI's sliding_window_inference and the bare loop, in 3-D (run by hand).

    .venv/bin/pip install -e ".[bench]"      # MONAI; it does not pull a new torch
    .venv/bin/python benchmarks/volumes.py [--size 256] [--tile 64] [--repeats 1]

A MONAI 3-D UNet (channels 8-16-32, strides 2, one residual unit a level, 1 band in, 3 classes out) on a
``size``^3 float32 volume of smoothed noise, tile ``tile``^3, overlap 0.25 (MONAI's stride), batch 4, CPU.
Each method runs in its own process, so its peak RSS is its own:

- ``bare``: the model over the same tiles, no blending (the floor);
- ``whole``: the whole volume in one pass (the seam-free reference);
- ``monai-constant``, ``monai-gaussian``: MONAI ``sliding_window_inference``;
- ``seamless``: ``segment(volume, net, tile_size=(t, t, t), overlap=0.25, output="logits")``, lazily, on
  dask's threads, chunks of two tiles a side (``"trim"``);
- ``seamless-gaussian``: the same with MONAI's floored gaussian (its numbers);
- ``volume-tiler``: :class:`seamless_dask.VolumeTiler` in memory, MONAI's floored gaussian.

Reported: wall (median of ``--repeats``), time / bare, peak RSS, and the mean and max absolute error of the
logits against the whole-volume pass.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from peers import _commit, _peak_rss  # type: ignore[import-not-found]

METHODS = ["bare", "whole", "monai-constant", "monai-gaussian", "seamless", "seamless-gaussian",
           "volume-tiler"]  # fmt: skip


def build_model() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(3, 1, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()


def make_volume(size: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = np.random.default_rng(0).normal(size=(size, size, size)).astype(np.float32)
    return gaussian_filter(noise, 3)[None].astype(np.float32)


def run(method: str, volume: np.ndarray, net: torch.nn.Module, tile: int) -> np.ndarray | None:
    import dask.array as da
    from monai.inferers import sliding_window_inference

    import seamless_dask as sd
    from seamless_dask.tiling.weights import MONAI_FLOOR

    roi = (tile,) * 3
    monai_map = sd.TileWeights("gaussian", sigma=0.125, border_aware=False, floor=MONAI_FLOOR)
    x = torch.from_numpy(volume)[None]
    with torch.no_grad():
        if method == "bare":
            tiler = sd.VolumeTiler(volume.shape[1:], roi, 0.25)
            for start in range(0, tiler.n_tiles, 4):
                boxes = [tiler._box(o) for o in tiler.origins[start : start + 4]]
                net(torch.stack([x[0][(slice(None), *b)] for b in boxes]))
            return None
        if method == "whole":
            return net(x)[0].numpy()
        if method.startswith("monai-"):
            mode = method.removeprefix("monai-")
            return sliding_window_inference(x, roi, 4, net, 0.25, mode=mode)[0].numpy()
        if method == "volume-tiler":
            tiler = sd.VolumeTiler(volume.shape[1:], roi, 0.25, weights=monai_map)
            return tiler.run(x, net, batch_size=4)[0].numpy()
    weights = monai_map if method == "seamless-gaussian" else "trim"
    lazy = sd.segment(da.from_array(volume, chunks=(1, 2 * tile, 2 * tile, 2 * tile)), net,
                      tile_size=roi, overlap=0.25, weights=weights, output="logits", batch_size=4,
                      chunks=2 * tile)  # fmt: skip
    return lazy.compute()


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    volume = np.load(args.volume)
    net = build_model()
    run(args.method, volume[:, : args.tile, : args.tile, : args.tile], net, args.tile)  # warm up
    seconds, out = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = run(args.method, volume, net, args.tile)
        seconds.append(time.perf_counter() - start)
    if out is not None:
        np.save(args.out.with_suffix(".npy"), out.astype(np.float32))
    args.out.write_text(json.dumps({"seconds": statistics.median(seconds), "peak": _peak_rss()}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads a process")
    parser.add_argument("--child", choices=METHODS)
    parser.add_argument("--volume", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return
    work = Path(tempfile.mkdtemp())
    volume = work / "volume.npy"
    np.save(volume, make_volume(args.size))
    results = {}
    for method in METHODS:
        out = work / f"{method}.json"
        subprocess.run([sys.executable, __file__, "--child", method, "--volume", str(volume),
                        "--out", str(out), "--size", str(args.size), "--tile", str(args.tile),
                        "--repeats", str(args.repeats), "--threads", str(args.threads)], check=True)  # fmt: skip
        results[method] = json.loads(out.read_text())
    whole = np.load(work / "whole.npy").astype(np.float64)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, commit {_commit()}; {args.size}^3 volume, tile {args.tile}^3, "
          f"overlap 0.25, batch 4, {args.threads} torch threads")  # fmt: skip
    print("| method | wall (s) | time / bare | peak RSS (MiB) | mean abs error | max abs error |")
    print("| --- | --- | --- | --- | --- | --- |")
    bare = results["bare"]["seconds"]
    for method, result in results.items():
        logits = work / f"{method}.npy"
        if logits.exists() and method != "whole":
            diff = np.abs(np.load(logits).astype(np.float64) - whole)
            err = f"{diff.mean():.1e} | {diff.max():.1e}"
        else:
            err = "- | -"
        print(f"| {method} | {result['seconds']:.2f} | {result['seconds'] / bare:.2f} | "
              f"{result['peak'] / 2**20:.0f} | {err} |")  # fmt: skip


if __name__ == "__main__":
    main()
