"""Palettes, colourised label maps and side-by-side quicklook PNGs (numpy and Pillow)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import DimensionError, OptionError
from .grid import TileGrid
from .weights import as_weights

Box = tuple[int, int, int, int]  # y0, y1, x0, x1

# Distinct, colour-blind-friendly first colours (Okabe-Ito, then Tableau), then evenly spread hues.
_BASE = [
    (0, 114, 178), (0, 158, 115), (213, 94, 0), (240, 228, 66), (204, 121, 167), (86, 180, 233),
    (230, 159, 0), (90, 90, 90), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def default_palette(n_classes: int = 256) -> np.ndarray:
    """``(n_classes, 3)`` uint8 RGB colours, distinct for the first classes; up to 256 classes."""
    if not 1 <= n_classes <= 256:
        raise OptionError(f"default_palette covers 1 to 256 classes, got {n_classes}: pass your own palette")
    extra = [
        tuple(
            int(255 * c)
            for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3) / 2)
        )
        for i in range(max(0, n_classes - len(_BASE)))
    ]
    return np.array((_BASE + extra)[:n_classes], dtype=np.uint8)


def colorize(
    labels: np.ndarray, palette: Sequence | np.ndarray | None = None, *, nodata: float | None = None
) -> np.ndarray:
    """Colour a class map: ``(H, W)`` class indices to ``(H, W, 3)`` uint8 RGB.

    Parameters
    ----------
    labels
        ``(H, W)`` integer class indices.
    palette
        ``(n, 3)`` uint8 colours, one per class; default: a colour-blind-friendly palette of 256.
    nodata
        The labels' nodata value: the result is then ``(H, W, 4)`` RGBA, transparent there.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` or ``(H, W, 4)`` uint8.

    Raises
    ------
    OptionError
        A class beyond the palette, or a palette that is not ``(n, 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import colorize
    >>> colorize(np.array([[0, 1], [255, 1]]), nodata=255)[..., 3]  # alpha: nodata is transparent
    array([[255, 255],
           [  0, 255]], dtype=uint8)
    """
    labels = np.asarray(labels)
    valid = None if nodata is None else labels != nodata
    if valid is not None:
        labels = np.where(valid, labels, 0)
    colours = default_palette(int(labels.max()) + 1 if labels.size else 1) if palette is None else np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] not in (3, 4):
        raise OptionError(f"palette must be (classes, 3) or (classes, 4) RGB(A) values, got shape {colours.shape}")
    if labels.size and labels.max() >= len(colours):
        raise OptionError(
            f"label {int(labels.max())} has no colour: the palette has {len(colours)}; pass a longer palette"
        )
    rgb = colours.astype(np.uint8)[labels]
    if valid is None:
        return rgb
    alpha = (valid * 255).astype(np.uint8)
    if rgb.shape[-1] == 4:
        rgb[..., 3] = np.minimum(rgb[..., 3], alpha)
        return rgb
    return np.dstack([rgb, alpha])


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """``(bands, H, W)`` image to ``(H, W, 3)`` uint8 for display, each band stretched to its 2-98 %."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    low, high = np.nanpercentile(bands, 2, axis=(1, 2)), np.nanpercentile(bands, 98, axis=(1, 2))
    scaled = (bands - low[:, None, None]) / np.maximum(high - low, 1e-12)[:, None, None]
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def save_panels(path: str | Path, panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 8) -> Path:
    """Write RGB or RGBA panels ``(H, W, 3|4)`` side by side, each under its title, as a PNG.

    With an RGBA panel the PNG keeps its alpha, so nodata stays transparent.
    """
    from PIL import Image, ImageDraw

    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    header = 22 if any(titles) else 0
    rgba = any(p.shape[-1] == 4 for p in panels)
    canvas = Image.new("RGBA" if rgba else "RGB", (width, height + header), (255, 255, 255, 0) if rgba else "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for panel, title in zip(panels, titles, strict=True):
        canvas.paste(Image.fromarray(panel if rgba and panel.shape[-1] == 4 else panel[..., :3]), (x, header))
        if title:
            draw.text((x + 4, 5), title, fill="black")
        x += panel.shape[1] + gap
    path = Path(path)
    canvas.save(path)
    return path


def quicklook(
    labels: Any,
    path: str | Path,
    *,
    palette: Sequence | np.ndarray | None = None,
    image: Any = None,
    max_size: int = 1024,
    tiles: TileGrid | None = None,
    weights: Any = "trim",
) -> Path:
    """Write a PNG of ``labels`` coloured by class, nodata transparent, optionally beside ``image``'s RGB.

    Parameters
    ----------
    labels
        A written raster's path (GeoTIFF/COG or zarr: read decimated, through overviews when there are some)
        or a ``(y, x)`` DataArray or array; ``(class, y, x)`` probabilities show their argmax.
    path
        The PNG to write.
    palette
        As for :func:`colorize`.
    image
        The input, as a path or ``(band, y, x)`` DataArray, shown on the left.
    max_size
        At most this many pixels a side (decimated, never the whole raster in memory).
    tiles, weights
        The run's :class:`TileGrid` (and weights): each tile's outline (red) and trusted core (yellow) drawn over
        every panel, to see which tile decided which pixels (scaled with the decimation).

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import quicklook
    >>> quicklook(np.eye(64, dtype="uint8"), getfixture("tmp_path") / "labels.png").name
    'labels.png'
    """
    classes, nodata = _decimated(labels, max_size)
    if classes.ndim == 3:  # probabilities: the most likely class, transparent where there was no data
        missing = np.isnan(classes).all(axis=0)
        classes = np.where(missing, 255, np.nan_to_num(classes, nan=-1).argmax(axis=0)).astype(np.uint8)
        nodata = 255
    panels, titles = [colorize(classes, palette, nodata=nodata)], ["labels" if image is not None else ""]
    if image is not None:
        pixels, image_nodata = _decimated(image, max_size, shape=classes.shape)
        pixels = pixels.reshape(-1, *pixels.shape[-2:]).astype(np.float32)
        missing = np.isnan(pixels) if image_nodata is None else (pixels == image_nodata) | np.isnan(pixels)
        rgb = to_rgb8(np.where(missing, np.nan, pixels))
        valid = ~missing.all(axis=0)
        panels.insert(0, np.dstack([rgb, (valid * 255).astype(np.uint8)]))
        titles.insert(0, "input")
    if tiles is not None:
        boxes = tile_boxes(tiles, weights)
        panels = [_draw_scaled(panel, boxes, tiles.shape) for panel in panels]
    return save_panels(path, panels, titles)


def _draw_scaled(panel: np.ndarray, boxes: list[tuple[Box, Box]], shape: tuple[int, int]) -> np.ndarray:
    """An ``(h, w, 3|4)`` uint8 panel with tile and core ``boxes`` of an image of ``shape`` scaled onto it."""
    sy, sx = panel.shape[0] / shape[0], panel.shape[1] / shape[1]

    def scaled(box: Box) -> Box:
        y0, y1, x0, x1 = int(box[0] * sy), round(box[1] * sy), int(box[2] * sx), round(box[3] * sx)
        return y0, max(y0 + 1, y1), x0, max(x0 + 1, x1)

    out = np.moveaxis(panel.copy(), -1, 0)  # channels first, as _outline draws
    opaque = (255,) if out.shape[0] == 4 else ()
    _draw_boxes(out, [(scaled(b), scaled(c)) for b, c in boxes], 1, (255, 0, 0, *opaque), (255, 255, 0, *opaque))
    return np.moveaxis(out, 0, -1)


def _decimated(source: Any, max_size: int, shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, Any]:
    """Pixels of ``source`` at most ``max_size`` a side (or exactly ``shape``), and its nodata value."""
    import xarray as xr

    if isinstance(source, (str, Path)):
        return _read_decimated(str(source), max_size, shape)
    nodata = source.rio.nodata if isinstance(source, xr.DataArray) else None
    step = _step(tuple(source.shape[-2:]), max_size, shape)
    decimated = source[..., :: step[0], :: step[1]]
    if hasattr(decimated, "compute"):  # lazy (xarray or dask, either array engine): only the decimated pixels
        decimated = decimated.compute()
    return np.asarray(getattr(decimated, "values", decimated)), nodata


def _step(size: tuple[int, ...], max_size: int, shape: tuple[int, ...] | None) -> tuple[int, int]:
    if shape is not None:
        return max(1, -(-size[0] // shape[0])), max(1, -(-size[1] // shape[1]))
    step = max(1, -(-max(size) // max_size))
    return step, step


def _read_decimated(path: str, max_size: int, shape: tuple[int, ...] | None) -> tuple[np.ndarray, Any]:
    if path.rstrip("/").endswith(".zarr"):
        from .io import open_raster

        data = open_raster(path, chunks=None)
        return _decimated(data if data.sizes["band"] > 1 else data.isel(band=0), max_size, shape)
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        step = _step((src.height, src.width), max_size, shape)
        out_shape = shape[-2:] if shape is not None else (-(-src.height // step[0]), -(-src.width // step[1]))
        pixels = src.read(out_shape=(src.count, *out_shape), resampling=Resampling.nearest)
        return (pixels[0] if src.count == 1 else pixels), src.nodata


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

    The core is the box where the tile's trust map is non-zero (``"trim"``: the tile minus ``overlap // 2`` on
    sides inside the image), so the drawing shows which tile decides which pixels.

    Parameters
    ----------
    image
        ``(C, H, W)`` or ``(N, C, H, W)``, a numpy array or a torch tensor (drawn on its own device); ``C`` is
        the number of values in ``color`` (or 1: drawn with the colour's mean).
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
    out = image.clone() if hasattr(image, "clone") else np.array(image, copy=True)  # a torch tensor stays one
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
        support = spec.support(grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), grid.overlap)
        core = (y0 + support.rows.start, y0 + support.rows.stop, x0 + support.cols.start, x0 + support.cols.stop)
        boxes.append(((y0, window.y.stop, x0, window.x.stop), core))
    return boxes


def _draw_boxes(
    out: Any, boxes: list[tuple[Box, Box]], width: int, color: Sequence[float], core_color: Sequence[float] | None
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
