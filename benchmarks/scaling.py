"""Scaling out on this machine, and the scheduler's cost per task, for the README's arithmetic (run by hand).

    .venv/bin/python benchmarks/scaling.py [--size 8192] [--data /tmp/seamless-bench]

Part 1, throughput: one lazily read GeoTIFF (``memory_scale.make_cog``, 3-band uint8) segmented to zarr through
a real ``dask scheduler`` process and ``dask worker`` processes, for 1 and 2 worker processes x 1 and 2 dask
threads each (one torch thread per dask thread), with two models: the 1x1 conv of ``memory_scale.py`` (the
pipeline's own cost) and a small CNN (three 3x3 convolutions, 16 channels: the model's cost dominates, as in
real work). Tiles per second over the write alone (the client is this process; cluster start-up excluded).

Part 2, the scheduler's cost: the scheduler process's CPU seconds (``psutil``) over each write, per task of the
graph and per chunk, on a graph of many small chunks (chunks of 256 px, tile 128, overlap 16, the 1x1 conv) so
that the scheduler, not the model, is busy. From it, how many GPU workers one scheduler keeps busy at a given
model speed, for several chunk sizes (the arithmetic the README shows).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import torch
from memory_scale import HERE, make_cog, start_cluster, stop_cluster  # type: ignore[import-not-found]

import seamless_dask as sd

CONFIGS = [(1, 1), (1, 2), (2, 1), (2, 2)]  # (worker processes, dask threads each)
GPU_TILES_PER_S = 100  # the model speed per GPU worker
GPU_TILE, GPU_OVERLAP = 512, 64


def small_cnn() -> torch.nn.Module:
    """'scaling:small_cnn': three 3x3 convolutions of 16 channels, 3 bands to 2 classes, inputs 0-255."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 2, 3, padding=1),
    ).eval()


class Run(NamedTuple):
    scene: Path
    target: Path
    model: str  # a model spec, loaded on the workers
    tile: int
    overlap: int
    chunks: int
    resources: tuple[tuple[str, float], ...] = ()  # what the model tasks need, e.g. (("GPU", 1),)


def write(address: str, run: Run) -> dict[str, Any]:
    """One write through ``address``: seconds, tiles, tasks and chunks of the graph, scheduler CPU seconds."""
    scene, target, model, tile, overlap, chunks, _ = run
    from distributed import Client

    from seamless_dask import io
    from seamless_dask.cluster.workers import setup_workers

    shutil.rmtree(target, ignore_errors=True)
    with Client(address) as client:
        setup_workers(client, torch_threads=1)
        scheduler = psutil.Process(client.run_on_scheduler(os.getpid))
        image = sd.open_raster(scene)
        labels = sd.segment(image, model, tile_size=tile, overlap=overlap, num_classes=2, normalize=(0, 255),
                            chunks=chunks, resources=dict(run.resources) or None)  # fmt: skip
        graph = io.to_zarr(labels, target, compute=False).__dask_graph__()
        tasks, n_chunks = len(dict(graph)), labels.data.npartitions
        shutil.rmtree(target, ignore_errors=True)
        moves0 = client.run_on_scheduler(_transitions)
        cpu0, start = sum(scheduler.cpu_times()[:2]), time.perf_counter()
        sd.to_zarr(labels, target)
        seconds = time.perf_counter() - start
        cpu = sum(scheduler.cpu_times()[:2]) - cpu0
        moves = client.run_on_scheduler(_transitions) - moves0
    tiles = sd.TileGrid(image.shape[-2:], tile, overlap).n_tiles
    shutil.rmtree(target, ignore_errors=True)
    return {
        "seconds": seconds, "tiles": tiles, "tasks": tasks, "chunks": n_chunks, "scheduler_cpu": cpu,
        "transitions": moves,
    }  # fmt: skip


def _transitions(dask_scheduler: Any) -> int:
    return int(dask_scheduler.transition_counter)


def on_cluster(
    workers: int, threads: int, data: Path, env: dict, *runs: Run
) -> list[dict[str, Any]]:
    # workers that say they have one GPU: the model tasks take turns
    gpu = any(run.resources for run in runs)
    address, processes = start_cluster(
        data, env, nworkers=workers, nthreads=threads, resources="GPU=1" if gpu else None
    )
    try:
        return [write(address, run) for run in runs]
    finally:
        stop_cluster(processes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--data", type=Path, default=Path("/tmp/seamless-bench"))
    parser.add_argument(
        "--cost-only", action="store_true", help="part 2 only: the scheduler's cost"
    )
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    scene = make_cog(args.data / f"scene-{args.size}.tif", args.size)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    target = args.data / "scaling.zarr"
    models = {"1x1 conv": "memory_scale:cheap_model", "small CNN": "scaling:small_cnn"}
    rows = []
    for workers, threads in [] if args.cost_only else CONFIGS:
        runs = [Run(scene, target, spec, 512, 64, 2048) for spec in models.values()]
        results = on_cluster(workers, threads, args.data, env, *runs)
        rows.append((workers, threads, results))
        print(workers, threads, results, flush=True)
    cost_runs = [
        Run(scene, target, "memory_scale:cheap_model", 128, 16, 256, need)
        for need in ((), (("GPU", 1),))
    ]
    (cost,) = on_cluster(1, 2, args.data, env, cost_runs[0])
    (gpu_cost,) = on_cluster(1, 2, args.data, env, cost_runs[1])
    print(cost, gpu_cost, flush=True)
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(
        git, check=False, capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, commit {commit}; {args.size} px GeoTIFF to zarr, tile 512, overlap 64, "
          "chunks 2048, one torch thread per dask thread\n")  # fmt: skip
    print(
        "| worker processes x dask threads | " + " | ".join(f"{m} (tiles/s)" for m in models) + " |"
    )
    print("| --- |" + " --- |" * len(models))
    for workers, threads, results in rows:
        cells = [f"{r['tiles'] / r['seconds']:.1f}" for r in results]
        print(f"| {workers} x {threads} | " + " | ".join(cells) + " |")
    for label, c in (
        ("model tasks read their windows", cost),
        ('resources={"GPU": 1}, reads apart', gpu_cost),
    ):
        cpu, tasks, chunks = c["scheduler_cpu"], c["tasks"], c["chunks"]
        print(f"\nScheduler, {label}: {cpu:.2f} CPU s for {tasks:,} tasks and {chunks:,} chunks ({c['tiles']:,} "
              f"tiles, {c['seconds']:.1f} s wall): {cpu / tasks * 1e3:.3f} ms a task, {cpu / chunks * 1e3:.3f} ms a "
              f"chunk ({tasks / chunks:.1f} tasks a chunk as built, {c['transitions'] / chunks:.1f} scheduler "
              "transitions a chunk)")  # fmt: skip
    per_chunk = gpu_cost["scheduler_cpu"] / gpu_cost["chunks"]
    print("\nGPU workers, from the second graph's cost a chunk:\n")
    print(
        f"| chunk side (px) | tiles a chunk (tile {GPU_TILE}, overlap {GPU_OVERLAP}) | chunks/s a GPU worker at "
        f"{GPU_TILES_PER_S} tiles/s | chunks/s one scheduler handles | GPU workers one scheduler keeps busy |"
    )
    print("| --- | --- | --- | --- | --- |")
    for side in (2048, 4096, 8192, 10240):
        tiles = (side / (GPU_TILE - GPU_OVERLAP)) ** 2
        demand = GPU_TILES_PER_S / tiles
        print(
            f"| {side} | {tiles:.0f} | {demand:.2f} | {1 / per_chunk:,.0f} | {1 / per_chunk / demand:,.0f} |"
        )


if __name__ == "__main__":
    main()
