r"""dask arrays and graphs from hand-built layers, on both of dask's array engines.

seamless_dask builds its graph by hand (one task per chunk and stage, see
:mod:`seamless_dask.graph.build`). With the legacy array engine a layer becomes an array through
``da.Array(graph, name, chunks, dtype)``; with dask's query-planning engine
(``array.query-planning``, "array-expr") that constructor does not exist, and a hand-built graph
enters through ``from_graph``, which gives the array a name of its own (the keys keep theirs).
Collections of that engine have no ``__dask_layers__``, so their graph is taken as one materialised
layer.

A seamless_dask graph's own layers are :class:`ChunkLayer`\ s: their tasks are made when dask asks
for them (to cull the graph for a window, or to submit a band of rows), never all at once as
``segment`` returns, so planning a 1,000,000 px scene costs the client what the chunks it computes
cost. Their tasks are written in dask's task spec (:func:`task`, :func:`ref`, :func:`items`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
from dask._task_spec import (  # dask's task spec: named in this module only
    DataNode,
    GraphNode,
    List,
    Task,
    TaskRef,
    convert_legacy_graph,
)
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, Layer, MaterializedLayer


class NamedGraph(NamedTuple):
    """A graph whose top layer is ``name``, as a dask collection (what ``graph_with`` stacks layers
    on).
    """

    graph: HighLevelGraph
    name: str

    def __dask_graph__(self) -> HighLevelGraph:
        return self.graph

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self.name,)


def task_nodes(graph: Any) -> dict[Any, GraphNode]:
    """A dask graph (legacy tuples, task-spec nodes, a HighLevelGraph) as task-spec nodes whose
    dependencies are explicit, so that any part of it can be submitted on its own
    (:mod:`seamless_dask.cluster.waves`).
    """
    return convert_legacy_graph(dict(graph))


def task(key: Hashable | None, func: Callable, *args: Any) -> GraphNode:
    """A task of the graph (``key=None``: a task inlined as another's argument); its arguments may
    hold
    :func:`ref`, :func:`items` and inlined tasks.
    """
    return Task(key, func, *args)


def ref(key: Hashable) -> GraphNode:
    """The value of ``key``, as a task's argument."""
    return TaskRef(key)  # type: ignore[arg-type,return-value]


def items(values: Sequence[Any]) -> GraphNode:
    r"""A list argument whose items may be :func:`ref`\ s or inlined tasks."""
    return List(*values)


def fused(first: GraphNode, then: GraphNode) -> GraphNode:
    """One task, under ``then``'s key, that runs ``first`` and then ``then`` on its result."""
    return GraphNode.fuse(first, then, key=then.key)


def value(key: Hashable, obj: Any) -> GraphNode:
    """A key whose value is ``obj`` itself."""
    return DataNode(key, obj)


class ChunkLayer(Layer):
    """A layer whose tasks are made from the chunk index in their keys when dask asks for them.

    ``keys_of(j, k)`` lists the keys the layer has for chunk ``(j, k)`` of a ``numblocks`` grid (the
    chunk indices are each key's last two items), ``make(key)`` makes one key's task. Culling (a
    window computed, a band submitted) makes only the tasks the kept keys need; nothing is listed as
    the layer is built.

    ``tiles_of(j, k)``, on the layer of model tasks only, is how many tiles chunk ``(j, k)``'s task
    runs: the plan's count, from the chunk index alone (progress reads it, never a task).
    """

    def __init__(
        self,
        numblocks: tuple[int, int],
        keys_of: Callable[[int, int], list],
        make: Callable[[Any], GraphNode],
        annotations: dict | None = None,
        tiles_of: Callable[[int, int], int] | None = None,
    ) -> None:
        super().__init__(annotations=annotations)
        self.numblocks, self.keys_of, self.make = numblocks, keys_of, make
        self.tiles_of = tiles_of

    @property
    def has_legacy_tasks(self) -> bool:
        """False: its tasks are task-spec nodes (``HighLevelGraph.cull`` then lists no layer's keys)."""
        return False

    def is_materialized(self) -> bool:
        """False: tasks are made when asked for."""
        return False

    def get_output_keys(self) -> Any:
        """The keys, as a view: it asks ``__contains__`` and ``__iter__``, and lists nothing."""
        return self.keys()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) < 3:
            return False
        j, k = key[-2], key[-1]
        ny, nx = self.numblocks
        return (
            isinstance(j, int)
            and isinstance(k, int)
            and 0 <= j < ny
            and 0 <= k < nx
            and key in self.keys_of(j, k)
        )

    def __getitem__(self, key: Any) -> GraphNode:
        if key not in self:
            raise KeyError(key)
        return self.make(key)

    def __iter__(self) -> Iterator:
        ny, nx = self.numblocks
        return (key for j in range(ny) for k in range(nx) for key in self.keys_of(j, k))

    def __len__(self) -> int:
        ny, nx = self.numblocks
        return sum(len(self.keys_of(j, k)) for j in range(ny) for k in range(nx))

    def get_dependencies(self, key: Any, all_hlg_keys: Any) -> set:
        """The keys ``key``'s task reads."""
        return set(self[key].dependencies)

    def cull(self, keys: set, all_hlg_keys: Any) -> tuple[Layer, dict]:
        """The tasks ``keys`` need, made now, and what each of them depends on."""
        out: dict = {}
        work = [key for key in keys if key in self]
        while work:
            key = work.pop()
            if key in out:
                continue
            out[key] = node = self.make(key)
            work.extend(d for d in node.dependencies if d not in out and d in self)
        return MaterializedLayer(out, annotations=self.annotations), {
            k: set(v.dependencies) for k, v in out.items()
        }


def array_expr() -> bool:
    """Whether ``dask.array`` is the query-planning (array-expr) engine."""
    return da.Array.__module__ != "dask.array.core"


def graph_with(
    name: str, layer: dict | Layer, dependencies: Sequence[Any], annotations: dict | None = None
) -> HighLevelGraph:
    """A graph holding ``layer`` (named ``name``) on top of the graphs of ``dependencies`` (dask
    collections of either engine, or anything with ``__dask_graph__``).
    """
    layers: dict[str, Any] = {}
    deps: dict[str, set] = {}
    upstream: set[str] = set()
    for dependency in dependencies:
        graph = dependency.__dask_graph__()
        if isinstance(graph, HighLevelGraph) and hasattr(dependency, "__dask_layers__"):
            layers.update(graph.layers)
            deps.update(graph.dependencies)
            upstream.update(dependency.__dask_layers__())
        else:  # an array-expr collection: its lowered graph as one layer
            below = str(getattr(dependency, "name", "")) or "upstream-" + tokenize(dependency)
            layers[below] = MaterializedLayer(dict(graph))
            deps[below] = set()
            upstream.add(below)
    layers[name] = (
        layer if isinstance(layer, Layer) else MaterializedLayer(layer, annotations=annotations)
    )
    deps[name] = upstream
    return HighLevelGraph(layers, deps)


def rechunk(array: Any, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """``array.rechunk(chunks)`` (explicit chunks per axis), safe on both engines.

    On array-expr, one axis at a time: dask 2026.8's one-step rechunk that joins chunks on one axis
    while splitting them on another (``(1, 1, 6) -> ((2,), (9,), (1,) * 18)`` on 2x9x18) builds a
    task that indexes a key (found by tests/test_segment.py's I2 property test). The legacy engine
    rechunks in one step.
    """
    if not array_expr():
        return array.rechunk(chunks)
    for axis, target in enumerate(chunks):
        array = array.rechunk({axis: target}) if array.chunks[axis] != tuple(target) else array
    return array


def new_array(
    graph: HighLevelGraph, name: str, chunks: tuple[tuple[int, ...], ...], dtype: Any
) -> Any:
    """The dask array whose blocks are the keys ``(name, i, j, ...)`` of ``graph``."""
    if not array_expr():
        return da.Array(graph, name, chunks=chunks, dtype=dtype)
    from dask.array._array_expr._collection import from_graph

    meta = np.empty((0,) * len(chunks), dtype=dtype)
    block_keys = [(name, *index) for index in np.ndindex(*(len(c) for c in chunks))]
    with dask.config.set({"tokenize.ensure-deterministic": False}):
        return from_graph(dict(graph), meta, chunks, block_keys, name)


def block_keys(array: Any) -> np.ndarray:
    """The key of each block of ``array``, as an object array of its ``numblocks``.

    These are what tasks built on top of it must name. (An array-expr collection's ``name`` is its
    expression's, which lowering may rename.)
    """
    nested = array.__dask_keys__()
    out = np.empty(array.numblocks, dtype=object)
    for index in np.ndindex(*array.numblocks):
        node = nested
        for i in index:
            node = node[i]
        out[index] = node
    return out
