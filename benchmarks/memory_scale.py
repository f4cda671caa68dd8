"""Peak memory as the image grows (I4): synthetic scenes of 10,000 to 100,000 px square (run by hand).

    .venv/bin/python benchmarks/memory_scale.py [--sizes 10000 40000 100000] [--data /tmp/seamless-bench] [--whole]

Each size: a 3-band uint8 tiled, deflate-compressed GeoTIFF is made on local disk (once; reused on later runs;
no overviews, which the read path never touches), then segmented by the CLI as a user runs it against a cluster
(``seamless-dask segment ... --scheduler tcp://...``) with a cheap model (a 1x1 conv, so that the pipeline,
not the model, is what is measured) to a labels zarr. The cluster is real: a ``dask scheduler`` process and a
``dask worker`` (its nanny and one worker process of two threads, as the CLI's own local cluster has), started
for each size. A sampler polls every 0.2 s the RSS of the client (the CLI), the scheduler and the worker
(nanny and worker) and, every 0.5 s, how many tasks the scheduler holds. ``--whole`` submits each write as
one graph (the behaviour before waves; ``seamless_dask.wave_chunks`` set past the scene's chunks).
Goal: peak of the process tree under 2 GB and flat (100,000 px within 1.2 x the 10,000 px peak), tiles/s
no lower than at 40,000 px.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
TILE, OVERLAP = 512, 64


def cheap_model():
    """'memory_scale:cheap_model': a 1x1 conv, 3 bands to 2 classes, inputs scaled from 0-255."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 1)
    return torch.nn.Sequential(conv).eval()


def make_cog(path: Path, size: int) -> Path:
    """A 3-band uint8 tiled GeoTIFF of ``size`` px square, written block by block (never whole in memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if path.exists():
        return path
    scratch = path.with_suffix(".scratch.tif")
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32631",
        "transform": from_origin(300_000, 6_000_000, 10, 10), "tiled": True, "blockxsize": 512,
        "blockysize": 512, "compress": "deflate", "zlevel": 1, "BIGTIFF": "YES", "num_threads": "all_cpus",
    }  # fmt: skip
    step = 2048
    with rasterio.open(scratch, "w", **profile) as dst:
        for y in range(0, size, step):
            h = min(step, size - y)
            yy = np.arange(y, y + h)[:, None]
            for x in range(0, size, step):
                w = min(step, size - x)
                xx = np.arange(x, x + w)[None, :]
                fields = ((yy // 300 + xx // 300) % 3 * 70 + 30).astype(np.uint8)
                texture = ((yy * 7 + xx * 13) % 23).astype(np.uint8)
                block = np.stack([fields + texture, fields, 200 - fields]).astype(np.uint8)
                dst.write(block, window=Window(x, y, w, h))
    scratch.rename(path)
    return path


class Sampler(threading.Thread):
    """Peak RSS of each named process tree and of their sum, and the most tasks the scheduler held."""

    def __init__(self, groups: dict[str, Any], scheduler: str) -> None:
        super().__init__(daemon=True)
        self.groups, self.scheduler = groups, scheduler
        self.stop = threading.Event()
        self.peaks = dict.fromkeys([*groups, "tree"], 0)
        self.tasks = 0

    def run(self) -> None:
        from distributed import Client

        def held(dask_scheduler: Any) -> int:
            return len(dask_scheduler.tasks)

        with Client(self.scheduler, timeout=30) as client:
            last = 0.0
            while not self.stop.is_set():
                sizes = {name: _tree_rss(process) for name, process in self.groups.items()}
                for name, size in sizes.items():
                    self.peaks[name] = max(self.peaks[name], size)
                self.peaks["tree"] = max(self.peaks["tree"], sum(sizes.values()))
                if time.monotonic() - last > 0.5:
                    with contextlib.suppress(Exception):
                        self.tasks = max(self.tasks, client.run_on_scheduler(held))
                    last = time.monotonic()
                time.sleep(0.2)


def _tree_rss(process: Any) -> int:
    import psutil

    try:
        root = psutil.Process(process.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _python(*args: str, env: dict) -> subprocess.Popen:
    """A Python process in a session of its own, so that :func:`stop_cluster` ends it with its children."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    return subprocess.Popen([sys.executable, *args], env=env, start_new_session=True, **quiet)


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    """Kill each process's whole group: a nanny killed alone can leave its worker process running, holding
    memory and CPU through the next run.
    """
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_cluster(
    folder: Path,
    env: dict,
    *,
    nworkers: int = 1,
    nthreads: int | None = None,
    resources: str | None = None,
) -> tuple[str, list[subprocess.Popen]]:
    """A ``dask scheduler`` and a ``dask worker`` (a nanny, ``nworkers`` processes of ``nthreads`` threads, by
    default one of a thread per core, with worker ``resources`` such as ``"GPU=1"``), as real processes.
    """
    sched_file = folder / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    common = ["--scheduler-file", str(sched_file), "--no-dashboard"]
    scheduler = _python(
        "-m",
        "distributed.cli.dask_scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *common,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    threads = nthreads or os.cpu_count() or 2
    worker_args = ["--nworkers", str(nworkers), "--nthreads", str(threads), "--host", "127.0.0.1"]
    worker_args += ["--resources", resources] if resources else []
    worker = _python("-m", "distributed.cli.dask_worker", *common, *worker_args, env=env)
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(nworkers, timeout=120)
        return client.scheduler.address, [scheduler, worker]


def run_one(cog: Path, out_dir: Path, whole: bool) -> dict[str, Any]:
    """Wall seconds, tiles, peak RSS of client, scheduler, worker and all, and tasks held, of one CLI run."""
    import rasterio

    import seamless_dask as sd

    with rasterio.open(cog) as src:
        tiles = sd.TileGrid((src.height, src.width), TILE, OVERLAP).n_tiles
    target = out_dir / (cog.stem + "-labels.zarr")
    shutil.rmtree(target, ignore_errors=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    if whole:
        env["DASK_SEAMLESS_DASK__BAND_CHUNKS"] = str(10**9)
    address, cluster = start_cluster(out_dir, env)
    command = [
        "-m", "seamless_dask.cli", "segment", str(cog), str(target), "--scheduler", address,
        "--model", "memory_scale:cheap_model", "--tile-size", str(TILE), "--overlap", str(OVERLAP),
        "--num-classes", "2", "--normalize", "0/255", "--no-progress",
    ]  # fmt: skip
    try:
        start = time.perf_counter()
        cli = subprocess.Popen([sys.executable, *command], env=env)
        sampler = Sampler({"client": cli, "scheduler": cluster[0], "worker": cluster[1]}, address)
        sampler.start()
        code = cli.wait()
        seconds = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    finally:
        stop_cluster(cluster)
    if code != 0:
        raise SystemExit(f"the CLI failed on {cog} (exit {code})")
    shutil.rmtree(target, ignore_errors=True)
    return {"seconds": seconds, "tiles": tiles, "tasks": sampler.tasks, **sampler.peaks}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 100_000])
    parser.add_argument("--data", type=Path, default=Path("/tmp/seamless-bench"))
    parser.add_argument(
        "--whole", action="store_true", help="one submission per write (before waves)"
    )
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        t = time.perf_counter()
        cog = make_cog(args.data / f"scene-{size}.tif", size)
        print(f"{size} px GeoTIFF ready ({time.perf_counter() - t:.0f} s)", flush=True)
        row = run_one(cog, args.data, args.whole)
        rows.append((size, row))
        print(f"{size} px: {row}", flush=True)
    import dask
    import torch

    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, check=False, capture_output=True, text=True, cwd=HERE).stdout
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, dask {dask.__version__}, commit {commit.strip()}; tile {TILE}, overlap "
          f"{OVERLAP}, 1x1 conv, CLI against a dask scheduler and one dask worker (2 threads), labels to zarr, "
          f"{'one submission' if args.whole else 'wave by wave'}\n")  # fmt: skip
    gib = 2**30
    print("| image (px) | tiles | wall (s) | tiles/s | client (GiB) | scheduler (GiB) | worker (GiB) "
          "| process tree (GiB) | tree / smallest | tasks held at most |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, row in rows:
        cells = [f"{size:,} x {size:,}", f"{row['tiles']:,}", f"{row['seconds']:.1f}"]
        cells += [f"{row['tiles'] / row['seconds']:.1f}"]
        cells += [f"{row[name] / gib:.2f}" for name in ("client", "scheduler", "worker", "tree")]
        cells += [f"{row['tree'] / rows[0][1]['tree']:.2f}", f"{row['tasks']:,}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
