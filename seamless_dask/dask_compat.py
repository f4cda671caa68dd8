"""dask arrays and graphs from hand-built layers, on both of dask's array engines.

seamless_dask builds its graph by hand (one task per chunk and stage, see :mod:`seamless_dask.graph`). With the
legacy array engine a layer becomes an array through ``da.Array(graph, name, chunks, dtype)``; with dask's
query-planning engine (``array.query-planning``, "array-expr") that constructor does not exist, and a hand-built
graph enters through ``from_graph``, which gives the array a name of its own (the keys keep theirs). Collections
of that engine have no ``__dask_layers__``, so their graph is taken as one materialised layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
from dask._task_spec import GraphNode, convert_legacy_graph  # dask's task spec: named in this module only
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer


class NamedGraph(NamedTuple):
    """A graph whose top layer is ``name``, as a dask collection (what ``graph_with`` stacks layers on)."""

    graph: HighLevelGraph
    name: str

    def __dask_graph__(self) -> HighLevelGraph:
        return self.graph

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self.name,)


def task_nodes(graph: Any) -> dict[Any, GraphNode]:
    """A dask graph (legacy tuples, task-spec nodes, a HighLevelGraph) as task-spec nodes whose dependencies are
    explicit, so that any part of it can be submitted on its own (:mod:`seamless_dask.bands`).
    """
    return convert_legacy_graph(dict(graph))


def array_expr() -> bool:
    """Whether ``dask.array`` is the query-planning (array-expr) engine."""
    return da.Array.__module__ != "dask.array.core"


def graph_with(name: str, layer: dict, dependencies: Sequence[Any], annotations: dict | None = None) -> HighLevelGraph:
    """A graph holding ``layer`` (named ``name``) on top of the graphs of ``dependencies`` (dask collections of
    either engine, or anything with ``__dask_graph__``).
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
    layers[name] = MaterializedLayer(layer, annotations=annotations)
    deps[name] = upstream
    return HighLevelGraph(layers, deps)


def rechunk(array: Any, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """``array.rechunk(chunks)`` (explicit chunks per axis), safe on both engines.

    On array-expr, one axis at a time: dask 2026.8's one-step rechunk that joins chunks on one axis while
    splitting them on another (``(1, 1, 6) -> ((2,), (9,), (1,) * 18)`` on 2x9x18) builds a task that indexes a
    key (found by tests/test_segment.py's I2 property test). The legacy engine rechunks in one step.
    """
    if not array_expr():
        return array.rechunk(chunks)
    for axis, target in enumerate(chunks):
        array = array.rechunk({axis: target}) if array.chunks[axis] != tuple(target) else array
    return array


def new_array(graph: HighLevelGraph, name: str, chunks: tuple[tuple[int, ...], ...], dtype: Any) -> Any:
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
