"""Which weights for a deep model? Error of each trust map against whole-image inference (run by hand).

    .venv/bin/python benchmarks/deep_weights.py [--size 384] [--tile 128] [--overlaps 32 64]

MONAI's BasicUNet (untrained, seeded: the seams come from context, not from learning) on a crop of the real
RGB.byte.tif (../shared/data, or the demo scene when it is absent), scaled to [0, 1]. For each overlap and
weights kind: the mean and max absolute error of ``segment(..., output="logits")`` against the model run once
on the whole crop, and the receptive field :func:`seamless_dask.receptive_field` measures. Two normalisations:
MONAI's default instance norm (statistics over the whole input: the field is global, no tiling is exact) and
batch norm in eval mode (a bounded field, which ``"trim"`` covers once ``overlap // 2`` reaches it).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch

import seamless_dask as sd

KINDS = ("trim", "trust", "gaussian", "spline", "constant")


def crop(size: int) -> np.ndarray:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "RGB.byte.tif"
    if not path.exists():
        from seamless_dask.demo.scene import synthetic_scene

        return synthetic_scene(size).values.astype(np.float32)  # already in [0, 1]
    pixels = sd.open_raster(path).values[:, 200 : 200 + size, 200 : 200 + size]
    return (pixels / 255.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlaps", type=int, nargs="+", default=[32, 64])
    args = parser.parse_args()
    from monai.networks.nets import BasicUNet

    image = crop(args.size)
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, check=False, capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, commit {commit}, "
          f"image {image.shape}, tile {args.tile}")  # fmt: skip
    print("| model | receptive field (px each side) | overlap | " + " | ".join(KINDS) + " |")
    print("|---|---|---|" + "---|" * len(KINDS))
    for norm in ("instance", "batch"):
        torch.manual_seed(0)
        net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=3, norm=norm).eval()
        field = sd.receptive_field(net, bands=3, size=args.tile, max_size=4 * args.tile)
        reach = f"{field.radius[0]}" + ("" if field.bounded else "+ (global)")
        with torch.no_grad():
            whole = net(torch.from_numpy(image)[None])[0].numpy()
        for overlap in args.overlaps:
            cells = []
            for kind in KINDS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", sd.ReceptiveFieldWarning)
                    out = sd.segment(
                        image,
                        net,
                        tile_size=args.tile,
                        overlap=overlap,
                        weights=kind,
                        output="logits",
                    )
                err = np.abs(out - whole)
                cells.append(f"{err.mean():.2e} / {err.max():.2f}")
            print(
                f"| BasicUNet, {norm} norm | {reach} | {overlap} | " + " | ".join(cells) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
