"""torch threads versus dask threads, and chunking, for an image in memory on this machine (run by hand).

    .venv/bin/python benchmarks/threads.py [--size 2048] [--models unet conv1x1] [--repeats 5]

The image and models of ``peers.py`` (tile 256, overlap 64, batch 8, logits), all in one process,
configurations interleaved run by run so that the machine's drift hits them alike; prints the median wall
time of each as a ratio to the bare loop (torch's default threads), as a table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import dask
import numpy as np
import torch
from peers import BATCH, CLASSES, OVERLAP, TILE, build_model, make_image, run_bare  # type: ignore[import-not-found]

import seamless_dask as sd


def ours(
    image: np.ndarray, model: torch.nn.Module, dask_threads: int, torch_threads: int, chunks=None
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        with dask.config.set(scheduler="threads", num_workers=dask_threads):
            sd.segment(image, model, tile_size=TILE, overlap=OVERLAP, batch_size=BATCH, output="logits",
                       num_classes=CLASSES, chunks=chunks)  # fmt: skip
    finally:
        torch.set_num_threads(before)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument(
        "--models", nargs="+", default=["unet", "conv1x1"], choices=["unet", "conv1x1"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    image = np.load(make_image(args.size, Path(f"/tmp/seamless-peers/image-{args.size}.npy")))
    cores = torch.get_num_threads()
    names = [f"bare loop, torch {cores}", f"dask {cores} x torch {cores} (default)", f"dask {cores} x torch 1",
             f"dask 1 x torch {cores}", f"one chunk, dask {cores} x torch {cores}"]  # fmt: skip
    print(f"{time.strftime('%Y-%m-%d')}, {args.size} px, tile {TILE}/{OVERLAP}, median of {args.repeats}, "
          f"torch {torch.__version__}, dask {dask.__version__}\n")  # fmt: skip
    print("| model | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for name in args.models:
        model = build_model(name)
        runs = [
            partial(run_bare, image, model),
            partial(ours, image, model, cores, cores),
            partial(ours, image, model, cores, 1),
            partial(ours, image, model, 1, cores),
            partial(ours, image, model, cores, cores, chunks=args.size),
        ]
        runs[1]()  # warm-up
        seconds: list[list[float]] = [[] for _ in runs]
        for _ in range(args.repeats):
            for i, run in enumerate(runs):
                start = time.perf_counter()
                run()
                seconds[i].append(time.perf_counter() - start)
        medians = [statistics.median(s) for s in seconds]
        cells = [f"1.00 ({medians[0]:.2f} s)"] + [f"{m / medians[0]:.2f}" for m in medians[1:]]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
