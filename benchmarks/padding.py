"""Which ``padding=`` is closest to whole-image inference, on real networks (run by hand).

    .venv/bin/pip install -e ".[bench]"      # MONAI; it does not pull a new torch
    .venv/bin/python benchmarks/padding.py [--tile 256] [--sizes 100x180 200x140 60x248]

An image smaller than the tile is padded up to the tile the model takes (centred) and the answer cropped
back. Whole-image inference here is the network run on the image as it is, unpadded (MONAI's BasicUNet and
UNet take any size divisible by 4; the demo's context model too). For each network, size and mode: the mean absolute
difference of the logits from that reference, over the image, and the share of pixels whose argmax class
differs. Networks are randomly initialised with a fixed seed (their padding behaviour is in the
architecture, not the weights); the image is the demo scene's first bands, scaled to [0, 1].
"""

from __future__ import annotations

import argparse
import platform
import subprocess

import numpy as np
import torch

import seamless_dask as sd
from seamless_dask.demo import context_model, synthetic_scene
from seamless_dask.options import PADDINGS


def networks(bands: int) -> dict[str, torch.nn.Module]:
    from monai.networks.nets import BasicUNet, UNet

    torch.manual_seed(0)
    nets = {
        "monai-basicunet": BasicUNet(spatial_dims=2, in_channels=bands, out_channels=4,
                                     features=(8, 8, 16, 32, 64, 8)),
        "monai-unet": UNet(spatial_dims=2, in_channels=bands, out_channels=4,
                           channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
    }  # fmt: skip
    nets["demo-context"] = context_model()
    return {name: net.eval() for name, net in nets.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--sizes", nargs="+", default=["100x180", "200x140", "60x248"])
    args = parser.parse_args()
    scene = synthetic_scene(512).values.astype(np.float32)
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    print(f"# padding vs whole-image inference; {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, commit {commit}, tile {args.tile}")  # fmt: skip
    print("| network | image | " + " | ".join(PADDINGS) + " |")
    print("|---|---|" + "---|" * len(PADDINGS))
    totals: dict[str, list[float]] = {m: [] for m in PADDINGS}
    for name, net in networks(scene.shape[0]).items():
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            image = np.ascontiguousarray(scene[:, :h, :w])
            with torch.no_grad():
                whole = net(torch.from_numpy(image)[None])[0].numpy()
            cells = []
            for mode in PADDINGS:
                out = sd.segment(image, net, tile_size=args.tile, overlap=args.tile // 4,
                                 padding=mode, output="logits", weights="trust")  # fmt: skip
                error = float(np.abs(out - whole).mean())
                flips = float((out.argmax(0) != whole.argmax(0)).mean())
                totals[mode].append(error)
                cells.append(f"{error:.4f} / {100 * flips:.1f} %")
            print(f"| {name} | {h} x {w} | " + " | ".join(cells) + " |")
    means = " | ".join(f"{np.mean(v):.4f}" for v in totals.values())
    print(f"| mean logit error | | {means} |")


if __name__ == "__main__":
    main()
