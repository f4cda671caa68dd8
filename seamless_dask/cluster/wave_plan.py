"""How a writer's graph is cut into waves, for :mod:`seamless_dask.cluster.waves` to submit.

A write's pixels are final once the last chunk row whose model task it needs has run; a wave is
whole rows of writes in that order, at least ``chunks_per_wave`` of them (runs of a few writes along
a row were tried: at 40,000 px they ran 1.5x slower, and the worker held more, not less). Each task
goes to the first wave that needs it and is held, as a future, until the last wave that needs it is
submitted: no tile runs twice. Two planners make the same waves. :func:`plan_waves` reads the whole
graph at once (any dask graph). :class:`LazyWaves` makes each wave's tasks as it comes to be
submitted, by culling the graph to the writes of a chunk row at a time: seamless_dask's own layers
make a chunk's tasks only when asked (``dask_compat.ChunkLayer``), so the client holds a few rows'
tasks, not the scene's (a 1,000,000 px scene is 224,676 chunks; its graph read at once is gigabytes
of tasks).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Container, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from dask.highlevelgraph import HighLevelGraph

from ..graph import keys
from ..graph.layers import GraphNode, array_expr, fused, task_nodes

# waves whose released keys are remembered, to tell when a task is about to run a second time

RECENT = 8
# Chunk rows past a wave's last before the waves after it can need none of its tasks: a chunk's
# output reads the halos of the row above (the tile overlap is less than a chunk), the model task
# the input rows beside its own.
REACH = 2


@dataclass
class Wave:
    """One submission: its tasks (computed nowhere else), the writes it ends with, what it must hand
    on.
    """

    writes: list[Hashable] = field(default_factory=list)
    tasks: dict[Hashable, GraphNode] = field(default_factory=dict)
    hold: set[Hashable] = field(default_factory=set)  # computed here, needed by a later wave
    # held from an earlier wave, needed by none after this
    release: set[Hashable] = field(default_factory=set)


@dataclass(frozen=True)
class WavePlan:
    """A writer's graph split into waves; ``final`` is its last task, run on what the writes return."""

    waves: list[Wave]
    final: GraphNode

    def __iter__(self) -> Iterator[Wave]:
        return iter(self.waves)


def plan_waves(graph: Mapping, final_key: Hashable, chunks_per_wave: int) -> WavePlan | None:
    """Waves of whole rows, at least ``chunks_per_wave`` writes each, in row order; ``None`` when
    the writes do not all work for a chunk row of a seamless_dask graph (the graph is then submitted
    whole).
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
        if len(groups[-1]) >= chunks_per_wave:
            groups.append([])
        groups[-1].extend(sorted(by_row[row], key=_column))
    return WavePlan(_split(tasks, groups), final)


def _column(write: Hashable) -> tuple[int, str]:
    """Where a write stands in its row (a wave's writes go in row order, then along the row)."""
    column = write[-1] if isinstance(write, tuple) and write and isinstance(write[-1], int) else 0
    return column, str(write)


def _fuse_blocks_into_writes(tasks: dict[Hashable, GraphNode], writes: frozenset) -> None:
    """Each write and the seamless_dask output block that only it reads become one task: one task a
    chunk less for the scheduler, whose cost per task is what bounds how many workers one keeps busy
    (docs/cluster.md).
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
    """For each write, the last chunk row whose model task it needs (its pixels are final once that row
    ran).
    """
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


def _split(tasks: Mapping[Hashable, GraphNode], groups: list[list[Hashable]]) -> list[Wave]:
    """Each task goes to the first wave that needs it; it is held for every later wave that needs it
    too.
    """
    first: dict[Hashable, int] = {}
    last: dict[Hashable, int] = {}
    waves = [Wave(writes=group) for group in groups]
    for b, wave in enumerate(waves):
        wave.tasks = _reach(wave.writes, tasks, first)
        last.update(dict.fromkeys(_reads(wave.writes, wave.tasks, first), b))
        first.update(dict.fromkeys(wave.tasks, b))
        last.update(dict.fromkeys(wave.tasks, b))
    for key, b in first.items():
        if last[key] > b:
            waves[b].hold.add(key)
            waves[last[key]].release.add(key)
    return waves


def lazy_waves(graph: Mapping, final_key: Hashable, chunks_per_wave: int) -> LazyWaves | None:
    """Waves made as they are submitted; ``None`` where they cannot be: a graph not built by a
    seamless_dask writer on the legacy array engine (array-expr graphs are materialised whole
    anyway), a write without a chunk row, or writes that read other writes (an OME-Zarr pyramid's
    levels; :func:`plan_waves` plans those).
    """
    if array_expr() or not isinstance(graph, HighLevelGraph) or str(final_key) not in graph.layers:
        return None
    # the writes and the last task: one small task a chunk
    writer = task_nodes(graph.layers[str(final_key)])
    final = writer.pop(final_key, None)
    if final is None or not final.dependencies <= writer.keys():
        return None
    writes = final.dependencies
    by_row: dict[int, list[Hashable]] = {}
    for write in sorted(writes, key=str):
        row = keys.chunk_row(write)
        if row is None or writer[write].dependencies & writes:
            return None
        by_row.setdefault(row, []).append(write)
    return LazyWaves(graph, final, by_row, chunks_per_wave)


@dataclass
class _Formed:
    """A wave whose writes and tasks are known, waiting for the waves after it to be known too."""

    writes: list[Hashable]
    tasks: dict[Hashable, GraphNode]
    first: int  # the first and last chunk row of its seamless_dask tasks
    last: int


@dataclass
class LazyWaves:
    """The waves of :func:`plan_waves`, each made as it is about to be submitted (iterate once).

    The graph is culled to the writes of one chunk row at a time (``by_row``, the row in each
    write's key). A write's wave row is at least its own, so once the writes of rows up to ``r`` are
    culled, every wave row up to ``r`` is complete. A wave is handed out once the waves made after
    it start ``REACH`` chunk rows past its last: those are all the waves that can need its tasks,
    and they decide what it holds and lets go, as they do in :func:`plan_waves`.
    """

    graph: HighLevelGraph
    final: GraphNode
    by_row: dict[int, list[Hashable]]
    chunks_per_wave: int

    @property
    def writes(self) -> int:
        """How many writes the waves hold."""
        return sum(map(len, self.by_row.values()))

    def __iter__(self) -> Iterator[Wave]:
        formed: deque[_Formed] = deque()
        pending: dict[int, list[Hashable]] = {}  # wave row -> its writes, for rows not yet complete
        cones: dict[
            Hashable, dict[Hashable, GraphNode]
        ] = {}  # write -> the culled tasks holding its own
        wave: list[Hashable] = []
        held: set[Hashable] = set()
        released: deque[set[Hashable]] = deque(maxlen=RECENT)
        for own in [*sorted(self.by_row), None]:
            if own is not None:
                writes: frozenset[Any] = frozenset(self.by_row[own])
                tasks = task_nodes(self.graph.cull(writes))
                _fuse_blocks_into_writes(tasks, writes)
                for write, row in _rows(tasks, writes).items():
                    pending.setdefault(max(own, own if row is None else row), []).append(write)
                    cones[write] = tasks
            for row in sorted(r for r in pending if own is None or r <= own):
                if len(wave) >= self.chunks_per_wave:
                    formed.append(_form(wave, cones))
                    wave = []
                wave.extend(sorted(pending.pop(row), key=_column))
            if own is None and wave:
                formed.append(_form(wave, cones))
            while formed and (own is None or formed[-1].first > formed[0].last + REACH):
                yield _hand_out(formed.popleft(), formed, held, released)


def _form(writes: list[Hashable], cones: dict[Hashable, dict[Hashable, GraphNode]]) -> _Formed:
    """A wave of ``writes``: the tasks each needs, from the culled graph that made it."""
    tasks: dict[Hashable, GraphNode] = {}
    for write in writes:
        tasks.update(_reach([write], cones.pop(write), tasks))
    rows = [row for row in map(keys.chunk_row, tasks) if row is not None]
    return _Formed(list(writes), tasks, min(rows, default=0), max(rows, default=0))


def _hand_out(
    head: _Formed, later: deque[_Formed], held: set, released: deque[set[Hashable]]
) -> Wave:
    """``head`` as a wave: the tasks not held from an earlier wave, holding what a later one needs too."""
    needed_later = _needed_by(later, held | head.tasks.keys())  # a new set
    wave = Wave(writes=head.writes, tasks=_reach(head.writes, head.tasks, held))
    wave.hold = {key for key in wave.tasks if key in needed_later}
    wave.release = {key for key in held if key not in needed_later}
    again = [
        key
        for key in wave.tasks
        if keys.is_inference(key) and any(key in gone for gone in released)
    ]
    if again:
        warnings.warn(
            f"{len(again)} model tasks (first {again[0]!r}) are needed again after their wave let "
            f"them go; they run a "
            "second time. The graph's chunk rows are not read in order: report it with the writer "
            "used",
            RuntimeWarning,
            stacklevel=3,
        )
    held -= wave.release
    held |= wave.hold
    released.append(wave.release)
    return wave


def _needed_by(later: deque[_Formed], available: set[Hashable]) -> set[Hashable]:
    """The keys of ``available`` (a set of the caller's, grown here) that the ``later`` waves read."""
    needed: set[Hashable] = set()
    for wave in later:
        own = _reach(wave.writes, wave.tasks, available)
        needed |= _reads(wave.writes, own, available)
        available.update(own)
    return needed


def _reach(
    writes: list[Hashable], tasks: Mapping[Hashable, GraphNode], available: Container
) -> dict:
    """The tasks of ``tasks`` that ``writes`` need, short of the keys already ``available``
    (computed, or held from an earlier wave): what a wave runs itself.
    """
    own: dict[Hashable, GraphNode] = {}
    stack = list(writes)
    while stack:
        key = stack.pop()
        if key not in own and key not in available:
            own[key] = node = tasks[key]
            stack.extend(d for d in node.dependencies if d in tasks)
    return own


def _reads(
    writes: list[Hashable], own: Mapping[Hashable, GraphNode], available: Container
) -> set[Hashable]:
    """The ``available`` keys a wave reads: its writes already computed, and the inputs of the tasks it
    runs.
    """
    return {key for key in writes if key in available} | {
        d for node in own.values() for d in node.dependencies if d in available
    }
