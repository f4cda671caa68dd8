"""Blend predictions you computed yourself, on the lattice or on a layout of your own, streaming
rows out.

For a model that runs outside torch or outside dask (an ONNX session, a web service, a C++ binary):
hand
:class:`TileBlender` each tile's window and prediction and it gives back finished rows of the blended result as
soon as no remaining tile can touch them, holding only the rows still open, as seamless-seg's
``run_plan`` does. The trust maps, border-awareness and normalisation are those of
:func:`seamless_dask.segment`, so on a
:class:`~seamless_dask.TileGrid` the rows equal ``segment(..., output="probabilities")``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import DimensionError, ModelOutputError, TilingError
from ..tiling.grid import Pair, TileGrid, TileWindow, as_pair
from ..tiling.weights import TileWeights, as_weights
from .accumulate import add_weighted
from .decide import decide

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


class Rows(NamedTuple):
    """Finished rows ``rows`` (a slice of image rows) of the blended result: ``(classes, n, W)`` or
    ``(n, W)``.
    """

    rows: slice
    block: np.ndarray


class TileBlender:
    """Trust-weighted blending of tiles given one at a time, in any order, emitting rows as they
    finish.

    Parameters
    ----------
    shape
        Image size ``(H, W)``.
    layout
        A :class:`TileGrid` (its overlap sets ``"trim"``'s margins), or a sequence of tile windows
        that covers the image: :class:`TileWindow`, ``(row slice, column slice)`` pairs, or shapely
        boxes in pixel coordinates (``x`` = column, ``y`` = row). Tiles may have different sizes.
    weights
        As for :func:`seamless_dask.segment`. ``"trim"`` on a layout of your own needs ``overlap``.
    overlap
        The margins ``"trim"`` drops on a custom layout (pixels, an int or ``(y, x)``).
    output
        ``"probabilities"`` (float32 ``(classes, n, W)``) or ``"labels"`` (``(n, W)``, first class
        on ties).

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import TileBlender, TileGrid
    >>> grid = TileGrid((40, 30), 16, 4)
    >>> blender = TileBlender((40, 30), grid, weights="trust")
    >>> rows = [out for window in blender.order for out in blender.add(window, np.ones((2, 16, 16)))]
    >>> rows += blender.finish()
    >>> [(r.rows.start, r.rows.stop) for r in rows], float(rows[0].block.min())
    ([(0, 12), (12, 24), (24, 40)], 1.0)
    """

    def __init__(
        self,
        shape: int | Pair,
        layout: TileGrid | Sequence[Any],
        *,
        weights: Any = "trust",
        overlap: int | Pair = 0,
        output: str = "probabilities",
    ) -> None:
        self.shape = as_pair(shape, "shape")
        if output not in ("probabilities", "labels"):
            raise TilingError(f"output must be 'probabilities' or 'labels', got {output!r}")
        if isinstance(layout, TileGrid):
            if layout.shape != self.shape:
                raise DimensionError(
                    f"the grid is for {layout.shape} but shape is {self.shape}: use one image size"
                )
            boxes = [_box(window) for window in layout.windows()]
            overlap = layout.effective_overlap
            as_weights(weights).check_cover((layout.y, layout.x))
        else:
            boxes = [_box(window) for window in layout]
        self.weights: TileWeights = as_weights(weights)
        self.overlap, self.output = as_pair(overlap, "overlap"), output
        self._check_boxes(boxes)
        self.order: list[TileWindow] = [
            TileWindow(slice(y0, y1), slice(x0, x1)) for y0, y1, x0, x1 in sorted(boxes)
        ]
        self._pending = {box: False for box in sorted(boxes)}
        # a heap: the first row a pending tile touches
        self._starts = [(box[0], box) for box in self._pending]
        heapq.heapify(self._starts)
        self._acc: np.ndarray | None = None  # float64 (classes + 1, rows, W) from row self._top
        self._top = 0
        self.max_open_rows = 0

    def add(self, window: Any, prediction: Any) -> list[Rows]:
        """Add one tile's prediction ``(classes, h, w)`` at ``window``; return the rows this finished."""
        box = _box(window)
        if box not in self._pending:
            raise TilingError(
                f"the window {_show(box)} is not a tile of this layout: add the layout's windows"
            )
        if self._pending[box]:
            raise TilingError(
                f"the tile at {_show(box)} was added twice: each tile is blended once"
            )
        pred = np.asarray(prediction)
        height, width = box[1] - box[0], box[3] - box[2]
        if pred.ndim != 3 or pred.shape[1:] != (height, width):
            raise ModelOutputError(
                f"the prediction at {_show(box)} has shape {pred.shape}, expected (classes, "
                f"{height}, {width})"
            )
        if not np.isfinite(pred).all():
            raise ModelOutputError(
                f"the prediction at {_show(box)} holds NaN or inf: it cannot be blended"
            )
        acc = self._open(box, pred.shape[0])
        edges_y = (box[0] == 0, box[1] == self.shape[0])
        edges_x = (box[2] == 0, box[3] == self.shape[1])
        support = self.weights.support((height, width), edges_y, edges_x, self.overlap)
        # into the float64 sums as the prediction comes: no float64 copy of the tile
        add_weighted(acc, pred, support, (box[0] - self._top, box[2]))
        self._pending[box] = True
        while self._starts and self._pending[self._starts[0][1]]:
            heapq.heappop(self._starts)
        return self._emit(self._starts[0][0] if self._starts else self.shape[0])

    def feed(self, pairs: Iterable[tuple[Any, Any]]) -> Iterator[Rows]:
        """Blend ``(window, prediction)`` pairs as they come, yielding finished rows; checks the end."""
        for window, prediction in pairs:
            yield from self.add(window, prediction)
        yield from self.finish()

    def finish(self) -> list[Rows]:
        """Check that every tile was added and return what is left (nothing when the last add emitted
        it).
        """
        missing = [box for box, done in self._pending.items() if not done]
        if missing:
            raise TilingError(
                f"{len(missing)} tiles were never added, the first at {_show(missing[0])}"
            )
        return self._emit(self.shape[0])

    def _open(self, box: Box, n_classes: int) -> np.ndarray:
        """The accumulator, grown to hold rows up to ``box``'s bottom."""
        if self._acc is not None and self._acc.shape[0] != n_classes + 1:
            raise ModelOutputError(
                f"the prediction at {_show(box)} has {n_classes} classes, earlier ones had "
                f"{self._acc.shape[0] - 1}"
            )
        have = 0 if self._acc is None else self._acc.shape[1]
        need = box[1] - self._top
        if need > have:
            grown = np.zeros((n_classes + 1, need, self.shape[1]), np.float64)
            if self._acc is not None:
                grown[:, :have] = self._acc
            self._acc = grown
            self.max_open_rows = max(self.max_open_rows, need)
        assert self._acc is not None
        return self._acc

    def _emit(self, until: int) -> list[Rows]:
        """Rows ``[top, until)`` are final: decide them and drop them from the accumulator."""
        if self._acc is None or until <= self._top:
            return []
        n = until - self._top
        sums = self._acc[:, :n]
        uncovered = np.argwhere(sums[-1] <= 0)
        if len(uncovered) or sums.shape[1] < n:  # a zero weight, or rows below every tile so far
            y, x = (int(v) for v in uncovered[0]) if len(uncovered) else (sums.shape[1], 0)
            raise TilingError(
                f"no tile gives weight to pixel ({self._top + y}, {x}) (row, column) with weights "
                f"{self.weights.kind!r}: make the layout cover the image, or use weights that are "
                f"positive on a "
                "whole tile such as 'trust'"
            )
        block = decide(sums, self.output, binary=False)
        rows = Rows(slice(self._top, until), block)
        self._acc, self._top = self._acc[:, n:].copy(), until
        return [rows]

    def _check_boxes(self, boxes: list[Box]) -> None:
        if not boxes:
            raise TilingError("the layout has no tiles: pass a TileGrid or a sequence of windows")
        height, width = self.shape
        for box in boxes:
            if (
                box[0] < 0
                or box[2] < 0
                or box[1] > height
                or box[3] > width
                or box[1] <= box[0]
                or box[3] <= box[2]
            ):
                raise TilingError(
                    f"the tile {_show(box)} is empty or outside the image {self.shape}"
                )
        if len(set(boxes)) != len(boxes):
            raise TilingError("the layout lists a tile twice: each window once")


def _box(window: Any) -> Box:
    """``(y0, y1, x0, x1)`` of a TileWindow, a ``(rows, cols)`` pair of slices, or a shapely box."""
    if hasattr(window, "bounds") and not isinstance(window, tuple):
        minx, miny, maxx, maxy = window.bounds
        corners = (miny, maxy, minx, maxx)
        if any(float(v) != int(v) for v in corners):
            raise TilingError(
                f"tile geometries must lie on whole pixels, got bounds {window.bounds}"
            )
        return int(miny), int(maxy), int(minx), int(maxx)
    rows, cols = window
    return int(rows.start or 0), int(rows.stop), int(cols.start or 0), int(cols.stop)


def _show(box: Box) -> str:
    return f"rows {box[0]}:{box[1]}, columns {box[2]}:{box[3]}"
