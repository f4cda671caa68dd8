"""A write submitted to a distributed cluster a band of chunk rows at a time, so that what the scheduler holds
does not grow with the scene.

Submitted whole, a write of a 100,000 px scene puts every task of its graph on the scheduler at once (five a
chunk, plus the reads and the writes), and a mosaic a hundred times that. Here the writer's graph is split by
the chunk row each write works for (:func:`keys.chunk_row` of the stage-1 tasks it needs) into bands of rows;
two bands are in flight at a time, the next submitted as soon as the oldest is written. A task that a later
band needs too (a chunk's halo strips owed to the row below, the model's key) is computed once, in the first
band that needs it, and held as a future until the last band that needs it is submitted: no tile runs twice.
The writer's last task (a sum of written regions, or the COG's assembly) then runs on the cluster with the
regions' results.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dask
from dask.delayed import Delayed

from . import keys
from .dask_compat import GraphNode, fused, task_nodes

BANDS_IN_FLIGHT = 2
STRAGGLER_TIMEOUT = 300.0  # seconds a failed write waits for its tasks still running on workers
CONFIG = "seamless_dask.band_chunks"  # chunks per band (dask config); default: twice the cluster's threads


@dataclass
class Band:
    """One submission: its tasks (computed nowhere else), the writes it ends with, what it must hand on."""

    writes: list[Hashable] = field(default_factory=list)
    tasks: dict[Hashable, GraphNode] = field(default_factory=dict)
    hold: set[Hashable] = field(default_factory=set)  # computed here, needed by a later band
    release: set[Hashable] = field(default_factory=set)  # held from an earlier band, needed by none after this


@dataclass(frozen=True)
class BandPlan:
    """A writer's graph split into bands; ``final`` is its last task, run on what the writes return."""

    bands: list[Band]
    final: GraphNode


def plan_bands(graph: Mapping, final_key: Hashable, chunks_per_band: int) -> BandPlan | None:
    """Bands of at least ``chunks_per_band`` writes each, in row order; ``None`` when the writes do not all
    work for a chunk row of a seamless_dask graph (the graph is then submitted whole).
    """
    tasks = task_nodes(graph)
    final = tasks.pop(final_key)
    _fuse_blocks_into_writes(tasks, final.dependencies)
    rows = _rows(tasks, final.dependencies)
    if not rows or any(row is None for row in rows.values()):
        return None
    by_row: dict[int, list[Hashable]] = {}
    for key, row in rows.items():
        by_row.setdefault(int(row or 0), []).append(key)
    groups: list[list[Hashable]] = [[]]
    for row in sorted(by_row):
        if len(groups[-1]) >= chunks_per_band:
            groups.append([])
        groups[-1].extend(by_row[row])
    return BandPlan(_split(tasks, groups), final)


def _fuse_blocks_into_writes(tasks: dict[Hashable, GraphNode], writes: frozenset) -> None:
    """Each write and the seamless_dask output block that only it reads become one task: one task a chunk less
    for the scheduler, whose cost per task is what bounds how many workers one keeps busy (docs/cluster.md).
    """
    readers: dict[Hashable, int] = {}
    for task in tasks.values():
        for dependency in task.dependencies:
            readers[dependency] = readers.get(dependency, 0) + 1
    for write in writes:
        node = tasks.get(write)
        if node is None:
            continue
        blocks = [d for d in node.dependencies if d in tasks]
        if len(blocks) != 1:
            continue
        (block,) = blocks
        if (
            readers[block] == 1
            and block not in writes
            and keys.chunk_row(block) is not None
            and not keys.is_inference(block)
        ):
            tasks[write] = fused(tasks.pop(block), node)


def _rows(tasks: Mapping[Hashable, GraphNode], writes: frozenset) -> dict[Hashable, int | None]:
    """For each write, the last chunk row whose model task it needs (its pixels are final once that row ran)."""
    memo: dict[Hashable, int | None] = {}

    def row_of(key: Hashable) -> int | None:
        stack = [key]
        while stack:
            top = stack[-1]
            if top in memo:
                stack.pop()
                continue
            deps = [d for d in tasks[top].dependencies if d in tasks] if top in tasks else []
            pending = [d for d in deps if d not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            own = keys.chunk_row(top) if keys.is_inference(top) else None
            found = [row for row in (own, *(memo[d] for d in deps)) if row is not None]
            memo[top] = max(found, default=None)
        return memo[key]

    return {key: row_of(key) for key in sorted(writes, key=str)}


def _split(tasks: Mapping[Hashable, GraphNode], groups: list[list[Hashable]]) -> list[Band]:
    """Each task goes to the first band that needs it; it is held for every later band that needs it too."""
    first: dict[Hashable, int] = {}
    last: dict[Hashable, int] = {}
    bands = [Band(writes=group) for group in groups]
    for b, band in enumerate(bands):
        stack = list(band.writes)
        while stack:
            key = stack.pop()
            if key in first:
                last[key] = b
                continue
            first[key] = last[key] = b
            band.tasks[key] = tasks[key]
            stack.extend(d for d in tasks[key].dependencies if d in tasks and d not in band.tasks)
    for key, b in first.items():
        if last[key] > b:
            bands[b].hold.add(key)
            bands[last[key]].release.add(key)
    return bands


def chunks_per_band(client: Any) -> int:
    """The config's ``seamless_dask.band_chunks``, else twice the cluster's threads (at least 4)."""
    configured = dask.config.get(CONFIG, None)
    if configured is not None:
        return max(1, int(configured))
    return max(4, 2 * sum(client.nthreads().values()))


def compute(client: Any, obj: Any) -> Any:
    """``obj`` computed on ``client``: a writer's Delayed band by band, anything else (or a graph with no chunk
    rows) in one submission.
    """
    is_write = isinstance(obj, Delayed)  # a lazy array or DataArray comes back whole: submitted whole
    plan = plan_bands(obj.__dask_graph__(), obj.key, chunks_per_band(client)) if is_write else None
    if plan is not None and len(plan.bands) > BANDS_IN_FLIGHT:
        return _run(client, plan)
    future = client.compute(obj)
    try:
        return future.result()
    except BaseException:
        client.cancel([future])
        _wait_for_stragglers(client, set(dict(obj.__dask_graph__())))
        raise


def _run(client: Any, plan: BandPlan) -> Any:
    held: dict[Hashable, Any] = {}
    in_flight: list[list[Any]] = []
    results: dict[Hashable, Any] = {}
    try:
        for band in plan.bands:
            if len(in_flight) >= BANDS_IN_FLIGHT:
                _collect(client, in_flight.pop(0), results)
            wanted = list(band.writes) + sorted(band.hold, key=str)
            futures = dict(zip(wanted, client.get(band.tasks, wanted, sync=False), strict=True))
            held.update({key: futures[key] for key in band.hold})
            in_flight.append([futures[key] for key in band.writes])
            for key in band.release:  # the scheduler keeps it for the band just submitted, then lets it go
                del held[key]
        for pending in in_flight:
            _collect(client, pending, results)
        in_flight.clear()  # every held key was released by the last band that needs it
        return client.submit(_finish, _Opaque(plan.final), results, pure=False).result()
    except BaseException:
        client.cancel([f for band in in_flight for f in band] + list(held.values()))
        _wait_for_stragglers(client, {key for band in plan.bands for key in band.tasks})
        raise


def _wait_for_stragglers(client: Any, ours: set, timeout: float = STRAGGLER_TIMEOUT) -> None:
    """After a failure, wait until no task of ours still runs on a worker: a cancelled task that was running
    finishes (a thread cannot be stopped), and a write it makes after the caller let go of the target could
    land in the next job's output.
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
        f"tasks of the failed write still ran on the cluster after {timeout:.0f} s: a region they write now is "
        "this job's, with its marker; resume (not overwrite) once they are done",
        RuntimeWarning,
        stacklevel=3,
    )


def _executing(dask_worker: Any) -> list[Hashable]:
    return [ts.key for ts in dask_worker.state.executing]


def _collect(client: Any, futures: list[Any], results: dict[Hashable, Any]) -> None:
    """Wait for a band's writes (raising the first failure) and keep what each returned: one request to the
    scheduler a band, not one a write.
    """
    results.update(zip((f.key for f in futures), client.gather(futures), strict=True))


@dataclass(frozen=True)
class _Opaque:
    """Wraps the writer's last task, so that ``submit`` does not read it as a task with the writes for inputs
    (they are results by now, and their keys gone from the scheduler).
    """

    task: GraphNode


def _finish(final: _Opaque, results: dict[Hashable, Any]) -> Any:
    return final.task(results)
