"""The first call in a fresh process against the bare model loop, each in its own fresh process (run by hand).

    .venv/bin/python benchmarks/first_call.py [--size 1792 1536] [--repeats 3]

The U-Net of ``peers.py`` on a random ``(3, H, W)`` float32 image, CPU, tile 256, overlap 64, batch 8. ``bare``
runs ``peers.run_bare`` (the same tiles, no blending) and ``seamless`` runs ``seamless_dask.segment`` with its
default weights (``"trim"``: the receptive-field check included) as the first thing the process does after
loading the model and the image; the seamless time includes ``import seamless_dask``. The two alternate, one
fresh process each, ``--repeats`` times; reported: each median and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def child(method: str, height: int, width: int) -> float:
    """Seconds of one first call in this (fresh) process."""
    import numpy as np
    from peers import BATCH, OVERLAP, TILE, build_model, run_bare

    model = build_model("unet")
    image = np.random.default_rng(0).random((3, height, width), dtype=np.float32)
    start = time.perf_counter()
    if method == "bare":
        run_bare(image, model)
    else:
        import seamless_dask as sd

        sd.segment(
            image,
            model,
            tile_size=TILE,
            overlap=OVERLAP,
            batch_size=BATCH,
            output="logits",
            num_classes=3,
        )
    return time.perf_counter() - start


def main() -> None:
    """Alternate fresh processes and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[1792, 1536], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(child(args.child[0], int(args.child[1]), int(args.child[2])))
        return
    times: dict[str, list[float]] = {"bare": [], "seamless": []}
    for _ in range(args.repeats):
        for method, seconds in times.items():
            command = [sys.executable, __file__, "--child", method, *map(str, args.size)]
            seconds.append(
                float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            )
    bare, ours = statistics.median(times["bare"]), statistics.median(times["seamless"])
    print(
        f"{args.size[0]} x {args.size[1]} px, U-Net, first call in a fresh process, median of {args.repeats}:"
    )
    print(
        f"bare loop {bare:.2f} s; seamless_dask {ours:.2f} s (import included); ratio {ours / bare:.2f}"
    )


if __name__ == "__main__":
    main()
