"""GPU throughput: the bare model at its best batch size versus seamless_dask over the same tiles (by hand).

    .venv/bin/python benchmarks/gpu.py [--size 8192] [--batches 8 16 32 64] [--amp none bf16 fp16] [--threads 1 2]

Needs a CUDA GPU (install a CUDA build of torch in the venv, e.g. ``make install TORCH_SPEC=torch``). The
model is the U-Net of ``peers.py`` (3 classes). For each batch size and autocast mode it reports tiles per
second of (a) the bare loop: stack tiles on the host, copy (pinned) to the GPU, run, copy the logits back,
with no blending; (b) ``seamless_dask.segment(..., device="cuda")`` on the same image and tiles (tile 256,
overlap 64, "trim") on dask's threaded scheduler with ``--threads`` threads (1: everything in turn; 2: one
thread feeds the GPU while the other blends, as the CLI's GPU workers do). Batches are pipelined: the next
batch is queued on the GPU before the last one is blended. Goal: (b) >= 90 % of the best (a).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from peers import OVERLAP, TILE, build_model, make_image  # type: ignore[import-not-found]

import seamless_dask as sd


def bare(image: np.ndarray, model: torch.nn.Module, batch: int, amp: str | None) -> float:
    windows = sd.TileGrid(image.shape[1:], TILE, OVERLAP).windows()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        for i in range(0, len(windows), batch):
            tiles = np.stack([image[:, w.y, w.x] for w in windows[i : i + batch]])
            x = torch.from_numpy(tiles).pin_memory().to("cuda", non_blocking=True)
            model(x).float().cpu().numpy()
    torch.cuda.synchronize()
    return len(windows) / (time.perf_counter() - start)


def ours(
    image: np.ndarray, model: torch.nn.Module, batch: int, amp: str | None, threads: int
) -> float:
    import dask

    tiles = sd.TileGrid(image.shape[1:], TILE, OVERLAP).n_tiles
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        sd.segment(image, model, tile_size=TILE, overlap=OVERLAP, batch_size=batch, device="cuda", amp=amp,
                   output="logits", num_classes=3)  # fmt: skip
    torch.cuda.synchronize()
    return tiles / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--amp", nargs="+", default=["none", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    from pathlib import Path

    image = np.load(make_image(args.size, Path(f"/tmp/gpu-image-{args.size}.npy")))
    model = build_model("unet").cuda().eval()
    bare(image[:, :1024, :1024], model, 8, None)  # warm-up: cuDNN picks its kernels
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size} px, tile {TILE}/{OVERLAP}\n"
    )
    heads = " | ".join(f"seamless_dask, {t} thread{'s' * (t > 1)} (tiles/s)" for t in args.threads)
    print(f"| autocast | batch | bare (tiles/s) | {heads} | best seamless / best bare |")
    print("| --- | --- | --- |" + " --- |" * len(args.threads) + " --- |")
    for amp_name in args.amp:
        amp = None if amp_name == "none" else amp_name
        rows = [(b, bare(image, model, b, amp), [ours(image, model, b, amp, t) for t in args.threads])
                for b in args.batches]  # fmt: skip
        best = max(r[1] for r in rows)
        for b, t_bare, t_ours in rows:
            cells = " | ".join(f"{t:.0f}" for t in t_ours)
            print(
                f"| {amp_name} | {b} | {t_bare:.0f} | {cells} | {max(t_ours) / best:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
