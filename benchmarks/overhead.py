"""Overhead of seamless_dask over the bare model loop on the same tiles (run by hand).

    .venv/bin/python benchmarks/overhead.py [--size 2048] [--tile 256] [--overlap 64] [--repeats 5] [--sync]

Both sides run the same tiles of one global grid, batch 8, softmax, CPU. The bare loop only stacks tiles and
calls the model (no blending, no stitching: the floor). ``--sync`` runs seamless_dask on dask's synchronous
scheduler and torch on one thread, so that the overhead per tile is the host's work for a tile on one core:
what a GPU worker's host must keep under the GPU's time per tile. Runs are interleaved and the median is reported, so
machine noise hits both sides alike; compare the ratio, not the seconds, across machines.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import dask
import numpy as np
import torch

import seamless_dask as sd


def models(bands: int, classes: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    small_cnn = torch.nn.Sequential(
        torch.nn.Conv2d(bands, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, classes, 1),
    )  # fmt: skip
    return {"1x1 conv": torch.nn.Conv2d(bands, classes, 1).eval(), "3-layer CNN": small_cnn.eval()}


def bare_loop(image: np.ndarray, model: torch.nn.Module, grid: sd.TileGrid, batch: int) -> None:
    windows = grid.windows()
    with torch.inference_mode():
        for start in range(0, len(windows), batch):
            tiles = np.stack([image[:, w.y, w.x] for w in windows[start : start + batch]])
            model(torch.from_numpy(tiles)).softmax(1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sync", action="store_true", help="one core: synchronous scheduler, 1 torch thread"
    )
    args = parser.parse_args()
    if args.sync:
        torch.set_num_threads(1)
        dask.config.set(scheduler="sync")
    image = np.random.default_rng(0).random((3, args.size, args.size), dtype=np.float32)
    grid = sd.TileGrid(image.shape[1:], args.tile, args.overlap)
    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}; {args.size} px square, {grid.n_tiles} tiles of {args.tile} px, "
        f"overlap {args.overlap}{'; synchronous scheduler' if args.sync else ''}"
    )
    print("| model | bare loop (s) | seamless_dask (s) | ratio | overhead (ms/tile) |")
    print("| --- | --- | --- | --- | --- |")
    for name, model in models(3, 2).items():
        runs: dict[str, list[float]] = {"bare": [], "seamless": []}
        jobs = {
            "bare": lambda m=model: bare_loop(image, m, grid, 8),
            "seamless": lambda m=model: sd.segment(
                image, m, tile_size=args.tile, overlap=args.overlap, num_classes=2
            ),
        }
        for job in jobs.values():
            job()  # warm up
        for _ in range(args.repeats):
            for key, job in jobs.items():
                start = time.perf_counter()
                job()
                runs[key].append(time.perf_counter() - start)
        bare, ours = statistics.median(runs["bare"]), statistics.median(runs["seamless"])
        print(
            f"| {name} | {bare:.3f} | {ours:.3f} | {ours / bare:.2f} | {(ours - bare) / grid.n_tiles * 1e3:.2f} |"
        )


if __name__ == "__main__":
    main()
