"""A synthetic whole-slide image and a stand-in model, for the slide example and the tests: no
download.

``synthetic_slide`` paints an H&E-like scan: white glass, pink tissue in irregular islands, dark
purple nuclei inside them. ``write_slide_ome_tiff`` writes it as a tiled, pyramidal OME-TIFF with
its physical pixel size, as a scanner's export would be. ``tissue_model`` classifies pixels into
nuclei, tissue and background by their brightness over a small neighbourhood
(``"seamless_dask.demo.slide:tissue_model"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SLIDE_CLASSES = ("nuclei", "tissue", "background")
SLIDE_PALETTE = ("#5b2a86", "#e88fb4", "#f4f4f4")


def synthetic_slide(size: int | tuple[int, int] = 2048, seed: int = 0) -> np.ndarray:
    """A ``(y, x, 3)`` uint8 RGB slide: glass, tissue islands and nuclei (about 40 px across at 0.5
    µm).
    """
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    field = np.zeros((height, width), np.float32)
    for _ in range(6):  # the islands: a few broad bumps
        cy, cx, r = (
            rng.uniform(0, height),
            rng.uniform(0, width),
            rng.uniform(0.15, 0.3) * min(height, width),
        )
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    field += 0.15 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    tissue = field > 0.6
    nuclei = np.zeros_like(tissue)
    count = int(tissue.sum() / 2500)
    ys, xs = np.nonzero(tissue)
    for i in rng.choice(len(ys), size=min(count, len(ys)), replace=False) if len(ys) else []:
        y0, x0, r = ys[i], xs[i], rng.uniform(6, 14)
        box = np.s_[max(0, int(y0 - r)) : int(y0 + r) + 1, max(0, int(x0 - r)) : int(x0 + r) + 1]
        nuclei[box] |= (yy[box] - y0) ** 2 + (xx[box] - x0) ** 2 < r**2
    image = np.empty((height, width, 3), np.float32)
    image[:] = (244, 244, 246)
    image[tissue] = (232, 150, 190)
    image[nuclei & tissue] = (90, 40, 130)
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_slide_ome_tiff(
    path: str | Path,
    size: int | tuple[int, int] = 2048,
    *,
    pixel_size: float = 0.5,
    levels: int = 3,
    seed: int = 0,
) -> Path:
    """Write :func:`synthetic_slide` as a pyramidal OME-TIFF: 256 px tiles, ``levels`` levels
    (sub-IFDs) halving each time, RGB interleaved, ``PhysicalSizeX/Y`` in µm.
    """
    import tifffile

    image = synthetic_slide(size, seed)
    path = Path(path)
    options: dict[str, Any] = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    metadata = {"axes": "YXS", "PhysicalSizeX": pixel_size, "PhysicalSizeY": pixel_size}
    metadata.update(PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(image, subifds=levels - 1, metadata=metadata, **options)
        for level in range(1, levels):
            tif.write(image[:: 2**level, :: 2**level], subfiletype=1, **options)
    return path


def write_slide_svs(
    path: str | Path, size: int | tuple[int, int] = 2048, *, mpp: float = 0.5, seed: int = 0
) -> Path:
    """Write :func:`synthetic_slide` as an Aperio SVS (what OpenSlide and tifffile both read as
    one): JPEG tiles, the full level, a thumbnail, then a level at a quarter size, each with
    Aperio's description (``MPP``).
    """
    import tifffile

    image = synthetic_slide(size, seed)
    height, width = image.shape[:2]
    head = f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] (256x256) JPEG/RGB Q=95"
    options: dict[str, Any] = {"metadata": None, "photometric": "rgb", "compression": "jpeg"}
    path = Path(path)
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), description=f"{head}|AppMag = 20|MPP = {mpp}", **options)
        tif.write(image[::8, ::8], description=f"{head} -> thumbnail|MPP = {mpp}", **options)
        tif.write(
            image[::4, ::4],
            tile=(256, 256),
            description=f"{head} -> level 1|MPP = {mpp}",
            **options,
        )
    return path


def tissue_model(context: int = 5) -> Any:
    """3 classes by the mean brightness of ``context`` x ``context`` pixels of a [0, 1] RGB tile:
    nuclei (dark), tissue, background (glass, bright); normalise uint8 slides with ``normalize=(0,
    255)``.
    """
    from .scene import context_model

    return context_model(context=context, thresholds=(0.5, 0.85), sharpness=60.0)
