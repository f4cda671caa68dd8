"""The ``seamless-dask`` commands other than ``segment``: ``plan``, ``evaluate``, ``k8s`` and ``demo``."""

from __future__ import annotations

import argparse
import dataclasses

# One dask scheduler's CPU a chunk with the model on GPU workers (read, infer, halo and write
# tasks), measured on a 2-core VM (README, "At scale, measured"): a server's scheduler is faster, so
# this errs on the safe side.
SCHEDULER_MS_A_CHUNK = 6.0


def plan(args: argparse.Namespace) -> None:
    """Print the tile grid and chunk plan of an image size, reading no pixels: what a chunk in
    flight holds, and, with ``--gpu-workers``, the share of one scheduler that many model workers
    keep busy.
    """
    import numpy as np

    from ..blend.decide import label_dtype
    from ..segment import plan as chunk_plan_of
    from ..tiling.weights import TileWeights

    chunk_plan = chunk_plan_of(
        (args.height, args.width),
        tile_size=args.tile_size,
        overlap=args.overlap,
        chunks=args.chunks,
    )
    grid = chunk_plan.grid
    hs, ws = chunk_plan.chunks
    rows, cols = chunk_plan.tiles_per_axis
    (oy, ox), (h, w) = grid.effective_overlap, (max(hs), max(ws))
    window = (h + oy) * (w + ox) * args.bands * np.dtype(args.dtype).itemsize
    sums = (args.classes + 1) * 8 * grid.tile_shape[0] * (w + ox)
    labels = h * w * label_dtype(args.classes + 1).itemsize  # with a nodata value
    ry, rx = TileWeights(args.weights).reach(grid.tile_shape, (oy, ox))
    # a chunk's strips below (every column but on the last row), right and below-right (but on the
    # last column)
    strips = (
        (ry * sum(ws) + (rx * h + ry * rx) * (len(ws) - 1)) * (args.classes + 1) * 4
        if len(hs) > 1
        else 0
    )
    print(f"image        {args.height} x {args.width} px")
    print(
        f"tiles        {grid.n_tiles} ({grid.grid_shape[0]} x {grid.grid_shape[1]}) of "
        f"{grid.tile_shape} px"
    )
    print(
        f"stride       {(grid.y.stride, grid.x.stride)} px; last tiles flush with the image border"
    )
    print(f"chunks       {len(hs)} x {len(ws)}; sizes y {sorted(set(hs))}, x {sorted(set(ws))} px")
    print(f"tiles/chunk  {min(rows) * min(cols)} to {max(rows) * max(cols)}, each tile run once")
    print(
        f"a chunk      window {window / 2**20:.0f} MiB ({args.bands} bands of {args.dtype}), sums "
        f"{sums / 2**20:.0f} "
        f"MiB (a tile's height of rows, {args.classes} classes + weight, float64), labels "
        f"{labels / 2**20:.0f} MiB"
    )
    print(
        f"a row        {len(ws)} chunks; the halo strips it hands the row below: "
        f"{strips / 2**20:.0f} MiB "
        f"({ry} rows and {rx} columns a chunk of float32 sums, {args.weights!r} weights), held "
        f"until that row is done"
    )
    if args.gpu_workers:
        n_chunks = len(hs) * len(ws)
        chunks_per_s = args.gpu_workers * args.tiles_per_second / (grid.n_tiles / n_chunks)
        load = chunks_per_s * SCHEDULER_MS_A_CHUNK / 1e3
        verdict = (
            "fits"
            if load < 0.8
            else "the scheduler is the bottleneck: use larger --chunks, or split the scene"
        )
        if n_chunks < args.gpu_workers:
            verdict += f"; only {n_chunks} chunks: at most {n_chunks} workers busy at once"
        print(
            f"scheduler    {args.gpu_workers} workers at {args.tiles_per_second:g} tiles/s: "
            f"{chunks_per_s:.0f} "
            f"chunks/s, {load:.0%} of one scheduler at ~{SCHEDULER_MS_A_CHUNK:g} ms a chunk "
            f"({verdict})"
        )


def evaluate(args: argparse.Namespace) -> None:
    """Print the scores of a written class map against reference labels."""
    import json
    import warnings

    from ..exceptions import IgnoreIndexWarning, OptionError
    from ..io import open_raster
    from ..metrics import scores

    prediction, truth = (
        open_raster(path, chunks=2048).isel(band=0) for path in (args.prediction, args.truth)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoreIndexWarning)  # a value typed for this file: refuse it
        try:
            result = scores(prediction, truth, args.num_classes, ignore_index=args.ignore_index)
        except IgnoreIndexWarning as unused:
            raise OptionError(str(unused).replace("ignore_index=", "--ignore-index ")) from None
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.table())


def vectorize(args: argparse.Namespace) -> None:
    """Write every object of a written class map as a polygon, with its class, in the map's CRS."""
    import os

    from ..classes import NAMES_ATTR
    from ..exceptions import RasterError
    from ..io import open_raster
    from ..objects import polygons, to_vector
    from ..objects.vector import remove_written_vector, written_count
    from ..viz.quicklook import written_classes

    if os.path.abspath(args.target) == os.path.abspath(args.labels):
        raise RasterError(f"OUT {args.target!r} is LABELS: writing it would destroy LABELS")
    if os.path.exists(args.target) and not args.overwrite:
        raise RasterError(f"{args.target!r} exists: pass --overwrite to replace it")
    labels = open_raster(args.labels, chunks=2048).isel(band=0)
    written = written_classes(args.labels)  # a TIFF's GDAL categories, a zarr's attributes
    if written is not None and written.names:
        labels.attrs[NAMES_ATTR] = list(written.names)
    # lazy: the workers write each chunk's objects as they are made (never the scene's in memory)
    frame = polygons(labels, connectivity=args.connectivity, classes=args.classes, lazy=True)
    remove_written_vector(args.target)
    to_vector(frame, args.target)
    crs = frame.crs.to_string() if frame.crs is not None else "no CRS"
    print(f"{written_count(args.target):,} objects -> {args.target} ({crs})")


def k8s(args: argparse.Namespace) -> None:
    """Print the Kubernetes manifests of a GPU dask cluster (or of a job on one)."""
    from ..cluster.kube import (
        DEFAULT_IMAGE,
        KubeSpec,
        cluster_spec,
        job_spec,
        network_policy,
        to_yaml,
    )
    from ..exceptions import OptionError

    def pairs(items: list[str], flag: str) -> dict[str, str]:
        bad = [item for item in items if "=" not in item]
        if bad:
            raise OptionError(f"{flag} takes NAME=VALUE, got {bad[0]!r}")
        return dict(item.split("=", 1) for item in items)

    try:
        import dask_kubernetes  # noqa: F401
    except ImportError:
        raise OptionError(
            "seamless-dask k8s needs dask-kubernetes: pip install 'seamless_dask[kubernetes]'"
        ) from None
    spec = KubeSpec(
        name=args.name,
        image=args.image or DEFAULT_IMAGE,
        gpu_workers=args.gpu_workers,
        worker_threads=args.worker_threads,
        model_tasks_per_gpu=args.model_tasks_per_gpu,
        worker_cpu=args.worker_cpu,
        worker_memory=args.worker_memory,
        env=pairs(args.env, "--env"),
        secret_env=pairs(args.secret_env, "--secret-env"),
        env_from=tuple(args.env_from_secret),
        node_selector=pairs(args.node_selector, "--node-selector"),
        tls_secret=args.tls_secret,
    )
    if args.client_label:
        spec = dataclasses.replace(spec, client_labels=pairs(args.client_label, "--client-label"))
    main = job_spec(args.job, spec) if args.job else cluster_spec(spec)
    print(to_yaml(main, network_policy(spec)), end="")


def demo(args: argparse.Namespace) -> None:
    """Segment the bundled demo scene, naive and seamless, and write the comparison PNG."""
    from ..demo.scene import run_demo

    result = run_demo(args.out, size=args.size)
    print(
        f"differs from whole-image inference: naive {result.naive_error:.2%}, seamless "
        f"{result.seamless_error:.2%}; "
        f"wrote {result.png}"
    )
