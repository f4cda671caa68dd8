"""Progress in tiles: how many grid tiles have been through the model, on any dask scheduler.

``compute(obj, progress=True)`` runs a lazy ``segment`` result or a writer's Delayed with a tqdm bar
counting tiles (or, ``progress=callable``, calls ``callable(done, total)`` in tiles instead: the bar
is one such callback). Local schedulers (threads, processes) report each stage-1 task as it ends, through a
dask callback. On a ``distributed`` cluster, the :class:`TileEvents` scheduler plugin (registered
with the other scheduler plugins, see :func:`seamless_dask.cluster.ensure_scheduler_plugins`) logs
an event each time a stage-1 task's result is in memory, and the client follows that topic: it also
works in a notebook attached to a remote cluster. Stage-1 tasks fused with their output task count
too (:func:`keys.inference_key`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask
from dask.callbacks import Callback

from ..graph import keys
from ..graph.build import planned_tiles
from . import waves

if TYPE_CHECKING:
    from distributed import Client


def tile_counts(obj: Any) -> dict[Any, int]:
    """``{stage-1 key: tiles it runs}`` for every seamless_dask inference task in ``obj``'s graph,
    as the plan counts them (:func:`seamless_dask.graph.build.planned_tiles`): one entry a chunk.
    """
    return planned_tiles(obj)


Progress = bool | Callable[[int, int], Any]


def compute(
    obj: Any,
    *,
    progress: Progress = True,
    description: str = "tiles",
    worker_wait: float | None = None,
) -> Any:
    """``dask.compute(obj)[0]`` for a writer's Delayed, with a progress bar in tiles when
    ``progress`` and a terminal or notebook; a callable ``progress`` is called as
    ``progress(done, total)`` (tiles through the model, all the tiles) once at the start and as
    chunks finish, from dask's threads (or the client's event thread on a cluster), never twice at
    once. On a distributed cluster it is submitted a wave of
    chunk rows at a time (:mod:`seamless_dask.cluster.waves`), so that the scheduler never holds the
    whole scene's graph, and a cluster left without workers is waited for ``worker_wait`` seconds
    (default: dask's ``seamless_dask.worker_wait``, 300) before the job ends with a ClusterError.
    """
    client = _client()
    if client is None:
        if not progress:
            return dask.compute(obj)[0]
        with _TileBar(tile_counts(obj), description, progress):
            return dask.compute(obj)[0]
    if not progress:
        return waves.compute(client, obj, worker_wait=worker_wait)
    return _compute_distributed(
        client, obj, tile_counts(obj), description, worker_wait, progress=progress
    )


def _client() -> Client | None:
    """The distributed client dask computes on now (``None`` when dask's config names another
    scheduler).
    """
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return None
    return client if dask.base.get_scheduler() == client.get else None


class CallbackBar:
    """What a tqdm bar does for the counters (``update``, ``close``), as calls of ``fn(done, total)``."""

    def __init__(self, fn: Callable[[int, int], Any], total: int) -> None:
        self.fn, self.total, self.done = fn, total, 0
        fn(0, total)

    def update(self, tiles: int) -> None:
        """``tiles`` more are done."""
        self.done += tiles
        self.fn(self.done, self.total)

    def close(self) -> None:
        """Nothing to close: the callback had its last call."""

    def __enter__(self) -> CallbackBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _bar(total: int, description: str, progress: Progress = True) -> Any:
    if callable(progress):
        return CallbackBar(progress, total)
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        unit="tile",
        desc=description,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
    )


class _Counter:
    """Advances a bar once per stage-1 key of ``counts``, by that key's tiles (twice-reported keys
    once).
    """

    def __init__(self, counts: dict[Any, int], bar: Any) -> None:
        self.counts, self.bar = counts, bar
        self.seen: set[Any] = set()
        self.lock = threading.Lock()

    def all_done(self) -> None:
        """The run succeeded: a graph of one chunk ran its tiles even if no key said so (dask fuses
        its stage-1 task with the output task and what follows, name and all; with more chunks each
        output block also waits for its neighbours' halos, so stage-1 tasks keep their names and are
        counted one by one).
        """
        with self.lock:
            if len(self.counts) == 1 and not self.seen:
                self.bar.update(sum(self.counts.values()))
                self.seen.update(self.counts)

    def done(self, key: Any) -> None:
        stage1 = keys.model_key(key)
        with self.lock:
            if stage1 in self.counts and stage1 not in self.seen:
                self.seen.add(stage1)
                self.bar.update(self.counts[stage1])


class _TileBar(Callback):
    """A dask callback (local schedulers) that advances a bar by each stage-1 task's tile count."""

    def __init__(self, counts: dict[Any, int], description: str, progress: Progress = True) -> None:
        super().__init__()
        self.counts, self.description, self.progress = counts, description, progress
        self.counter: _Counter | None = None

    def _start(self, dsk: Any) -> None:
        total = sum(self.counts.values())
        self.counter = _Counter(self.counts, _bar(total, self.description, self.progress))

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self.counter is not None:
            self.counter.done(key)

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self.counter is not None:
            if not errored:
                self.counter.all_done()
            self.counter.bar.close()


def _compute_distributed(
    client: Client,
    obj: Any,
    counts: dict[Any, int],
    description: str,
    worker_wait: float | None = None,
    *,
    progress: Progress = True,
) -> Any:
    """Compute on the cluster; the bar follows :class:`TileEvents` events for this graph's stage-1
    keys.
    """
    with _bar(sum(counts.values()), description, progress) as bar:
        counter = _Counter(counts, bar)

        def on_event(event: Any) -> None:
            _, key = event
            counter.done(tuple(key) if isinstance(key, list) else key)

        client.subscribe_topic(keys.TILE_TOPIC, on_event)
        try:
            result = waves.compute(client, obj, worker_wait=worker_wait)
            counter.all_done()
            return result
        finally:
            client.unsubscribe_topic(keys.TILE_TOPIC)
