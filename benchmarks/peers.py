"""seamless_dask against its peers, side by side, in one run (run by hand).

    .venv/bin/pip install -e ".[bench]"      # MONAI and tiler; neither pulls a new torch
    .venv/bin/python benchmarks/peers.py [--sizes 2048 4096] [--models unet conv1x1] [--repeats 3]

On one image and one model, each method runs in its own process (so peak RSS is its own), CPU, tile 256,
overlap 64, batch 8:

- ``bare``: the model over the same tiles as seamless_dask, no blending, no stitching (the floor);
- ``whole``: the whole image in one pass (the seam-free reference);
- ``naive``: non-overlapping tiles (the last one flush), stitched;
- ``monai-constant``, ``monai-gaussian``: MONAI ``sliding_window_inference`` (overlap 0.25 = 64 px);
- ``tiler-triang``: tiler with a triangular window (image reflect-padded to whole tiles, as tiler does);
- ``seamless-seg``: seamless-seg's plan (trust-map blending, tiles loaded and unloaded row by row, batches of
  ``batch_size`` through ``batched_tile_get``). It is one file to copy, not a package: give its path with
  ``--seamless-seg PATH/seamless_seg.py`` (github.com/Multihuntr/seamless-seg); without it the row is skipped;
- ``seamless``: ``seamless_dask.segment(..., output="logits")`` with its default weights (``"trim"``);
  ``seamless-trust`` with the smooth ``"trust"`` map for comparison;
- ``bare-first``, ``seamless-first``: the same two, but the first call of a fresh process (``import
  seamless_dask`` done, as a notebook's first cell does it; no warm-up call): what a user pays once per process
  (lazy imports, thread pools, the receptive-field check); their "time / bare" is against ``bare-first``.

Models: a small U-Net (two down/up levels, 16-32-64 channels, zero padding, so borders matter) and a 1x1
conv (which isolates the overhead). Reported: wall time (median of ``--repeats`` runs, model and image
loading excluded), time / bare, overhead per tile over the bare loop, peak RSS, and the mean and max
absolute error of each method's logits against the whole-image logits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TILE, OVERLAP, BATCH, CLASSES = 256, 64, 8, 3
METHODS = (
    "bare", "whole", "naive", "monai-constant", "monai-gaussian", "tiler-triang", "seamless", "seamless-trust",
    "bare-first", "seamless-first", "seamless-seg",
)  # fmt: skip


def build_model(name: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "conv1x1":
        return nn.Conv2d(3, CLASSES, 1).eval()

    def block(cin: int, cout: int) -> nn.Module:
        conv1, conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        return nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU())

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc1, self.enc2, self.mid = block(3, 16), block(16, 32), block(32, 64)
            self.up2, self.dec2 = nn.ConvTranspose2d(64, 32, 2, stride=2), block(64, 32)
            self.up1, self.dec1 = nn.ConvTranspose2d(32, 16, 2, stride=2), block(32, 16)
            self.head = nn.Conv2d(16, CLASSES, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(x)
            e2 = self.enc2(nn.functional.max_pool2d(e1, 2))
            m = self.mid(nn.functional.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
            return self.head(d1)

    return UNet().eval()


def make_image(size: int, path: Path) -> Path:
    """A smooth random 3-band float32 scene in [0, 1] (blobs at several scales), saved as .npy."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    image = np.zeros((3, size, size), np.float32)
    for scale in (8, 32, 128):
        coarse = rng.random((3, size // scale + 2, size // scale + 2)).astype(np.float32)
        up = np.repeat(np.repeat(coarse, scale, axis=1), scale, axis=2)[:, :size, :size]
        image += up / 3
    np.save(path, image)
    return path


# ------------------------------------------------------------------------------------------ methods


def run_bare(image, model) -> None:
    import torch

    import seamless_dask as sd

    windows = sd.TileGrid(image.shape[1:], TILE, OVERLAP).windows()
    with torch.inference_mode():
        for start in range(0, len(windows), BATCH):
            tiles = np.stack([image[:, w.y, w.x] for w in windows[start : start + BATCH]])
            model(torch.from_numpy(tiles)).numpy()


def run_whole(image, model):
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(image)[None])[0].numpy()


def run_naive(image, model):
    import torch

    import seamless_dask as sd

    grid = sd.TileGrid(image.shape[1:], TILE, 0)
    out = np.zeros((CLASSES, *image.shape[1:]), np.float32)
    windows = grid.windows()
    with torch.inference_mode():
        for start in range(0, len(windows), BATCH):
            batch = windows[start : start + BATCH]
            preds = model(torch.from_numpy(np.stack([image[:, w.y, w.x] for w in batch]))).numpy()
            for w, p in zip(batch, preds, strict=True):
                out[:, w.y, w.x] = p
    return out


def run_monai(image, model, mode: str):
    import torch
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        x = torch.from_numpy(image)[None]
        out = sliding_window_inference(
            x, (TILE, TILE), BATCH, model, overlap=OVERLAP / TILE, mode=mode
        )
    return out[0].numpy()


def run_tiler(image, model):
    import torch
    from tiler import Merger, Tiler

    tiler = Tiler(
        data_shape=image.shape, tile_shape=(3, TILE, TILE), overlap=OVERLAP, channel_dimension=0
    )
    new_shape, padding = tiler.calculate_padding()
    tiler.recalculate(data_shape=new_shape)
    padded = np.pad(image, padding, mode="reflect")
    out_tiler = Tiler(data_shape=(CLASSES, *new_shape[1:]), tile_shape=(CLASSES, TILE, TILE), overlap=OVERLAP,
                      channel_dimension=0)  # fmt: skip
    merger = Merger(tiler=out_tiler, window="triang")
    with torch.inference_mode():
        for batch_id, batch in tiler(padded, batch_size=BATCH):
            merger.add_batch(batch_id, BATCH, model(torch.from_numpy(batch)).numpy())
    return merger.merge(extra_padding=padding, dtype=np.float32)


def run_seamless_seg(image, model):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("seamless_seg", os.environ["SEAMLESS_SEG"])
    assert spec is not None and spec.loader is not None
    ss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ss)
    plan, _ = ss.plan_regular_grid(image.shape[1:], (TILE, TILE), (OVERLAP, OVERLAP))

    def run_tiles(
        indexes, geoms
    ):  # a batch of geometries in, the model's outputs out (HWC, as it wants)
        if not geoms:
            return []
        tiles = np.stack([image[(slice(None), *ss.shape_to_slices(g))] for g in geoms])
        with torch.inference_mode():
            return model(torch.from_numpy(tiles)).numpy().transpose(0, 2, 3, 1)

    out = np.zeros((CLASSES, *image.shape[1:]), np.float32)
    for _, geom, tile in ss.run_plan(
        plan, ss.batched_tile_get(ss.get_plan_input_geoms(plan), BATCH, run_tiles)
    ):
        out[(slice(None), *ss.shape_to_slices(geom))] = tile.transpose(2, 0, 1)
    return out


def run_seamless(image, model, weights: str | None):
    import seamless_dask as sd

    options = {} if weights is None else {"weights": weights}
    return sd.segment(image, model, tile_size=TILE, overlap=OVERLAP, batch_size=BATCH, output="logits",
                      num_classes=CLASSES, **options)  # fmt: skip


def run_method(method: str, image, model):
    runners = {
        "bare": lambda: run_bare(image, model),
        "whole": lambda: run_whole(image, model),
        "naive": lambda: run_naive(image, model),
        "monai-constant": lambda: run_monai(image, model, "constant"),
        "monai-gaussian": lambda: run_monai(image, model, "gaussian"),
        "tiler-triang": lambda: run_tiler(image, model),
        "seamless-seg": lambda: run_seamless_seg(image, model),
        "seamless": lambda: run_seamless(image, model, None),
        "seamless-trust": lambda: run_seamless(image, model, "trust"),
    }
    return runners[method.removesuffix("-first")]()


def _peak_rss() -> int:
    """This process's own peak RSS: VmHWM (``ru_maxrss`` would include the parent's, kept across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(args: argparse.Namespace) -> None:
    """One method, one image, one model, ``repeats`` times, in this process; writes a JSON and the logits."""
    image = np.load(args.image)
    model = build_model(args.model)
    first = args.method.endswith("-first")
    if first:
        import seamless_dask  # noqa: F401  (a notebook's first cell: the import is not the call's cost)
    else:
        # seamless-seg fails on a one-tile image
        side = 2 * TILE if args.method == "seamless-seg" else TILE
        # warm up: first calls allocate and pick kernels
        run_method(args.method, image[:, :side, :side], model)
    seconds = []
    for _ in range(1 if first else args.repeats):
        start = time.perf_counter()
        out = run_method(args.method, image, model)
        seconds.append(time.perf_counter() - start)
    if out is not None:
        np.save(args.out.with_suffix(".npy"), out.astype(np.float32))
    peak = _peak_rss()
    args.out.write_text(json.dumps({"seconds": statistics.median(seconds), "peak": peak}))


# ------------------------------------------------------------------------------------------- parent


def measure(method: str, model: str, image: Path, work: Path, repeats: int) -> dict:
    out = work / f"{model}-{image.stem}-{method}.json"
    command = [sys.executable, __file__, "--child", method, "--model", model, "--image", str(image),
               "--out", str(out), "--repeats", str(repeats)]  # fmt: skip
    subprocess.run(command, check=True)
    result = json.loads(out.read_text())
    logits = out.with_suffix(".npy")
    result["logits"] = logits if logits.exists() else None
    return result


def errors(logits: Path | None, reference: Path) -> tuple[float, float] | None:
    if logits is None:
        return None
    a, b = np.load(logits, mmap_mode="r"), np.load(reference, mmap_mode="r")
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff.mean()), float(diff.max())


def table(model: str, size: int, results: dict[str, dict], reference: Path) -> list[str]:
    import seamless_dask as sd

    tiles = sd.TileGrid((size, size), TILE, OVERLAP).n_tiles
    bare = results["bare"]["seconds"]
    lines = [
        f"\n**{model}, {size} x {size} px, {tiles} tiles of {TILE} px, overlap {OVERLAP}**\n",
        "| method | wall (s) | time / bare | overhead (ms/tile) | peak RSS (MiB) | mean abs error | max abs error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, r in results.items():
        err = errors(r["logits"], reference) if method != "whole" else (0.0, 0.0)
        mean, worst = ("-", "-") if err is None else (f"{err[0]:.2e}", f"{err[1]:.2e}")
        floor = (
            results["bare-first"]["seconds"]
            if method.endswith("-first") and "bare-first" in results
            else bare
        )
        over = (r["seconds"] - floor) / tiles * 1000
        lines.append(
            f"| {method} | {r['seconds']:.3f} | {r['seconds'] / floor:.2f} | {over:.2f} | {r['peak'] / 2**20:.0f} | "
            f"{mean} | {worst} |"
        )
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _versions(*packages: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    return ", ".join(one(name) for name in packages)


def _commit() -> str:
    try:
        here = Path(__file__).parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=here).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=here).stdout.strip()  # fmt: skip
        return head + (" + local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "no git"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument(
        "--models", nargs="+", default=["unet", "conv1x1"], choices=["unet", "conv1x1"]
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seamless-peers"))
    parser.add_argument(
        "--seamless-seg", type=Path, help="seamless-seg's seamless_seg.py, for its row"
    )
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.method = args.child
        child(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    import dask
    import torch

    import seamless_dask as sd

    lines = [
        f"{time.strftime('%Y-%m-%d')}, {_cpu_name()}, {os.cpu_count()} cores, {_memory_gib():.0f} GiB; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), dask {dask.__version__}, "
        f"{_versions('monai', 'tiler')}, seamless_dask {sd.__version__} ({_commit()}); median of {args.repeats} "
        "runs, each method in its own process",
    ]
    methods = ["bare", "whole", *[m for m in args.methods if m not in ("bare", "whole")]]
    if args.seamless_seg:
        os.environ["SEAMLESS_SEG"] = str(args.seamless_seg.resolve())  # for the child processes
    elif "seamless-seg" in methods:
        methods.remove("seamless-seg")
        print("seamless-seg skipped: give --seamless-seg PATH/seamless_seg.py", file=sys.stderr)
    for model in args.models:
        for size in args.sizes:
            image = make_image(size, args.work / f"image-{size}.npy")
            results = {m: measure(m, model, image, args.work, args.repeats) for m in methods}
            block = table(model, size, results, results["whole"]["logits"])
            print("\n".join(block), flush=True)
            lines += block
    (args.work / "peers.md").write_text("\n".join(lines) + "\n")
    print(f"\n{lines[0]}\nwritten to {args.work / 'peers.md'}")


if __name__ == "__main__":
    main()
