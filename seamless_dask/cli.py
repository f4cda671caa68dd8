"""The ``seamless-dask`` command line: a thin front over the Python API.

User mistakes end with a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .exceptions import SeamlessError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except SeamlessError as error:
        print(f"seamless-dask: error: {error}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="seamless-dask", description="Seamless tiled segmentation of huge images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    plan = commands.add_parser("plan", help="show the tile grid and chunk plan for an image size, reading no pixels")
    plan.add_argument("height", type=int)
    plan.add_argument("width", type=int)
    plan.add_argument("--tile-size", type=int, default=256)
    plan.add_argument("--overlap", type=int, default=64)
    plan.add_argument("--chunks", type=int, default=2048, help="target pixels per chunk side")
    plan.add_argument("--classes", type=int, default=2, help="model output channels, for the memory estimate")
    plan.set_defaults(run=_plan)

    demo = commands.add_parser("demo", help="segment a synthetic scene naively and seamlessly; write demo.png")
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--size", type=int, default=1024)
    demo.set_defaults(run=_demo)
    return parser


def _plan(args: argparse.Namespace) -> None:
    from .segment import plan

    chunk_plan = plan((args.height, args.width), tile_size=args.tile_size, overlap=args.overlap, chunks=args.chunks)
    grid = chunk_plan.grid
    hs, ws = chunk_plan.chunks
    per_chunk = [len(chunk_plan.owned(j, k)) for j in range(len(hs)) for k in range(len(ws))]
    oy, ox = grid.y.overlap, grid.x.overlap
    largest = (max(hs) + oy) * (max(ws) + ox) * (args.classes + 1) * 8
    print(f"image        {args.height} x {args.width} px")
    print(f"tiles        {grid.n_tiles} ({grid.grid_shape[0]} x {grid.grid_shape[1]}) of {grid.tile_shape} px")
    print(f"stride       {(grid.y.stride, grid.x.stride)} px; last tiles flush with the image border")
    print(f"chunks       {len(hs)} x {len(ws)}; sizes y {sorted(set(hs))}, x {sorted(set(ws))} px")
    print(f"tiles/chunk  {min(per_chunk)} to {max(per_chunk)}, each tile run once")
    print(f"accumulator  {largest / 2**20:.0f} MiB for the largest chunk ({args.classes} classes + weight, float64)")


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    result = run_demo(args.out, size=args.size)
    print(
        f"differs from whole-image inference: naive {result.naive_error:.2%}, seamless {result.seamless_error:.2%}; "
        f"wrote {result.png}"
    )


if __name__ == "__main__":
    sys.exit(main())
