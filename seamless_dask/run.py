"""One whole job, raster file in, raster file out: what ``seamless-dask segment`` runs.

Every check that can fail on user input runs before any pixel is computed, so a mistake costs seconds,
and the output is reported only once it is complete (a COG is moved into place after validation, a zarr
store is marked complete after its last region).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import OptionError, RasterError

COG_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class SegmentRequest:
    """A segmentation job: source raster, model, tiling, output file and how to run it."""

    source: str
    target: str
    model: str
    tile_size: int = 256
    overlap: int = 64
    batch_size: int = 8
    output: str = "labels"
    device: str = "auto"
    chunks: int | None = None
    bands: list[int] | None = None
    variable: str | None = None
    normalize: tuple[Any, Any] | None = None
    activation: str | None = "softmax"
    weights: str = "trim"
    num_classes: int | None = None
    nodata: float | str | None = "auto"
    scheduler: str | None = None
    resume: bool = False
    overwrite: bool = False
    quicklook: str | None = None
    progress: bool = True
    trust_model: bool = False

    @property
    def kind(self) -> str:
        """``"cog"`` or ``"zarr"``, from the target's suffix."""
        target = self.target.rstrip("/").lower()
        if target.endswith(COG_SUFFIXES):
            return "cog"
        if target.endswith(".zarr"):
            return "zarr"
        raise RasterError(
            f"output {self.target!r} must end in .tif/.tiff (a Cloud-Optimized GeoTIFF) or .zarr (a zarr store)"
        )


@dataclass
class SegmentReport:
    """What a job wrote."""

    target: str
    shape: tuple[int, ...]
    dtype: str
    nodata: Any
    crs: Any
    tiles: int
    seconds: float
    quicklook: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        size = " x ".join(str(s) for s in self.shape)
        line = (
            f"wrote {self.target}: {size} {self.dtype}, nodata {self.nodata}, CRS {self.crs}; "
            f"{self.tiles} tiles in {self.seconds:.1f} s"
        )
        if self.quicklook:
            line += f"; quicklook {self.quicklook}"
        return "\n".join([line, *self.notes])


def run_segment(request: SegmentRequest) -> SegmentReport:
    """Check, open, segment, write and (optionally) draw a quicklook; return what was written."""
    from . import io, progress, viz
    from .grid import TileGrid
    from .runner import ModelRunner, RunnerConfig
    from .segment import segment

    start = time.perf_counter()
    _check_target(request)
    # lazy: segment reads its own windows
    image = io.open_raster(request.source, bands=request.bands, variable=request.variable)
    # Mistakes in the model spec or the tiling fail now, before any cluster starts.
    TileGrid((image.sizes["y"], image.sizes["x"]), request.tile_size, request.overlap)
    ModelRunner(request.model, RunnerConfig(device="cpu", trust_model=request.trust_model)).check()
    with _scheduler(request.scheduler):
        result = segment(  # inside: with a cluster, model tasks get its resources (GPU=1) when it has GPUs
            image,
            request.model,
            tile_size=request.tile_size,
            overlap=request.overlap,
            batch_size=request.batch_size,
            output=request.output,
            device=request.device,
            chunks=request.chunks,
            normalize=request.normalize,
            activation=request.activation,
            weights=request.weights,
            num_classes=request.num_classes,
            nodata=request.nodata,
            trust_model=request.trust_model,
        )
        if request.kind == "cog":
            writes = io.to_cog(result, request.target, overwrite=request.overwrite, compute=False)
        else:
            overwrite = request.overwrite and not request.resume
            writes = io.to_zarr(result, request.target, resume=request.resume, overwrite=overwrite, compute=False)
        tiles = sum(progress.tile_counts(writes).values())
        try:
            progress.compute(writes, progress=request.progress)
        except BaseException:
            if request.kind == "cog":
                io.discard_partial_cog(request.target)
            raise
        if request.kind == "zarr":
            io.mark_complete(request.target)
    report = SegmentReport(
        target=request.target,
        shape=tuple(result.shape),
        dtype=str(result.dtype),
        nodata=result.rio.nodata,
        crs=result.rio.crs,
        tiles=tiles,
        seconds=time.perf_counter() - start,
    )
    if request.quicklook:
        report.quicklook = str(viz.quicklook(request.target, request.quicklook, image=request.source))
    return report


def _check_target(request: SegmentRequest) -> None:
    kind, target = request.kind, request.target
    parent = Path(target).resolve().parent
    if not parent.is_dir():
        raise RasterError(f"the folder {str(parent)!r} of OUTPUT {target!r} does not exist: create it first")
    if request.resume and kind != "zarr":
        raise OptionError(f"--resume works with .zarr outputs, not {target!r}: write a .zarr, or drop --resume")
    if os.path.exists(target) and not (request.overwrite or request.resume):
        raise RasterError(f"OUTPUT {target!r} exists: pass --overwrite to replace it, or --resume to finish a .zarr")
    if request.quicklook and not Path(request.quicklook).resolve().parent.is_dir():
        raise RasterError(f"the folder of --quicklook {request.quicklook!r} does not exist: create it first")


LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


@contextlib.contextmanager
def _scheduler(address: str | None) -> Iterator[Any]:
    """Where the job runs: a new ``LocalCluster`` sized to the machine (``None``), a dask scheduler at
    ``address``, or one of dask's local schedulers by name (``threads``: no cluster to start)."""
    import dask

    if address in LOCAL_SCHEDULERS:
        from .cluster import configure_process

        configure_process()  # this process reads the raster: cap GDAL's block cache
        with dask.config.set(scheduler=address):
            yield None
        return
    from distributed import Client

    from .cluster import local_cluster, setup_workers

    if address is None:
        with local_cluster(dashboard=False) as client, client.cluster:
            yield client
        return
    try:
        client = Client(address)  # waits distributed.comm.timeouts.connect (dask config)
    except (OSError, TimeoutError) as error:
        raise OptionError(f"cannot reach the dask scheduler at {address!r} ({error}): check --scheduler") from None
    with client:
        setup_workers(client)
        yield client
