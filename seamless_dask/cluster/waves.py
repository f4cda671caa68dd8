"""A write submitted to a distributed cluster a wave of writes at a time, so that what the scheduler
holds, and what the workers hold, does not grow with the scene.

Submitted whole, a write of a 100,000 px scene puts every task of its graph on the scheduler at once
(three or four a chunk, plus the reads), and a mosaic a hundred times that. Here the writer's graph
is cut into waves (:mod:`seamless_dask.cluster.wave_plan`): whole chunk rows of writes, in the order
their pixels become final, at least twice the cluster's threads in chunks; two waves are in flight
at a time, the next submitted as soon as the oldest is written. A task that a later wave needs too
(a chunk's halo strips owed to the row below, the model's key) is computed once, in the first wave
that needs it, and held as a future until the last wave that needs it is submitted: no tile runs
twice. The writer's last task (a sum of written regions, or the COG's assembly) then runs on the
cluster with the regions' results.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
from dask.delayed import Delayed

from ..graph.layers import GraphNode
from .watch import WorkerWatch
from .wave_plan import LazyWaves, WavePlan, lazy_waves, plan_waves

if TYPE_CHECKING:
    from distributed import Client


WAVES_IN_FLIGHT = 2
STRAGGLER_TIMEOUT = 300.0  # seconds a failed write waits for its tasks still running on workers
# chunks per wave (dask config); default: twice the cluster's threads
CONFIG = "seamless_dask.wave_chunks"
OLD_CONFIG = "seamless_dask.band_chunks"  # its name before 0.2, still read


def chunks_per_wave(client: Client) -> int:
    """The config's ``seamless_dask.wave_chunks``, else twice the cluster's threads (at least 4)."""
    configured = dask.config.get(CONFIG, None)
    if configured is None:
        configured = dask.config.get(OLD_CONFIG, None)
    if configured is not None:
        return max(1, int(configured))
    return max(4, 2 * sum(client.nthreads().values()))


def compute(client: Client, obj: Any, *, worker_wait: float | None = None) -> Any:
    """``obj`` computed on ``client``: a writer's Delayed wave by wave, anything else (or a graph
    with no chunk rows) in one submission. A cluster left without workers is said so, and waited
    for ``worker_wait`` seconds (:class:`~.watch.WorkerWatch`).
    """
    with WorkerWatch(client, worker_wait):
        return _compute(client, obj)


def _compute(client: Client, obj: Any) -> Any:
    # an array comes back whole
    plan = _plan(obj, chunks_per_wave(client)) if isinstance(obj, Delayed) else None
    if plan is not None:
        return _run(client, plan)
    future = client.compute(obj)
    try:
        return future.result()
    except BaseException:
        client.cancel([future])
        _wait_for_stragglers(client, set(dict(obj.__dask_graph__())))
        raise


def _plan(write: Delayed, chunks: int) -> WavePlan | LazyWaves | None:
    """The write's waves, made lazily where they can be; ``None`` when it is small enough to submit
    whole.
    """
    graph = write.__dask_graph__()
    lazy = lazy_waves(graph, write.key, chunks)
    if lazy is not None:
        return (
            lazy
            if len(lazy.by_row) > WAVES_IN_FLIGHT and lazy.writes > WAVES_IN_FLIGHT * chunks
            else None
        )
    plan = plan_waves(graph, write.key, chunks)
    return plan if plan is not None and len(plan.waves) > WAVES_IN_FLIGHT else None


def _run(client: Client, plan: WavePlan | LazyWaves) -> Any:
    held: dict[Hashable, Any] = {}
    in_flight: list[
        tuple[list[Any], set[Hashable]]
    ] = []  # a wave's write futures, and its tasks' keys
    results: dict[Hashable, Any] = {}
    try:
        for wave in plan:
            if len(in_flight) >= WAVES_IN_FLIGHT:
                _collect(client, in_flight.pop(0)[0], results)
            wanted = list(wave.writes) + sorted(wave.hold, key=str)
            futures = dict(zip(wanted, client.get(wave.tasks, wanted, sync=False), strict=True))
            held.update({key: futures[key] for key in wave.hold})
            in_flight.append(([futures[key] for key in wave.writes], set(wave.tasks)))
            for key in (
                wave.release
            ):  # the scheduler keeps it for the wave just submitted, then lets it go
                del held[key]
        for pending, _ in in_flight:
            _collect(client, pending, results)
        in_flight.clear()  # every held key was released by the last wave that needs it
        return client.submit(_finish, _Opaque(plan.final), results, pure=False).result()
    except BaseException:
        client.cancel([f for futures, _ in in_flight for f in futures] + list(held.values()))
        # Only a wave not yet collected can still have a task running: the others' writes are done.
        _wait_for_stragglers(client, {key for _, tasks in in_flight for key in tasks})
        raise


def _wait_for_stragglers(client: Client, ours: set, timeout: float = STRAGGLER_TIMEOUT) -> None:
    """After a failure, wait until no task of ours still runs on a worker: a cancelled task that was
    running finishes (a thread cannot be stopped), and a write it makes after the caller let go of
    the target could land in the next job's output.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            running = client.run(_executing)
        except Exception:  # the cluster itself is going away: nothing more to wait for
            return
        if not any(key in ours for keys_of in running.values() for key in keys_of):
            return
        time.sleep(0.1)
    warnings.warn(
        f"tasks of the failed write still ran on the cluster after {timeout:.0f} s: a region they "
        f"write now is "
        "this job's, with its marker; resume (not overwrite) once they are done",
        RuntimeWarning,
        stacklevel=3,
    )


def _executing(dask_worker: Any) -> list[Hashable]:
    return [ts.key for ts in dask_worker.state.executing]


def _collect(client: Client, futures: list[Any], results: dict[Hashable, Any]) -> None:
    """Wait for a wave's writes (raising the first failure) and keep what each returned: one request
    to the scheduler a wave, not one a write.
    """
    results.update(zip((f.key for f in futures), client.gather(futures), strict=True))


@dataclass(frozen=True)
class _Opaque:
    """Wraps the writer's last task, so that ``submit`` does not read it as a task with the writes
    for inputs (they are results by now, and their keys gone from the scheduler).
    """

    task: GraphNode


def _finish(final: _Opaque, results: dict[Hashable, Any]) -> Any:
    return final.task(results)
