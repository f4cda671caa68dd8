"""One whole job, raster file in, raster file out: what ``seamless-dask segment`` runs.

Every check that can fail on user input runs before any pixel is computed, so a mistake costs
seconds: paths (no output may be, hold or lie in an input or another output; an existing output is
replaced only if seamless_dask wrote it), the model spec, the tiling, the scheduler (reached within
a bounded time, with workers). The run holds an exclusive claim on its output, and reports it only
once it is complete (a COG is moved into place after validation, a zarr store is marked complete
after its last region).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, cast

from ..cluster.connect import TLSFiles, job_scheduler
from ..exceptions import OptionError, RasterError, StorageError
from ..options import (
    AMP,
    SEGMENT_OPTIONS,
    TTA,
    Activation,
    Dtype,
    Output,
    WeightsKind,
    output_kind,
)

REGION_OPTIONS = ("region", "region_crs")  # a GeoJSON file and its CRS, read by the job

COG_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class SegmentRequest:
    """A segmentation job: source raster, model, tiling, output file and how to run it."""

    source: str
    target: str
    model: str
    # write into the source OME-Zarr's labels/<label_name>, target is the source
    label_name: str | None = None
    level: int = 0
    class_names: list[str] | None = None
    palette: list[str] | None = None
    tile_size: int | tuple[int, ...] = 256
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
    process_fn: str | None = None
    amp: AMP | None = None
    dtype: Dtype | None = None
    padding: str = "flush"
    cval: float = 0.0
    resolution: float | tuple[float, float] | None = None
    output_resolution: str = "input"
    # a GeoJSON file; its CRS is region_crs, else the file's (RFC 7946: EPSG:4326)
    region: str | None = None
    region_crs: str | None = None
    num_classes: int | None = None
    nodata: float | str | None = "auto"
    scheduler: str | None = None
    resume: bool = False
    overwrite: bool = False
    quicklook: str | None = None
    # the objects of the written class map: their ids (.zarr, .ome.zarr with a properties table,
    # .tif) and their polygons (.parquet, .gpkg, .fgb)
    instances: str | None = None
    vector: str | None = None
    progress: bool = True
    trust_model: bool = False
    tls: TLSFiles | None = None
    # seconds to reach a scheduler; None: dask's distributed.comm.timeouts.connect
    connect_timeout: float | None = None
    worker_wait: float = 300.0  # seconds to wait for a first worker on a scheduler that has none

    def segment_options(self) -> dict[str, Any]:
        """The options of ``segment`` this request sets (the region is read by the job)."""
        names = [o.name for o in SEGMENT_OPTIONS if o.on_cli and o.name not in REGION_OPTIONS]
        return {name: getattr(self, name) for name in names}

    @property
    def target_format(self) -> str:
        """``"cog"``, ``"ome-zarr"`` or ``"zarr"``, from the target's suffix (``"labels"`` with a label
        name).
        """
        target = self.target.rstrip("/").lower()
        if self.label_name is not None:
            return "labels"
        if target.endswith(COG_SUFFIXES):
            return "cog"
        if target.endswith(".ome.zarr"):
            return "ome-zarr"
        if target.endswith(".zarr"):
            return "zarr"
        raise RasterError(
            f"output {self.target!r} must end in .tif/.tiff (a Cloud-Optimized GeoTIFF), "
            f".ome.zarr (an OME-Zarr "
            "pyramid) or .zarr (a zarr store)"
        )


@dataclass
class SegmentReport:
    """What a job wrote."""

    target: str
    shape: tuple[int, ...]
    dtype: str
    nodata: Any
    crs: Any
    tiles: int | None  # None: not counted (--no-progress)
    seconds: float
    quicklook: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line saying what the run does, for the log."""
        size = " x ".join(str(s) for s in self.shape)
        line = (
            f"wrote {self.target}: {size} {self.dtype}, nodata {self.nodata}, CRS {self.crs}; "
            + (f"{self.tiles} tiles in " if self.tiles is not None else "in ")
            + f"{self.seconds:.1f} s"
        )
        if self.quicklook:
            line += f"; quicklook {self.quicklook}"
        return "\n".join([line, *self.notes])


def run_segment(request: SegmentRequest) -> SegmentReport:
    """Check, open, segment, write and (optionally) draw a quicklook; return what was written."""
    from .. import io
    from ..model.runner import ModelRunner, RunnerConfig
    from ..tiling.grid import TileGrid
    from ..viz import quicklook as viz

    start = time.perf_counter()
    if request.label_name is None:
        target = io.as_target(request.target)
    else:  # INPUT's labels/NAME: checked to be an OME-Zarr image first
        target = io.labels_target(io.as_target(request.source), request.label_name)
    _check_paths(request, target)
    # lazy: segment reads its own windows
    image = io.open_raster(
        request.source, bands=request.bands, variable=request.variable, level=request.level
    )
    # Mistakes in the model spec or the tiling fail now, before any cluster starts.
    _check_tiling(request, image)
    ModelRunner(request.model, RunnerConfig(device="cpu", trust_model=request.trust_model)).check()
    try:
        with io.claim(target) as held, job_scheduler(request):
            result, tiles = _write(request, image, target, held.run)
    except Exception as error:
        failure = None if target.local else _store_failure(error)
        if failure is None:
            raise
        raise StorageError(_lost_store_message(request, error, failure)) from None
    report = SegmentReport(
        target=request.target,
        shape=tuple(result.shape),
        dtype=str(result.dtype),
        nodata=result.rio.nodata,
        crs=result.rio.crs,
        tiles=tiles,
        seconds=time.perf_counter() - start,
    )
    if tiles is not None and request.region is not None and request.resolution is None:
        grid = TileGrid((image.sizes["y"], image.sizes["x"]), cast(Any, request.tile_size),
                        request.overlap)  # fmt: skip
        report.notes.append(
            f"the region: {tiles} of the grid's {grid.n_tiles} tiles planned, "
            f"{grid.n_tiles - tiles} outside it never run"
        )
    if request.quicklook:
        kind = output_kind(request.output)
        measure = kind.measures[0] if kind.measures else None  # a map of measures: the first
        report.quicklook = str(
            viz.quicklook(target.url, request.quicklook, image=request.source, measure=measure)
        )
    report.notes += _objects(request, target)
    return report


def _objects(request: SegmentRequest, target: Any) -> list[str]:
    """``--instances`` and ``--vector``: the objects of the class map just written, read back from it
    (the model does not run again).
    """
    if not (request.instances or request.vector):
        return []
    from .. import io
    from ..objects import instances, object_table, polygons, to_vector
    from ..objects.vector import remove_written_vector, written_count

    labels = io.open_raster(target.url).isel(band=0)
    notes = []
    if request.instances:
        ids = instances(labels)
        out = request.instances
        if out.lower().rstrip("/").endswith(".ome.zarr"):
            io.to_ome_zarr(ids, out, overwrite=request.overwrite, properties=object_table(labels))
        elif out.lower().endswith(COG_SUFFIXES):
            io.to_cog(ids, out, overwrite=request.overwrite)
        else:
            io.to_zarr(ids, out, overwrite=request.overwrite)
        notes.append(f"instances -> {out} ({ids.dtype}, 0: no object)")
    if request.vector:
        # a local file: the workers write each chunk's objects as they are made (to_vector)
        local = "://" not in request.vector
        frame = polygons(labels, lazy=local)
        if request.overwrite:
            remove_written_vector(request.vector)
        to_vector(frame, request.vector)
        count = written_count(request.vector) if local else len(frame)
        notes.append(f"{count:,} objects -> {request.vector}")
    return notes


def _store_failure(error: BaseException) -> str | None:
    """How the store failed the write, if ``error`` (or what caused it) is the store's fault and not a
    refusal: it stopped answering, or it kept answering server errors (5xx) past its retries.
    """
    seen: BaseException | None = error
    while seen is not None:
        name = type(seen).__name__
        if "Connection" in name or "Endpoint" in name or isinstance(seen, ConnectionError):
            return "stopped answering"
        response = getattr(seen, "response", None)
        status = (response or {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or "reached max retries" in str(seen):
            return "kept answering server errors past its retries"
        seen = seen.__cause__ or seen.__context__
    return None


def _lost_store_message(request: SegmentRequest, error: BaseException, failure: str) -> str:
    """One line: which store failed, and how to finish the job once it answers again."""
    again = (
        "what was written is kept: run the same command with --resume once it answers"
        if request.target_format in ("zarr", "ome-zarr", "labels")
        else "nothing incomplete was published: run the same command again once it answers"
    )
    return (
        f"the store of {request.target!r} {failure} mid-write ({type(error).__name__}: "
        f"{str(error)[:160]}): {again}"
    )


def _write(request: SegmentRequest, image: Any, target: Any, run: str) -> tuple[Any, int | None]:
    """Segment ``image`` and write it to ``target``, on the scheduler in use; the run holds the claim."""
    from .. import io
    from ..cluster import progress
    from ..segment import segment

    result = (
        segment(  # inside: with a cluster, model tasks get its resources (GPU=1) when it has GPUs
            image,
            request.model,
            **request.segment_options(),
            **_region_options(request),
        )
    )
    resume, overwrite = request.resume, request.overwrite
    writes: Any
    if request.target_format == "cog":
        writes = io.to_cog(result, target.url, overwrite=request.overwrite, compute=False, run=run)
    elif request.target_format in ("ome-zarr", "labels"):
        store = request.source if request.label_name else target.url
        writes = io.to_ome_zarr(
            result,
            store,
            label_name=request.label_name,
            resume=resume,
            overwrite=overwrite,
            compute=False,
        )
    else:
        writes = io.to_zarr(result, target.url, resume=resume, overwrite=overwrite, compute=False)
    # the plan's count, one number a chunk; nothing at all is counted with --no-progress
    tiles = sum(progress.tile_counts(writes).values()) if request.progress else None
    try:
        progress.compute(writes, progress=request.progress, worker_wait=request.worker_wait)
    except BaseException:
        if request.target_format == "cog":
            io.discard_partial_cog(target.url, run=run)
        raise
    if request.target_format == "zarr":
        io.mark_complete(target.url)
    elif request.target_format in ("ome-zarr", "labels"):
        io.mark_ome_zarr_complete(target.url)
    return result, tiles


def _check_tiling(request: SegmentRequest, image: Any) -> None:
    """The tiling checked against the image: a plane's grid, or a volume's lattice (a tile of 3)."""
    from ..tiling.grid import TileGrid
    from ..tiling.lattice import Lattice

    if not (isinstance(request.tile_size, tuple) and len(request.tile_size) == 3):
        TileGrid(
            (image.sizes["y"], image.sizes["x"]), cast(Any, request.tile_size), request.overlap
        )
        return
    if "z" not in image.dims:
        raise OptionError(
            f"--tile-size {','.join(map(str, request.tile_size))} is a volume's (z,y,x), and "
            f"{request.source!r} has no z axis: give --tile-size N or Y,X for a plane"
        )
    for flag, given in (("--quicklook", request.quicklook), ("--instances", request.instances),
                        ("--vector", request.vector), ("--region", request.region)):  # fmt: skip
        if given:
            raise OptionError(f"{flag} is for planes: leave it out for a volume")
    if request.target_format == "cog":
        raise OptionError(
            f"a volume is written to a .zarr or .ome.zarr store, not {request.target!r}: give "
            "OUTPUT.zarr or OUTPUT.ome.zarr"
        )
    Lattice.build(
        tuple(image.sizes[d] for d in ("z", "y", "x")), request.tile_size, request.overlap
    )


def _check_paths(request: SegmentRequest, target: Any) -> None:
    """Refuse, before anything is opened, outputs that would destroy an input or each other."""
    from .. import io

    kind = request.target_format
    if request.resume and request.overwrite:
        raise OptionError(
            "--resume finishes the output that is there and --overwrite replaces it: pass one of "
            "them"
        )
    if request.resume and kind == "cog":
        raise OptionError(
            f"--resume works with .zarr outputs, not {target.url!r}: write a .zarr, or drop "
            f"--resume"
        )
    inputs = {"INPUT": request.source}
    if os.path.isfile(request.model):
        inputs["model file"] = request.model
    # labels/NAME lies in INPUT by design: to_ome_zarr checks that nothing but that group is written
    io.check_not_an_input(target, {} if kind == "labels" else inputs, "OUTPUT")
    target.check_parent()
    if target.exists() and not (request.overwrite or request.resume):
        raise RasterError(
            f"OUTPUT {target.url!r} exists: pass --overwrite to replace it, or --resume to finish "
            f"a .zarr"
        )
    _check_object_paths(request, {**inputs, "OUTPUT": request.target})
    if request.quicklook:
        if "://" in request.quicklook:
            raise OptionError(
                f"--quicklook writes a local PNG, got the URL {request.quicklook!r}: give a local "
                f"path"
            )
        quick = io.as_target(request.quicklook)
        io.check_not_an_input(quick, {**inputs, "OUTPUT": request.target}, "--quicklook")
        if not os.path.isdir(os.path.dirname(quick.url)):
            raise RasterError(
                f"the folder of --quicklook {request.quicklook!r} does not exist: create it first"
            )


def _check_object_paths(request: SegmentRequest, others: dict[str, str]) -> None:
    """``--instances`` and ``--vector``: a class map to take objects from, and outputs that are new
    (or ``--overwrite``), in folders that exist, that name none of the job's other files.
    """
    from .. import io

    wanted = {"--instances": request.instances, "--vector": request.vector}
    for flag, path in wanted.items():
        if path is None:
            continue
        if not output_kind(request.output).is_labels:
            raise OptionError(
                f"{flag} takes the objects of a class map, and --output is {request.output!r}: "
                "drop --output (labels are the default), or run vectorize on a class map later"
            )
        if flag == "--vector" and not path.lower().endswith((".parquet", ".gpkg", ".fgb")):
            raise OptionError(
                f"--vector {path!r}: write polygons to .parquet (GeoParquet), .gpkg (GeoPackage) "
                "or .fgb (FlatGeobuf)"
            )
        if flag == "--instances" and not path.lower().rstrip("/").endswith(
            (".zarr", *COG_SUFFIXES)
        ):
            raise OptionError(
                f"--instances {path!r}: write the object ids to .zarr, .ome.zarr or .tif"
            )
        if "://" in path:
            raise OptionError(
                f"{flag} writes a local file, got the URL {path!r}: give a local path"
            )
        out = io.as_target(path)
        io.check_not_an_input(out, others, flag)
        others = {**others, flag: path}
        if not os.path.isdir(os.path.dirname(out.url)):
            raise RasterError(f"the folder of {flag} {path!r} does not exist: create it first")
        if out.exists() and not request.overwrite:
            raise RasterError(f"{flag} {path!r} exists: pass --overwrite to replace it")
        if flag == "--vector" and request.overwrite:
            from ..objects.vector import remove_written_vector

            remove_written_vector(path, check_only=True)  # refused now, not after the job


MASK_SUFFIXES = (".tif", ".tiff", ".png")  # a --region raster: band 1 non-zero where wanted


def _region_options(request: SegmentRequest) -> dict[str, Any]:
    """``region``/``region_crs`` for ``segment`` from the request's GeoJSON file (read once, here),
    a mask raster (band 1, non-zero where wanted, over the image's extent), or ``tissue``.
    """
    if request.region is None:
        return {}
    if request.region == "tissue":
        return {"region": "tissue"}
    if request.region.lower().endswith(MASK_SUFFIXES):
        return {"region": _read_mask(request.region)}
    from ..tiling.region import read_geojson

    geometry, crs = read_geojson(request.region)
    return {"region": geometry, "region_crs": request.region_crs or crs}


def _read_mask(path: str) -> Any:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG has no geo
            with rasterio.open(path) as src:
                return src.read(1) != 0
    except RasterioIOError as error:
        raise OptionError(f"--region {path!r} cannot be read as a mask raster: {error}") from None
