"""Tile outlines and trusted cores drawn on images: to see which tile decided which pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import DimensionError
from ..tiling.grid import TileGrid
from ..tiling.weights import as_weights

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def draw_tile_borders(
    image: Any,
    grid: TileGrid,
    *,
    weights: Any = "trim",
    width: int = 1,
    color: Sequence[float] = (1.0, 0.0, 0.0),
    core_color: Sequence[float] | None = (1.0, 1.0, 0.0),
) -> Any:
    """A copy of ``image`` with each tile's outline drawn on it, and each tile's trusted core.

    The core is the box where the tile's trust map is non-zero (``"trim"``: the tile minus ``overlap
    // 2`` on sides inside the image), so the drawing shows which tile decides which pixels.

    Parameters
    ----------
    image
        ``(C, H, W)`` or ``(N, C, H, W)``, a numpy array or a torch tensor (drawn on its own
        device); ``C`` is the number of values in ``color`` (or 1: drawn with the colour's mean).
    grid
        The :class:`TileGrid` of the run (``TileGrid((H, W), tile_size, overlap)``).
    weights
        The run's weights, for the cores; ``core_color=None`` draws the tile outlines only.
    width
        Line width in pixels.
    color, core_color
        Values of the tile outlines and of the core outlines, one per channel.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import TileGrid, draw_tile_borders
    >>> drawn = draw_tile_borders(np.zeros((3, 60, 60), "float32"), TileGrid((60, 60), 32, 8))
    >>> drawn[:, 0, 5].tolist(), drawn[:, 30, 30].tolist()  # on the first tile's top edge; inside a core
    ([1.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    """
    if width < 1:
        raise ValueError(f"width is a line width in pixels >= 1, got width={width}")
    # a torch tensor stays one
    out = image.clone() if hasattr(image, "clone") else np.array(image, copy=True)
    if tuple(out.shape[-2:]) != tuple(grid.shape):
        raise DimensionError(
            f"the image is {tuple(out.shape[-2:])} (H, W) but the grid is for {grid.shape}: "
            "build it with TileGrid(image.shape[-2:], tile_size, overlap)"
        )
    _draw_boxes(out, tile_boxes(grid, weights), width, color, core_color)
    return out


def tile_boxes(grid: TileGrid, weights: Any = "trim") -> list[tuple[Box, Box]]:
    """Each tile's box and the box where its trust map is non-zero, as ``(y0, y1, x0, x1)``, row-major."""
    spec, boxes = as_weights(weights), []
    for i in range(grid.n_tiles):
        window, (iy, ix) = grid.window(i), divmod(i, grid.x.n_tiles)
        y0, x0 = window.y.start, window.x.start
        support = spec.support(
            grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), grid.effective_overlap
        )
        core = (
            y0 + support.rows.start,
            y0 + support.rows.stop,
            x0 + support.cols.start,
            x0 + support.cols.stop,
        )
        boxes.append(((y0, window.y.stop, x0, window.x.stop), core))
    return boxes


def _draw_boxes(
    out: Any,
    boxes: list[tuple[Box, Box]],
    width: int,
    color: Sequence[float],
    core_color: Sequence[float] | None,
) -> None:
    """Each core outline, then each tile outline over it, on channels-first ``out``."""
    for box, core in boxes:
        if core_color is not None:
            _outline(out, core, width, core_color)
        _outline(out, box, width, color)


def _outline(out: Any, box: Box, width: int, color: Sequence[float]) -> None:
    y0, y1, x0, x1 = box
    channels = out.shape[-3]
    values = list(color) if channels == len(color) else [float(np.mean(color))] * channels
    for c, value in enumerate(values):
        plane = out[..., c, :, :]
        plane[..., y0 : min(y0 + width, y1), x0:x1] = value
        plane[..., max(y1 - width, y0) : y1, x0:x1] = value
        plane[..., y0:y1, x0 : min(x0 + width, x1)] = value
        plane[..., y0:y1, max(x1 - width, x0) : x1] = value


def draw_scaled(
    panel: np.ndarray, boxes: list[tuple[Box, Box]], shape: tuple[int, int]
) -> np.ndarray:
    """An ``(h, w, 3|4)`` uint8 panel with tile and core ``boxes`` of an image of ``shape`` scaled onto
    it.
    """
    sy, sx = panel.shape[0] / shape[0], panel.shape[1] / shape[1]

    def scaled(box: Box) -> Box:
        y0, y1, x0, x1 = int(box[0] * sy), round(box[1] * sy), int(box[2] * sx), round(box[3] * sx)
        return y0, max(y0 + 1, y1), x0, max(x0 + 1, x1)

    out = np.moveaxis(panel.copy(), -1, 0)  # channels first, as _outline draws
    opaque = (255,) if out.shape[0] == 4 else ()
    _draw_boxes(
        out,
        [(scaled(b), scaled(c)) for b, c in boxes],
        1,
        (255, 0, 0, *opaque),
        (255, 255, 0, *opaque),
    )
    return np.moveaxis(out, 0, -1)
