"""One whole job, raster file in, raster file out: what ``seamless-dask segment`` runs.

Every check that can fail on user input runs before any pixel is computed, so a mistake costs seconds:
paths (no output may be, hold or lie in an input or another output; an existing output is replaced only if
seamless_dask wrote it), the model spec, the tiling, the scheduler (reached within a bounded time, with
workers). The run holds an exclusive claim on its output, and reports it only once it is complete (a COG is
moved into place after validation, a zarr store is marked complete after its last region).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .exceptions import OptionError, RasterError
from .options import AMP, TTA, Activation, Output, WeightsKind

COG_SUFFIXES = (".tif", ".tiff")
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a TLS-secured dask cluster: the CA that signed its certificates, this client's certificate
    and key (for a local cluster, every member's).
    """

    ca_file: str
    cert: str
    key: str

    def security(self) -> Any:
        """The ``distributed.Security`` of the TLS options, or ``None`` without them."""
        from distributed.security import Security

        for name, path in (("--tls-ca-file", self.ca_file), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if not os.path.isfile(path):
                raise OptionError(f"{name} {path!r} is not a file: give the PEM file of the cluster's TLS set-up")
        pairs = {
            f"tls_{who}_{part}": getattr(self, part)
            for who in ("client", "scheduler", "worker")
            for part in ("cert", "key")
        }
        return Security(tls_ca_file=self.ca_file, require_encryption=True, **pairs)


@dataclass(frozen=True)
class SegmentRequest:
    """A segmentation job: source raster, model, tiling, output file and how to run it."""

    source: str
    target: str
    model: str
    tile_size: int = 256
    overlap: int = 64
    batch_size: int = 8
    output: Output = "labels"
    device: str = "auto"
    chunks: int | None = None
    bands: list[int] | None = None
    variable: str | None = None
    normalize: tuple[Any, Any] | None = None
    activation: Activation | None = "softmax"
    weights: WeightsKind = "trim"
    tta: TTA | None = None
    head: str | None = None
    amp: AMP | None = None
    region: str | None = None  # a GeoJSON file; its CRS is region_crs, else the file's (RFC 7946: EPSG:4326)
    region_crs: str | None = None
    num_classes: int | None = None
    nodata: float | str | None = "auto"
    scheduler: str | None = None
    resume: bool = False
    overwrite: bool = False
    quicklook: str | None = None
    progress: bool = True
    trust_model: bool = False
    tls: TLSFiles | None = None
    connect_timeout: float | None = None  # seconds to reach a scheduler; None: dask's distributed.comm.timeouts.connect
    worker_wait: float = 300.0  # seconds to wait for a first worker on a scheduler that has none

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
        """One line saying what the run does, for the log."""
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
    from . import io, viz
    from .grid import TileGrid
    from .runner import ModelRunner, RunnerConfig

    start = time.perf_counter()
    target = io.as_target(request.target)
    _check_paths(request, target)
    # lazy: segment reads its own windows
    image = io.open_raster(request.source, bands=request.bands, variable=request.variable)
    # Mistakes in the model spec or the tiling fail now, before any cluster starts.
    TileGrid((image.sizes["y"], image.sizes["x"]), request.tile_size, request.overlap)
    ModelRunner(request.model, RunnerConfig(device="cpu", trust_model=request.trust_model)).check()
    with io.claim(target) as held, _scheduler(request):
        result, tiles = _write(request, image, target, held.run)
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
        report.quicklook = str(viz.quicklook(target.url, request.quicklook, image=request.source))
    return report


def _write(request: SegmentRequest, image: Any, target: Any, run: str) -> tuple[Any, int]:
    """Segment ``image`` and write it to ``target``, on the scheduler in use; the run holds the claim."""
    from . import io, progress
    from .segment import segment

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
        tta=request.tta,
        head=request.head,
        amp=request.amp,
        **_region_options(request),
    )
    if request.kind == "cog":
        writes = io.to_cog(result, target.url, overwrite=request.overwrite, compute=False, run=run)
    else:
        writes = io.to_zarr(result, target.url, resume=request.resume, overwrite=request.overwrite, compute=False)
    tiles = sum(progress.tile_counts(writes).values())
    try:
        progress.compute(writes, progress=request.progress)
    except BaseException:
        if request.kind == "cog":
            io.discard_partial_cog(target.url, run=run)
        raise
    if request.kind == "zarr":
        io.mark_complete(target.url)
    return result, tiles


def _check_paths(request: SegmentRequest, target: Any) -> None:
    """Refuse, before anything is opened, outputs that would destroy an input or each other."""
    from . import io

    kind = request.kind
    if request.resume and request.overwrite:
        raise OptionError("--resume finishes the output that is there and --overwrite replaces it: pass one of them")
    if request.resume and kind != "zarr":
        raise OptionError(f"--resume works with .zarr outputs, not {target.url!r}: write a .zarr, or drop --resume")
    inputs = {"INPUT": request.source}
    if os.path.isfile(request.model):
        inputs["model file"] = request.model
    io.check_not_an_input(target, inputs, "OUTPUT")
    target.check_parent()
    if target.exists() and not (request.overwrite or request.resume):
        raise RasterError(
            f"OUTPUT {target.url!r} exists: pass --overwrite to replace it, or --resume to finish a .zarr"
        )
    if request.quicklook:
        if "://" in request.quicklook:
            raise OptionError(f"--quicklook writes a local PNG, got the URL {request.quicklook!r}: give a local path")
        quick = io.as_target(request.quicklook)
        io.check_not_an_input(quick, {**inputs, "OUTPUT": request.target}, "--quicklook")
        if not os.path.isdir(os.path.dirname(quick.url)):
            raise RasterError(f"the folder of --quicklook {request.quicklook!r} does not exist: create it first")


@contextlib.contextmanager
def _scheduler(request: SegmentRequest) -> Iterator[Any]:
    """Where the job runs: a new ``LocalCluster`` sized to the machine (no ``--scheduler``; TLS with the
    request's certificates), a dask scheduler at an address (reached within ``connect_timeout``, waiting
    ``worker_wait`` at most for a first worker), or one of dask's local schedulers by name.
    """
    import dask

    address = request.scheduler
    if address in LOCAL_SCHEDULERS:
        from .cluster import configure_process

        configure_process()  # this process reads the raster: cap GDAL's block cache
        with dask.config.set(scheduler=address):
            yield None
        return
    from distributed import Client

    from .cluster import local_cluster, setup_workers

    security = request.tls.security() if request.tls else None
    if address is None:
        with local_cluster(dashboard=False, security=security) as client, client.cluster:
            yield client
        return
    if address.startswith("tls://") and security is None:
        from distributed.security import Security

        security = Security()  # dask's configuration (distributed.comm.tls.*), as the Kubernetes pods set it
        if getattr(security, "tls_ca_file", None) is None:
            raise OptionError(
                f"the scheduler {address!r} speaks TLS: give --tls-ca-file, --tls-cert and --tls-key (the CA and the "
                "client certificate and key the cluster trusts), or set them in dask's configuration"
            )
    timeout = request.connect_timeout
    if timeout is None:
        timeout = dask.utils.parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    probe_scheduler(address, security, timeout)
    with Client(address, security=security, timeout=timeout) as client:
        wait_for_workers(client, address, request.worker_wait)
        setup_workers(client)
        yield client


def probe_scheduler(address: str, security: Any, timeout: float) -> None:
    """Ask ``address`` who it is, within ``timeout`` seconds, before a ``Client`` is made.

    ``distributed.Client`` waits without bound on a server that accepts the connection and never answers,
    and reads an HTTP server's reply as a frame length (an allocation of exabytes): both fail here instead.
    """
    from distributed.comm import connect

    args = security.get_connection_args("client") if security is not None else {}

    async def identity() -> Any:
        comm = await connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    try:
        answer = asyncio.run(bounded())
    except (OSError, TimeoutError, asyncio.TimeoutError, MemoryError, ValueError, TypeError) as error:
        why = f"{type(error).__name__}: {' '.join(str(error).split())}" if str(error) else type(error).__name__
        within = f" within {timeout:g} s" if isinstance(error, (OSError, TimeoutError, asyncio.TimeoutError)) else ""
        raise OptionError(
            f"cannot reach a dask scheduler at {address!r}{within} ({why}): check --scheduler (the "
            "scheduler's tcp:// or tls:// address, port 8786 by default, not its dashboard), that it runs, and "
            "--connect-timeout"
        ) from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise OptionError(f"{address!r} answered, but not as a dask scheduler ({str(answer)[:80]}): check --scheduler")


def wait_for_workers(client: Any, address: str, wait: float) -> None:
    """Return once the scheduler has a worker; warn at once if it has none, fail after ``wait`` seconds."""
    if client.scheduler_info(n_workers=-1).get("workers"):
        return
    print(
        f"seamless-dask: warning: the scheduler at {address} has no worker yet; waiting up to {wait:g} s for one "
        "(start workers with: dask worker " + address + "; see --worker-wait)",
        file=sys.stderr,
    )
    try:
        client.wait_for_workers(1, timeout=wait)
    except (TimeoutError, asyncio.TimeoutError):
        raise OptionError(
            f"no worker joined the scheduler at {address!r} within {wait:g} s: start workers (dask worker {address}), "
            "or give them longer with --worker-wait"
        ) from None


def _region_options(request: SegmentRequest) -> dict[str, Any]:
    """``region``/``region_crs`` for ``segment`` from the request's GeoJSON file (read once, here)."""
    if request.region is None:
        return {}
    from .region import read_geojson

    geometry, crs = read_geojson(request.region)
    return {"region": geometry, "region_crs": request.region_crs or crs}
