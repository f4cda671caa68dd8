"""Helpers of this suite only (a user's own tests need seamless_dask.testing: small models and
assertions). Importable as ``support`` from every test: conftest.py puts tests/ on the path.
"""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seamless_dask import TileGrid, TileWeights
from seamless_dask.tiling.grid import ChunkPlan, TileWindow


def read_tile_log(
    path: str | os.PathLike[str],
) -> tuple[collections.Counter[int], collections.Counter[int]]:
    """``(loads per pid, tiles per pid)`` from a SEAMLESS_TILE_LOG file."""
    loads: collections.Counter[int] = collections.Counter()
    tiles: collections.Counter[int] = collections.Counter()
    if not os.path.exists(path):
        return loads, tiles
    with open(path) as f:
        for line in f:
            kind, pid, *n = line.split()
            if kind == "load":
                loads[int(pid)] += 1
            else:
                tiles[int(pid)] += int(n[0])
    return loads, tiles


def tiles_with_data(valid: np.ndarray, tile: int, overlap: int) -> int:
    """How many tiles of the grid over ``valid`` (a ``(H, W)`` mask) hold at least one valid pixel."""
    grid = TileGrid(valid.shape, tile, overlap)
    return sum(bool(valid[w.y, w.x].any()) for w in grid.windows())


def tiles_needed_on_resume(
    plan: ChunkPlan, missing: Sequence[tuple[int, int]], valid: np.ndarray | None = None
) -> int:
    """Tiles a resumed write must run: those owned by the ``missing`` chunks ``[(j, k), ...]`` of
    ``plan``, and those of finished chunks whose non-zero ``"trim"`` weights reach them; never a
    tile with no valid pixel (``valid``).
    """
    y, x = [np.cumsum((0, *c)) for c in plan.chunks]
    regions = [(slice(y[j], y[j + 1]), slice(x[k], x[k + 1])) for j, k in missing]
    trim = TileWeights("trim").for_tile(plan.grid.tile_shape, overlap=plan.grid.effective_overlap)
    end_y, end_x = (
        int(np.flatnonzero(trim.any(axis=1))[-1]) + 1,
        int(np.flatnonzero(trim.any(axis=0))[-1]) + 1,
    )

    def needed(i: int, w: TileWindow) -> bool:
        if valid is not None and not valid[w.y, w.x].any():
            return False
        # where its weights end (a tile inside the image)
        y1, x1 = (
            w.y.start + end_y,
            w.x.start + end_x,
        )
        reaches = any(
            w.y.start < r.stop and r.start < y1 and w.x.start < c.stop and c.start < x1
            for r, c in regions
        )
        return plan.owner(i) in missing or reaches

    return sum(needed(i, w) for i, w in enumerate(plan.grid.windows()))


def python_process(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """``python ARGS`` in a new process, stdout and stderr together."""
    import sys

    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen
    )


def dask_process(kind: str, *args: str, **popen: Any) -> subprocess.Popen[bytes]:
    """``dask scheduler`` or ``dask worker`` (``kind``) with ``ARGS`` in a new process, its output
    into a log file of its own (``process.log``): a process that runs on must never write into a pipe
    no one reads, which blocks it once 64 KiB of logs fill the pipe (a worker cut off logs that
    much, and the scheduler with it stops answering).
    """
    import sys
    import tempfile

    handle, name = tempfile.mkstemp(prefix=f"dask-test-{kind}-", suffix=".log")
    with os.fdopen(handle, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.dask_{kind}", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            **popen,
        )
    process.log = Path(name)  # type: ignore[attr-defined]
    return process


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.1 s; raise an AssertionError naming ``what`` after ``timeout``
    seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def segment_cli(*args: Any, scheduler: str | None = "threads", progress: bool = True) -> int:
    """``seamless-dask segment ARGS`` with the suite's small tiles (64 px, overlap 16), on dask's
    threads unless ``scheduler`` names another (``None``: the CLI's default, a local cluster).
    """
    from seamless_dask.cli import main

    where = ["--scheduler", scheduler] if scheduler else []
    quiet = [] if progress else ["--no-progress"]
    command = ["segment", *map(str, args), "--tile-size", "64", "--overlap", "16"]
    return main([*command, *quiet, *where])


def error_line(capsys: Any) -> str:
    """The last line on stderr, which must be the CLI's one-line error, with no traceback above."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("seamless-dask: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


class DieOnSetup:
    """A worker plugin that ends its worker's process in ``setup`` where ``SEAMLESS_DIE_ON_PLUGIN``
    is set: a worker lost in the middle of a plugin's broadcast, on purpose.
    """

    name = "seamless-test-die-on-setup"

    def setup(self, worker: Any) -> None:
        if os.environ.get("SEAMLESS_DIE_ON_PLUGIN"):
            os._exit(9)
        worker.seamless_test_plugin = True


def ngff_models(version):
    """ome-zarr-models' classes for ``version``; they need a rebuild under pydantic 2.14 (ome-zarr-models 1.6)."""
    if version == "0.4":
        import pydantic_zarr.v2 as specs
        from ome_zarr_models.v04 import image, image_label, labels
    else:
        import pydantic_zarr.v3 as specs
        from ome_zarr_models.v05 import image, image_label, labels
    names = {"ArraySpec": specs.ArraySpec, "GroupSpec": specs.GroupSpec}
    names.update(AnyArraySpec=specs.AnyArraySpec, AnyGroupSpec=specs.AnyGroupSpec)
    for cls in (image.Image, image_label.ImageLabel, labels.Labels):
        cls.model_rebuild(_types_namespace=names, force=True)
    return image.Image, image_label.ImageLabel, labels.Labels


def write_ngff_image(path: Any, image: np.ndarray, zarr_format: int = 2, pixel_size: float = 0.25,
                     chunk: int = 64) -> Any:  # fmt: skip
    """``image`` ``(c, y, x)`` as an OME-Zarr multiscale image of three levels (s0-s2, halving),
    written by hand with zarr: NGFF 0.4 (zarr v2) or 0.5 (v3), physical sizes in micrometres.
    """
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"
    ]
    datasets = []
    for k in range(3):
        group.create_array(f"s{k}", data=image[:, :: 2**k, :: 2**k], chunks=(1, chunk, chunk))
        scale = [1.0, pixel_size * 2**k, pixel_size * 2**k]
        datasets.append(
            {"path": f"s{k}", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    ngff: dict[str, Any] = {"multiscales": [{"axes": axes, "datasets": datasets, "name": "image"}]}
    if zarr_format == 2:
        ngff["multiscales"][0]["version"] = "0.4"
    group.attrs.update(ngff if zarr_format == 2 else {"ome": {"version": "0.5", **ngff}})
    return path


def write_ngff_stack(path: Any, volume: np.ndarray, chunks: tuple = (1, 10, 20, 20)) -> Any:
    """``volume`` ``(c, z, y, x)`` as an NGFF 0.4 z-stack of one level, axes in micrometres (z 2 µm,
    y and x 0.5 µm), written by hand with zarr.
    """
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("s0", data=volume, chunks=chunks)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"
    ]
    scale = [{"type": "scale", "scale": [1.0, 2.0, 0.5, 0.5]}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "s0", "coordinateTransformations": scale}],
        }
    ]
    return path


def tree_hash(path):
    """A hash of every file of an OME-Zarr image but its labels/ group."""
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        if "labels" in os.path.relpath(root, path).split(os.sep):
            continue
        for name in sorted(files):
            with open(os.path.join(root, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()
