"""dask.distributed: a local cluster sized to the machine, worker set-up, models shipped once per
worker.

- :func:`local_cluster` starts a ``LocalCluster`` (processes x threads <= cores; one worker per GPU
  with the ``GPU`` resource where GPUs exist) and returns its ``Client``.
- :func:`setup_workers` sets torch's thread count on every worker (nanny-started workers run with
  ``OMP_NUM_THREADS=1``, so torch would use one thread however many cores the worker was given) and
  caps GDAL's block cache.
- :func:`shareable` turns an in-memory model into a small token for the graph and sends the model
  itself to the workers once, as a ``WorkerPlugin`` (which also reaches workers that join later).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Any

from distributed import SchedulerPlugin, WorkerPlugin

from ..exceptions import OptionError
from ..graph import keys
from ..model.loading import RegisteredModel, register_model, spec_token
from ..model.runner import ModelRunner

if TYPE_CHECKING:
    from distributed import Client


def current_client() -> Client | None:
    """The active ``distributed.Client``, or ``None`` (no distributed, or none made)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def cluster_has_gpus(client: Client | None = None) -> bool:
    """Whether a worker of the active cluster advertises a ``GPU`` resource."""
    client = client or current_client()
    if client is None:
        return False
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(info.get("resources", {}).get("GPU", 0) > 0 for info in workers.values())


class ModelPlugin(WorkerPlugin):
    """A ``WorkerPlugin`` carrying one in-memory model to every worker, where graphs find it by token."""

    def __init__(self, token: str, model: Any) -> None:
        self.name = "seamless-model-" + token
        self.token, self.model = token, model

    def setup(self, worker: Any) -> None:
        """Called by distributed on each worker as it joins."""
        register_model(self.token, self.model)


GDAL_CACHE_MB = 128


def configure_process(
    *,
    torch_threads: int | None = None,
    gdal_cache_mb: int | None = GDAL_CACHE_MB,
    mmap_threshold: int | None = None,
) -> None:
    """Set up a process that runs seamless_dask tasks: torch's thread count, GDAL's block cache and
    glibc's mmap threshold (``mmap_threshold`` bytes, else :func:`mmap_threshold`).

    GDAL caches decoded raster blocks up to 5 % of the machine's memory by default, in every worker
    process; seamless_dask reads each block once, so a larger cache only grows RSS with the image
    (docs/benchmarks.md, "Memory figures once quoted in docstrings").
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
        os.environ["OMP_NUM_THREADS"] = str(torch_threads)  # for libraries that read it later
    _fixed_mmap_threshold(mmap_threshold or mmap_threshold_bytes())
    if gdal_cache_mb:
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", int(gdal_cache_mb) * 2**20)
        os.environ["GDAL_CACHEMAX"] = str(int(gdal_cache_mb))


MMAP_THRESHOLD = 16 * 2**20  # bytes; dask config "seamless_dask.mmap_threshold" overrides it
MMAP_CONFIG = "seamless_dask.mmap_threshold"


def mmap_threshold_bytes() -> int:
    """The mmap threshold worker processes get: dask's ``seamless_dask.mmap_threshold`` (bytes, or
    a size such as ``"64 MiB"``), else 16 MiB.
    """
    import dask
    from dask.utils import parse_bytes

    configured = dask.config.get(MMAP_CONFIG, None)
    if configured is None:
        return MMAP_THRESHOLD
    value = parse_bytes(configured) if isinstance(configured, str) else int(configured)
    if value < 2**17:
        raise OptionError(
            f"{MMAP_CONFIG} must be at least 128 KiB (glibc's own floor), got {configured!r}: "
            "16 MiB keeps a model's activations in the heap and chunk-sized arrays mapped"
        )
    return value


def _fixed_mmap_threshold(threshold: int) -> None:
    """Ask glibc to give every allocation of ``threshold`` bytes or more its own mapping, returned
    to the system when freed. By default glibc raises that threshold after the first large free, and
    then keeps the chunk-sized arrays of later tasks in heap arenas that never shrink: RSS grows
    with the image (docs/benchmarks.md, "Memory figures once quoted in docstrings"). Below it,
    blocks are reused from the heap: a model's activations (tens of MiB a batch) mapped afresh at
    every call ran a CPU model 1.6-1.8x slower (distributed's nannies set ``MALLOC_TRIM_THRESHOLD_``,
    which pins the threshold at 128 KiB: docs/benchmarks.md, "The mmap threshold").
    """
    m_mmap_threshold = -3
    set_malloc_option(m_mmap_threshold, threshold)


def set_malloc_option(option: int, value: int) -> None:
    """Call glibc's ``mallopt(option, value)`` for this process, on Linux; nothing elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(option, value)


class WorkerSetup(WorkerPlugin):
    """A ``WorkerPlugin`` running :func:`configure_process` on every worker: torch threads
    (``torch_threads``, or the worker's cores per dask thread, ``CPU_COUNT // nthreads``, right for
    one worker per machine or pod; nanny-started workers otherwise run torch on one thread), GDAL's
    block cache and glibc's mmap threshold.
    """

    name = "seamless-worker-setup"

    def __init__(
        self,
        torch_threads: int | None = None,
        gdal_cache_mb: int | None = GDAL_CACHE_MB,
        mmap_threshold: int | None = None,
    ) -> None:
        self.torch_threads, self.gdal_cache_mb = torch_threads, gdal_cache_mb
        # read where the plugin is made: the client's dask config, not each worker's
        self.mmap_threshold = mmap_threshold or mmap_threshold_bytes()

    def setup(self, worker: Any) -> None:
        """Called by distributed on each worker as it joins."""
        from dask.system import CPU_COUNT

        threads = self.torch_threads or max(1, CPU_COUNT // max(1, worker.state.nthreads))
        configure_process(
            torch_threads=threads,
            gdal_cache_mb=self.gdal_cache_mb,
            mmap_threshold=self.mmap_threshold,
        )


class ResourceRouting(SchedulerPlugin):
    """On the scheduler: model tasks whose key names carry resources
    (``seamless-infer-[GPU=1]-...``) get those resource restrictions, so they run only on workers
    that advertise them.

    dask drops layer annotations when it fuses an array graph (dask#7036, distributed#8593; a mixed
    cluster ran 37 % of model tasks on its GPU worker), but key names survive optimisation.
    """

    name = "seamless-resource-routing"

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        """Called by the scheduler with each new graph."""
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is not None and keys.runs_model(ts.key):
                resources = keys.parse_resource_tag(str(key[0]))
                if resources:
                    ts.resource_restrictions = resources


class RowOrder(SchedulerPlugin):
    """On the scheduler: a seamless_dask graph runs row of chunks by row of chunks.

    Only thin strips wait between chunks: the halo parts a chunk owes the chunks below and to its
    right, and its settled bands waiting for those above and to its left. In row-major order they
    wait for one row of chunks at most; in dask's own order (which may start chunks several rows
    apart) the front of waiting strips grew with the scene. Every task of a new graph is ranked by
    the row of the chunk it works for (its own key's, else its dependencies' for a task downstream
    such as a zarr region write, else its dependents' for one upstream such as a rechunk), then by
    dask's priority; that rank replaces dask's order in the task's priority, before any task is
    queued. Graphs without seamless_dask chunks are left as they are.
    """

    name = "seamless-row-order"

    def update_graph(self, scheduler: Any, *, tasks: Any = (), **kwargs: Any) -> None:
        """Called by the scheduler with each new graph."""
        touched = [scheduler.tasks[key] for key in tasks if key in scheduler.tasks]
        rows = chunk_rows(touched)
        if not any(row is not None for row in rows.values()):
            return
        ranked = sorted(touched, key=lambda ts: (_or_first(rows[ts.key]), ts.priority))
        for rank, ts in enumerate(ranked):
            if ts.state == "released" and ts.priority is not None:
                ts.priority = (*ts.priority[:-1], rank)


class TileEvents(SchedulerPlugin):
    """On the scheduler: an event on the topic ``seamless-tiles`` each time a model task's result is
    in memory, which the client's tile progress bar follows (:mod:`seamless_dask.cluster.progress`);
    a ``Future`` made from a key name would never hear of it, since the scheduler reports keys only
    to clients that asked for them.
    """

    name = "seamless-tile-events"

    def __init__(self) -> None:
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        """Called by the scheduler as the plugin is registered."""
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Called by the scheduler at each task transition."""
        if finish == "memory" and self.scheduler is not None and keys.runs_model(key):
            self.scheduler.log_event(keys.TILE_TOPIC, list(key))


def chunk_rows(tasks: list[Any]) -> dict[Any, int | None]:
    """The row of chunks each task works for (see :class:`RowOrder`); ``None`` for tasks of no row."""
    in_graph = {ts.key for ts in tasks}
    # dask's order runs dependencies first
    ordered = sorted(tasks, key=lambda ts: ts.priority or ())
    rows: dict[Any, int | None] = {ts.key: keys.chunk_row(ts.key) for ts in ordered}
    for ts in ordered:  # downstream: after the latest row it depends on
        if rows[ts.key] is None:
            rows[ts.key] = _known(
                max, (rows.get(d.key) for d in ts.dependencies if d.key in in_graph)
            )
    for ts in reversed(ordered):  # upstream: with the earliest row that needs it
        if rows[ts.key] is None:
            rows[ts.key] = _known(
                min, (rows.get(d.key) for d in ts.dependents if d.key in in_graph)
            )
    return rows


def _known(pick: Any, rows: Any) -> int | None:
    """``pick`` (``min`` or ``max``) of the rows that are known, ``None`` when none is."""
    known = [r for r in rows if r is not None]
    return pick(known) if known else None


def _or_first(row: int | None) -> int:
    return -1 if row is None else row


def setup_workers(
    client: Client, *, torch_threads: int | None = None, gdal_cache_mb: int | None = GDAL_CACHE_MB
) -> None:
    """Register :class:`WorkerSetup` on ``client``'s workers (those that join later get it too) and
    :class:`ResourceRouting` and :class:`RowOrder` on its scheduler (which must be able to import
    seamless_dask).
    """
    register_worker_plugin(client, WorkerSetup(torch_threads, gdal_cache_mb))
    ensure_scheduler_plugins(client)


WORKER_LOSS_RETRIES = 3  # broadcasts of a worker plugin tried again when a worker is lost in one


def register_worker_plugin(client: Client, plugin: WorkerPlugin, name: str | None = None) -> None:
    """Register a worker plugin on every worker, now and joining later, whatever workers are lost
    meanwhile.

    The scheduler keeps the plugin before it sends it to its workers, and a worker lost during the
    sending makes the whole registration raise (a spot worker taken back as the job starts). That
    is no reason to fail the job: the broadcast is sent again, to the workers alive then (a worker
    that has the plugin sets it up again, as dask does for a plugin of the same name), and if
    workers keep vanishing, the scheduler's registry decides: a plugin it holds reaches every worker
    that joins. Only a scheduler that cannot be reached fails it.
    """
    name = name or getattr(plugin, "name", None) or type(plugin).__name__
    for attempt in range(WORKER_LOSS_RETRIES):
        try:
            client.register_plugin(plugin, name=name)
            return
        except (OSError, TimeoutError):  # CommClosedError is an OSError
            time.sleep(0.2 * (attempt + 1))

    def holds(dask_scheduler: Any, name: str) -> bool:  # sent by value: no import on the scheduler
        return name in dask_scheduler.worker_plugins

    if not client.run_on_scheduler(holds, name=name):
        client.register_plugin(plugin, name=name)  # raises what it meets


def ensure_scheduler_plugins(client: Client, *, required: bool = True) -> None:
    """Register :class:`ResourceRouting`, :class:`RowOrder` and :class:`TileEvents` on ``client``'s
    scheduler, once per client.

    The scheduler must be able to import seamless_dask. When it cannot and nothing ``required`` them
    (no task needs worker resources), the job runs without them, in dask's own order, with a
    warning.
    """
    plugins: tuple[ResourceRouting | RowOrder | TileEvents, ...] = (
        ResourceRouting(),
        RowOrder(),
        TileEvents(),
    )
    for plugin in plugins:
        if plugin.name in _registered(client):
            continue
        try:
            client.register_plugin(plugin)
        except Exception as error:
            if required:
                raise
            warnings.warn(
                f"seamless_dask: could not register its scheduler plugins "
                f"({type(error).__name__}: {error}); the "
                "job runs in dask's order, so memory grows with the scene, and the tile progress "
                "bar does not advance: "
                "install seamless_dask where the scheduler runs (one image for scheduler, workers "
                "and client)",
                RuntimeWarning,
                stacklevel=3,
            )
            _registered(client).update(p.name for p in plugins)
            return
        _registered(client).add(plugin.name)


def shareable(runner: ModelRunner, client: Client | None = None) -> ModelRunner:
    """``runner`` with an in-memory model replaced by a token, the model sent to the workers once.

    Without a client, or for string specs (import strings and files, which workers load themselves,
    once per process), ``runner`` is returned as it is.
    """
    client = client or current_client()
    if client is None or isinstance(runner.spec, (str, RegisteredModel)):
        return runner
    token = spec_token(runner.spec)
    # the client process too: it probes the model for its classes
    register_model(token, runner.spec)
    plugin = ModelPlugin(token, runner.spec)
    if plugin.name not in _registered(client):
        register_worker_plugin(client, plugin, plugin.name)
        _registered(client).add(plugin.name)
    return ModelRunner(RegisteredModel(token, type(runner.spec).__name__), runner.config)


def _registered(client: Client) -> set[str]:
    names: set[str] = client.__dict__.setdefault("_seamless_plugins", set())
    return names


def local_cluster(
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    torch_threads: int | None = None,
    gpus: int | None = None,
    model_tasks_per_gpu: int = 2,
    dashboard: bool = True,
    security: Any = None,
    memory_limit: str | float = "auto",
) -> Any:
    """A ``Client`` on a new local cluster sized to this machine; close it (or use ``with``) when
    done. ``memory_limit``: each worker's, as distributed takes it (``"3GiB"``; ``"auto"``: the
    machine's memory shared out).

    With GPUs (``torch.cuda.device_count()``, or ``gpus``): one worker per GPU, each seeing only its
    own GPU (``CUDA_VISIBLE_DEVICES``), advertising the resource ``GPU=model_tasks_per_gpu`` (2),
    with up to 4 dask threads (its share of the cores): each model task needs ``GPU=1``, so two
    share the GPU, one blending on the host while the other's batch runs (on an H200, 1.7x the
    tiles/s of one: docs/benchmarks.md, "On a GPU"), and the other threads read windows and write,
    so that the GPU does not wait for them. Without:
    one worker process with a dask thread per core and one torch thread per dask thread, since on
    CPU tiles run faster side by side than one at a time on all cores; ``processes x threads <=
    cores``.

    ``security`` (a ``distributed.security.Security``, e.g. ``Security.temporary()``): the cluster
    speaks TLS (``tls://``) among its members and with the client.
    """
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    gpus = _visible_gpus() if gpus is None else gpus
    if (
        isinstance(model_tasks_per_gpu, bool)
        or not isinstance(model_tasks_per_gpu, int)
        or (model_tasks_per_gpu < 1)
    ):
        raise OptionError(
            f"model_tasks_per_gpu must be a whole number >= 1, got {model_tasks_per_gpu!r}: "
            "2 lets one model task blend while the other's batch is on the GPU"
        )
    # a free port either way: without one the scheduler's HTTP server (health, metrics) takes 8787,
    # and a second cluster on the machine warns that it is in use
    address = ":0"
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    if gpus:
        threads = threads_per_worker or min(max(4, model_tasks_per_gpu), max(1, CPU_COUNT // gpus))
        cluster = _gpu_cluster(
            gpus, threads, address, security, dashboard=dashboard,
            slots=min(model_tasks_per_gpu, threads), memory_limit=memory_limit,
        )  # fmt: skip
        per_worker = max(1, CPU_COUNT // gpus)
    else:
        n_workers = n_workers or 1
        threads = threads_per_worker or max(1, CPU_COUNT // n_workers)
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=address,
            scheduler_kwargs={"dashboard": dashboard},
            **tls,
        )
        per_worker = max(1, CPU_COUNT // (n_workers * threads))
    client = Client(cluster, security=security)
    setup_workers(client, torch_threads=torch_threads or per_worker)
    return client


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _gpu_cluster(
    gpus: int, threads: int, dashboard_address: str | None, security: Any = None,
    *, dashboard: bool = True, slots: int = 1, memory_limit: str | float = "auto",
) -> Any:  # fmt: skip
    from distributed import Nanny, Scheduler, SpecCluster

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(gpus)]
    tls = {"security": security, "protocol": "tls://"} if security is not None else {}
    workers = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": threads,
                "memory_limit": memory_limit,
                "resources": {"GPU": slots},  # model tasks side by side, GPU=1 each
                "env": {"CUDA_VISIBLE_DEVICES": device},
                **({"security": security} if security is not None else {}),
            },
        }
        for i, device in enumerate(devices[:gpus])
    }
    options = {"dashboard_address": dashboard_address, "dashboard": dashboard, **tls}
    scheduler = {"cls": Scheduler, "options": options}
    return SpecCluster(workers=workers, scheduler=scheduler, security=security)
