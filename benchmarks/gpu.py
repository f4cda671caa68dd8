"""GPU throughput: the bare model at its best batch size versus seamless_dask over the same tiles (by hand).

    .venv/bin/python benchmarks/gpu.py [--model unet|monai-unet|segresnet] [--size 8192] [--tile 256]
        [--batches 16 64] [--amp none bf16] [--threads 1 2] [--errors] [--profile FILE] [--json FILE]

Needs a CUDA GPU (a CUDA build of torch, e.g. ``make install TORCH_SPEC=torch``; benchmarks/gpu_run.sh
runs it on a bare GPU machine). Models: the U-Net of ``peers.py`` (3 classes), or MONAI's UNet (channels
16-256, two residual units a level) or SegResNet (``--tile 512`` for these). For each batch size and
autocast mode it reports tiles per second of (a) the bare loop: stack tiles on the host, copy (pinned)
to the GPU, run, copy the logits back, with no blending; (b) ``seamless_dask.segment(...,
device="cuda")`` on the same image and tiles (overlap a quarter of the tile, "trim") on dask's threaded
scheduler with ``--threads`` threads (1: everything in turn; 2: one thread feeds the GPU while the
other blends, as the CLI's GPU workers do). Goal: (b) >= 90 % of the best (a).

``--errors``: the logits of bf16 and fp16 autocast against float32 on 64 tiles (mean and max absolute
error, label agreement). ``--profile FILE``: torch.profiler's table of one seamless_dask run at the
largest batch (CPU and CUDA time per operator), to say what stands between it and the bare loop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from peers import build_model as build_peer  # type: ignore[import-not-found]
from peers import make_image  # type: ignore[import-not-found]

import seamless_dask as sd

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_model(name: str) -> torch.nn.Module:
    """The peers' U-Net, or one of MONAI's 2-D networks (3 bands in, 3 classes out)."""
    if name == "unet":
        return build_peer("unet")
    from monai.networks import nets

    torch.manual_seed(0)
    if name == "monai-unet":
        return nets.UNet(
            2, 3, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2
        )
    if name == "segresnet":
        return nets.SegResNet(spatial_dims=2, in_channels=3, out_channels=3, init_filters=16)
    raise SystemExit(f"unknown --model {name!r}: use unet, monai-unet or segresnet")


def bare(image: np.ndarray, model: torch.nn.Module, tile: int, batch: int, amp: str) -> float:
    windows = sd.TileGrid(image.shape[1:], tile, tile // 4).windows()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=AMP[amp], enabled=AMP[amp] is not None),
    ):
        for i in range(0, len(windows), batch):
            tiles = np.stack([image[:, w.y, w.x] for w in windows[i : i + batch]])
            x = torch.from_numpy(tiles).pin_memory().to("cuda", non_blocking=True)
            model(x).float().cpu().numpy()
    torch.cuda.synchronize()
    return len(windows) / (time.perf_counter() - start)


def ours(
    image: np.ndarray, model: torch.nn.Module, tile: int, batch: int, amp: str, *, threads: int
) -> float:
    import dask

    tiles = sd.TileGrid(image.shape[1:], tile, tile // 4).n_tiles
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        sd.segment(image, model, tile_size=tile, overlap=tile // 4, batch_size=batch, device="cuda",
                   amp=None if amp == "none" else amp, output="logits", num_classes=3)  # fmt: skip
    torch.cuda.synchronize()
    return tiles / (time.perf_counter() - start)


def autocast_errors(image: np.ndarray, model: torch.nn.Module, tile: int) -> list[dict]:
    windows = sd.TileGrid(image.shape[1:], tile, tile // 4).windows()[:64]
    x = torch.from_numpy(np.stack([image[:, w.y, w.x] for w in windows])).cuda()
    out = []
    with torch.inference_mode():
        full = torch.cat([model(x[i : i + 16]).float() for i in range(0, len(x), 16)])
        for name in ("bf16", "fp16"):
            with torch.autocast("cuda", dtype=AMP[name]):
                half = torch.cat([model(x[i : i + 16]).float() for i in range(0, len(x), 16)])
            err = (half - full).abs()
            agree = (half.argmax(1) == full.argmax(1)).float().mean().item()
            out.append({"amp": name, "mean_abs": err.mean().item(), "max_abs": err.max().item(),
                        "logit_std": full.std().item(), "label_agreement": agree})  # fmt: skip
    return out


def profile(path: Path, image: np.ndarray, model: torch.nn.Module, tile: int, batch: int) -> None:
    """torch.profiler's operators and cProfile's Python functions of one run on dask's synchronous
    scheduler (the profilers see the thread that started them): where the host's time goes.
    """
    import cProfile
    import io
    import pstats

    import dask
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    def run() -> None:
        with dask.config.set(scheduler="sync"):
            sd.segment(image, model, tile_size=tile, overlap=tile // 4, batch_size=batch,
                       device="cuda", output="logits", num_classes=3)  # fmt: skip
        torch.cuda.synchronize()

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
    python = cProfile.Profile()
    python.runcall(run)
    stats = io.StringIO()
    pstats.Stats(python, stream=stats).sort_stats("tottime").print_stats(25)
    table = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    path.write_text(f"{table}\n\ncProfile, by own time:\n{stats.getvalue()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="unet")
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=list(AMP))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--errors", action="store_true")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False)")

    image = np.load(make_image(args.size, Path(f"/tmp/gpu-image-{args.size}.npy")))
    model = build_model(args.model).cuda().eval()
    bare(image[:, :2048, :2048], model, args.tile, 8, "none")  # warm-up: cuDNN picks its kernels
    record: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "model": args.model, "size": args.size, "tile": args.tile,
                    "overlap": args.tile // 4, "rows": []}  # fmt: skip
    print(f"{record['device']}, torch {torch.__version__} (CUDA {torch.version.cuda}), {args.model}, "
          f"{args.size} px, tile {args.tile}/{args.tile // 4}\n")  # fmt: skip
    heads = " | ".join(f"seamless_dask, {t} thread{'s' * (t > 1)} (tiles/s)" for t in args.threads)
    print(f"| autocast | batch | bare (tiles/s) | {heads} | best seamless / best bare |")
    print("| --- | --- | --- |" + " --- |" * len(args.threads) + " --- |")
    for amp in args.amp:
        rows = []
        for b in args.batches:
            t_ours = [ours(image, model, args.tile, b, amp, threads=t) for t in args.threads]
            rows.append((b, bare(image, model, args.tile, b, amp), t_ours))
        best = max(r[1] for r in rows)
        for b, t_bare, t_ours in rows:
            cells = " | ".join(f"{t:.0f}" for t in t_ours)
            print(
                f"| {amp} | {b} | {t_bare:.0f} | {cells} | {max(t_ours) / best:.0%} |", flush=True
            )
            record["rows"].append(
                {
                    "amp": amp,
                    "batch": b,
                    "bare": t_bare,
                    "ours": dict(zip(args.threads, t_ours, strict=True)),
                }
            )
    if args.errors:
        record["errors"] = autocast_errors(image, model, args.tile)
        print("\n| autocast | mean abs error | max abs error | logits' std | label agreement |")
        print("| --- | --- | --- | --- | --- |")
        for e in record["errors"]:
            print(f"| {e['amp']} | {e['mean_abs']:.2e} | {e['max_abs']:.2e} | {e['logit_std']:.2f} | "
                  f"{e['label_agreement']:.4%} |")  # fmt: skip
    if args.profile:
        profile(args.profile, image, model, args.tile, max(args.batches))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
