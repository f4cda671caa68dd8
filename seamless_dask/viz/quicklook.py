"""Palettes, colourised label maps and side-by-side quicklook PNGs (numpy and Pillow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import default_palette
from ..exceptions import OptionError
from ..tiling.grid import TileGrid
from .borders import draw_scaled, tile_boxes


# Distinct, colour-blind-friendly first colours (Okabe-Ito, then Tableau), then evenly spread hues.
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
    colours = (
        default_palette(int(labels.max()) + 1 if labels.size else 1)
        if palette is None
        else np.asarray(palette)
    )
    if colours.ndim != 2 or colours.shape[1] not in (3, 4):
        raise OptionError(
            f"palette must be (classes, 3) or (classes, 4) RGB(A) values, got shape {colours.shape}"
        )
    if labels.size and labels.max() >= len(colours):
        raise OptionError(
            f"label {int(labels.max())} has no colour: the palette has {len(colours)}; pass a "
            f"longer palette"
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


def save_panels(
    path: str | Path, panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 8
) -> Path:
    """Write RGB or RGBA panels ``(H, W, 3|4)`` side by side, each under its title, as a PNG.

    With an RGBA panel the PNG keeps its alpha, so nodata stays transparent.
    """
    from PIL import Image, ImageDraw

    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    header = 22 if any(titles) else 0
    rgba = any(p.shape[-1] == 4 for p in panels)
    canvas = Image.new(
        "RGBA" if rgba else "RGB", (width, height + header), (255, 255, 255, 0) if rgba else "white"
    )
    draw = ImageDraw.Draw(canvas)
    x = 0
    for panel, title in zip(panels, titles, strict=True):
        canvas.paste(
            Image.fromarray(panel if rgba and panel.shape[-1] == 4 else panel[..., :3]), (x, header)
        )
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
    class_names: Sequence[str] | None = None,
    legend: bool = True,
    measure: str | None = None,
) -> Path:
    """Write a PNG of ``labels`` coloured by class, nodata transparent, optionally beside
    ``image``'s RGB.

    Parameters
    ----------
    labels
        A written raster's path (GeoTIFF/COG or zarr: read decimated, through overviews when there
        are some) or a ``(y, x)`` DataArray or array; ``(class, y, x)`` probabilities show their
        argmax.
    path
        The PNG to write.
    palette, class_names
        The classes' colours (as for :func:`colorize`) and names; default: those the labels carry
        (``segment(class_names=...)``: a DataArray's attributes, a zarr's, a COG's colour table and
        category names), else the default palette.
    image
        The input, as a path or ``(band, y, x)`` DataArray, shown on the left.
    max_size
        At most this many pixels a side (decimated, never the whole raster in memory).
    tiles, weights
        The run's :class:`TileGrid` (and weights): each tile's outline (red) and trusted core
        (yellow) drawn over every panel, to see which tile decided which pixels (scaled with the
        decimation).
    legend
        A panel on the right with each class's colour and name (the classes present in the labels).
    measure
        ``labels`` is no class map but ``segment(output="uncertainty")``: its first band (the
        disagreement) shown grey, dark where the passes agree, under this title.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import quicklook
    >>> import pathlib, tempfile
    >>> tmp = pathlib.Path(tempfile.mkdtemp())  # any folder of yours
    >>> quicklook(np.eye(64, dtype="uint8"), tmp / "labels.png").name
    'labels.png'
    """
    if measure is not None:
        return _measure_quicklook(labels, path, measure, image=image, max_size=max_size)
    named = _classes_for(labels, class_names, palette)
    palette = named.colors if named is not None else palette
    classes, nodata = _decimated(labels, max_size)
    if (
        classes.ndim == 3
    ):  # probabilities: the most likely class, transparent where there was no data
        if np.issubdtype(classes.dtype, np.integer):  # quantised: nodata is the dtype's maximum
            fill = np.iinfo(classes.dtype).max if nodata is None else nodata
            classes = np.where(classes == fill, np.nan, classes.astype(np.float32))
        missing = np.isnan(classes).all(axis=0)
        classes = np.where(missing, 255, np.nan_to_num(classes, nan=-1).argmax(axis=0)).astype(
            np.uint8
        )
        nodata = 255
    panels, titles = (
        [colorize(classes, palette, nodata=nodata)],
        ["labels" if image is not None else ""],
    )
    if image is not None:
        pixels, image_nodata = _decimated(image, max_size, shape=classes.shape)
        pixels = pixels.reshape(-1, *pixels.shape[-2:]).astype(np.float32)
        missing = (
            np.isnan(pixels)
            if image_nodata is None
            else (pixels == image_nodata) | np.isnan(pixels)
        )
        rgb = to_rgb8(np.where(missing, np.nan, pixels))
        valid = ~missing.all(axis=0)
        panels.insert(0, np.dstack([rgb, (valid * 255).astype(np.uint8)]))
        titles.insert(0, "input")
    if tiles is not None:
        boxes = tile_boxes(tiles, weights)
        panels = [draw_scaled(panel, boxes, tiles.shape) for panel in panels]
    if legend:
        present = [int(c) for c in np.unique(classes) if nodata is None or c != nodata]
        colours = (
            default_palette(max(present, default=0) + 1) if palette is None else np.asarray(palette)
        )
        names = list(named.names) if named is not None else []
        panels.append(_legend(present, colours, names, panels[0].shape[0]))
        titles.append("classes")
    return save_panels(path, panels, titles)


def _measure_quicklook(
    values: Any, path: str | Path, title: str, *, image: Any, max_size: int
) -> Path:
    """An uncertainty map's first band, grey (stretched to its 2-98 %), beside the input."""
    decimated, _ = _decimated(values, max_size)
    first = decimated.reshape(-1, *decimated.shape[-2:])[:1].astype(np.float32)
    valid = ~np.isnan(first[0])
    panels = [np.dstack([to_rgb8(first), (valid * 255).astype(np.uint8)])]
    titles = [title]
    if image is not None:
        pixels, image_nodata = _decimated(image, max_size, shape=first.shape[-2:])
        pixels = pixels.reshape(-1, *pixels.shape[-2:]).astype(np.float32)
        missing = np.isnan(pixels) if image_nodata is None else (pixels == image_nodata)
        rgb = to_rgb8(np.where(missing, np.nan, pixels))
        panels.insert(0, np.dstack([rgb, (~missing.all(axis=0) * 255).astype(np.uint8)]))
        titles.insert(0, "input")
    return save_panels(path, panels, titles)


def _classes_for(labels: Any, class_names: Sequence[str] | None, palette: Any) -> Any:
    """The classes to show: the ones given, else the ones ``labels`` carries (attributes, store, COG)."""
    from ..classes import as_classes, classes_of

    if class_names is not None or palette is not None:
        return as_classes(class_names, palette)
    if isinstance(labels, (str, Path)):
        return written_classes(str(labels))
    return classes_of(dict(getattr(labels, "attrs", {})))


def written_classes(path: str) -> Any:
    """The classes a written class map carries: a zarr's attributes, a TIFF's colour table and GDAL
    categories (``None`` without either).
    """
    from ..classes import as_classes, classes_of
    from ..io import is_zarr, open_raster

    if is_zarr(path):
        return classes_of(open_raster(path).attrs)
    import rasterio

    with rasterio.open(path) as src:
        try:
            table = src.colormap(1)
        except ValueError:  # no colour table
            return None
    from ..io import category_names

    names = category_names(path)
    count = len(names) or max((k for k, v in table.items() if v[3]), default=0) + 1
    return as_classes(names or None, [table.get(i, (0, 0, 0, 255)) for i in range(count)])


def _legend(present: list[int], colours: np.ndarray, names: list[str], height: int) -> np.ndarray:
    """An ``(h, 160, 4)`` panel: a swatch and a name for each class in ``present`` (at most as many as
    fit).
    """
    from PIL import Image, ImageDraw

    row = 18
    shown = present[: max(1, max(height, row * 3) // row - 1)]
    panel = Image.new("RGBA", (160, max(height, row * (len(shown) + 1))), (255, 255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, value in enumerate(shown):
        colour = tuple(int(v) for v in colours[value][:3]) if value < len(colours) else (0, 0, 0)
        draw.rectangle((4, 4 + i * row, 18, 18 + i * row), fill=colour, outline="black")
        draw.text(
            (24, 5 + i * row),
            names[value] if value < len(names) else f"class {value}",
            fill="black",
        )
    if len(shown) < len(present):
        draw.text((4, 5 + len(shown) * row), f"... {len(present) - len(shown)} more", fill="black")
    return np.asarray(panel)


def _decimated(
    source: Any, max_size: int, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, Any]:
    """Pixels of ``source`` at most ``max_size`` a side (or exactly ``shape``), and its nodata value."""
    import xarray as xr

    if isinstance(source, (str, Path)):
        return _read_decimated(str(source), max_size, shape)
    nodata = source.rio.nodata if isinstance(source, xr.DataArray) else None
    step = _step(tuple(source.shape[-2:]), max_size, shape)
    decimated = source[..., :: step[0], :: step[1]]
    if hasattr(
        decimated, "compute"
    ):  # lazy (xarray or dask, either array engine): only the decimated pixels
        decimated = decimated.compute()
    return np.asarray(getattr(decimated, "values", decimated)), nodata


def _step(size: tuple[int, ...], max_size: int, shape: tuple[int, ...] | None) -> tuple[int, int]:
    if shape is not None:
        return max(1, -(-size[0] // shape[0])), max(1, -(-size[1] // shape[1]))
    step = max(1, -(-max(size) // max_size))
    return step, step


def _read_decimated(
    path: str, max_size: int, shape: tuple[int, ...] | None
) -> tuple[np.ndarray, Any]:
    from ..io import is_zarr, open_raster, read_by_level

    if is_zarr(path) or read_by_level(path):
        data = open_raster(path, chunks=None)
        # a pyramid (OME-Zarr, slide): the coarsest level still at least max_size long, never all of
        # level 0
        for level in range(
            1, int(data.attrs.get("ngff_levels", data.attrs.get("slide_levels", 1)))
        ):
            coarser = open_raster(path, level=level)
            if max(coarser.shape[-2:]) < max_size or (
                shape is not None and coarser.shape[-2] < shape[-2]
            ):
                break
            data = coarser
        return _decimated(data if data.sizes["band"] > 1 else data.isel(band=0), max_size, shape)
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        step = _step((src.height, src.width), max_size, shape)
        out_shape = (
            shape[-2:]
            if shape is not None
            else (-(-src.height // step[0]), -(-src.width // step[1]))
        )
        pixels = src.read(out_shape=(src.count, *out_shape), resampling=Resampling.nearest)
        return (pixels[0] if src.count == 1 else pixels), src.nodata
