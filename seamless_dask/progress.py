"""Progress in tiles: how many grid tiles have been through the model, on any dask scheduler.

``compute(obj, progress=True)`` runs a lazy ``segment`` result or a writer's Delayed with a tqdm bar
counting tiles. Local schedulers (threads, processes) report each stage-1 task as it ends; with a
``distributed.Client`` the bar follows the futures of the stage-1 keys, so it also works in a notebook
attached to a remote cluster (where the dashboard link is ``client.dashboard_link``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import dask
from dask.callbacks import Callback

INFER_PREFIX = "seamless-infer-"


def tile_counts(obj: Any) -> dict[Any, int]:
    """``{stage-1 key: tiles it runs}`` for every seamless_dask inference task in ``obj``'s graph."""
    graph = obj.__dask_graph__()
    layers: Mapping[str, Any] = getattr(graph, "layers", {"": graph})
    counts: dict[Any, int] = {}
    for name, layer in layers.items():
        if name and not str(name).startswith("seamless-"):
            continue  # never materialise the input's layers just to look at their keys
        for key in layer:
            if isinstance(key, tuple) and str(key[0]).startswith(INFER_PREFIX):
                counts[key] = len(_task_tiles(layer[key]))
    return counts


def _task_tiles(task: Any) -> Any:
    args = task[1:] if isinstance(task, tuple) else getattr(task, "args", ())
    return args[-1]


def compute(obj: Any, *, progress: bool = True, description: str = "tiles") -> Any:
    """``dask.compute(obj)[0]``, with a progress bar in tiles when ``progress`` and a terminal or notebook."""
    if not progress:
        return dask.compute(obj)[0]
    counts = tile_counts(obj)
    client = _client()
    if client is not None:
        return _compute_distributed(client, obj, counts, description)
    with _TileBar(counts, description):
        return dask.compute(obj)[0]


def _client() -> Any:
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _bar(total: int, description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tile", desc=description, file=sys.stderr, dynamic_ncols=True, mininterval=0.5)


class _TileBar(Callback):
    """A dask callback (local schedulers) that advances a bar by each stage-1 task's tile count."""

    def __init__(self, counts: dict[Any, int], description: str) -> None:
        super().__init__()
        self.counts, self.description, self.bar = counts, description, None

    def _start(self, dsk: Any) -> None:
        self.bar = _bar(sum(self.counts.values()), self.description)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self.counts and self.bar is not None:
            self.bar.update(self.counts[key])

    def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
        if self.bar is not None:
            self.bar.close()


def _compute_distributed(client: Any, obj: Any, counts: dict[Any, int], description: str) -> Any:
    """Compute on the cluster, following the stage-1 keys' futures for the bar."""
    from distributed import Future, as_completed

    future = client.compute(obj)
    watched: list[Any] = [Future(key, client) for key in counts]
    with _bar(sum(counts.values()), description) as bar:
        for done in as_completed([*watched, future]):
            if done is future:
                break
            bar.update(counts.get(done.key, 0))
            done.release()  # at once: a held stage-1 result would stay in the cluster's memory
    return future.result()
