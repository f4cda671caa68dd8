"""A self-contained demo: a synthetic scene, a small context model, naive tiling beside
seamless_dask.

Nothing here downloads anything. ``context_model`` is a stand-in for a real CNN: it classifies each
pixel by the brightness of its 31 x 31 neighbourhood with zero padding, so, like a real CNN, it sees
less context near a tile's edge and gets those pixels wrong. Naive tiling shows that as seams on
every tile border; seamless_dask blends overlapping tiles so that no pixel depends on a tile's edge.

The model is importable as ``"seamless_dask.demo:context_model"`` for the CLI and remote workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

CLASSES = ("water", "land", "built-up")
PALETTE = np.array([(40, 90, 200), (90, 170, 70), (220, 90, 60)], dtype=np.uint8)
_COLOURS = {
    "water": (0.05, 0.1, 0.2),
    "veg": (0.25, 0.5, 0.2),
    "soil": (0.55, 0.45, 0.35),
    "built": (0.8, 0.75, 0.7),
}


def context_model(
    context: int = 31, thresholds: tuple[float, float] = (0.2, 0.55), sharpness: float = 40.0
) -> Any:
    """3-class model: water below ``thresholds[0]`` of mean brightness over ``context`` pixels,
    built-up above ``thresholds[1]``, land between. Zero padding at the input's edges, as in most
    CNNs.
    """
    import torch
    from torch import nn

    t1, t2 = thresholds
    brightness = nn.Conv2d(3, 1, 1)
    context_mean = nn.AvgPool2d(context, stride=1, padding=context // 2, count_include_pad=True)
    classify = nn.Conv2d(1, 3, 1)
    brightness.load_state_dict({"weight": torch.full((1, 3, 1, 1), 1 / 3), "bias": torch.zeros(1)})
    classify.load_state_dict(
        {
            "weight": torch.tensor([-sharpness, 0.0, sharpness]).view(3, 1, 1, 1),
            "bias": torch.tensor([0.0, -sharpness * t1, -sharpness * (t1 + t2)]),
        }
    )
    model = nn.Sequential(brightness, context_mean, classify)
    return model.eval()


def synthetic_scene(size: int = 1024, seed: int = 0) -> xr.DataArray:
    """A ``(band, y, x)`` float32 RGB scene with a river, lakes, fields and a town; 10 m pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # fields of soil
    cover = np.where(np.sin(9 * xx + 3 * np.sin(5 * yy)) * np.cos(7 * yy) > 0.2, 1, 0)
    town = (
        (np.abs(xx - 0.75) < 0.14)
        & (np.abs(yy - 0.3) < 0.16)
        & ((np.floor(xx * 60) + np.floor(yy * 60)) % 3 > 0)
    )
    river = np.abs(xx - 0.35 - 0.08 * np.sin(2 * np.pi * yy * 1.5)) < 0.03
    lakes = ((xx - 0.7) / 0.12) ** 2 + ((yy - 0.75) / 0.08) ** 2 < 1
    layers = [
        (np.ones_like(xx, bool), "veg"),
        (cover == 1, "soil"),
        (town, "built"),
        (river | lakes, "water"),
    ]
    image = np.zeros((3, size, size), np.float32)
    for mask, name in layers:
        image[:, mask] = np.array(_COLOURS[name], np.float32)[:, None]
    image += rng.normal(0, 0.03, image.shape).astype(np.float32)
    coords = {
        "band": [1, 2, 3],
        "y": 5_000_000 - 10 * (np.arange(size) + 0.5),
        "x": 400_000 + 10 * (np.arange(size) + 0.5),
    }
    return xr.DataArray(np.clip(image, 0, 1), dims=("band", "y", "x"), coords=coords, name="scene")


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured: disagreement with whole-image inference, and where it wrote."""

    naive_error: float
    seamless_error: float
    seconds: float
    tiles: int
    png: Path


def run_demo(
    out_dir: str | Path, *, size: int = 1024, tile: int = 256, overlap: int = 64
) -> DemoResult:
    """Segment a synthetic scene three ways and write ``seams.png``: input, naive, seamless, whole
    image.
    """
    import torch

    from .. import TileGrid, segment
    from ..viz import quicklook as viz

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # in memory; segmented chunked, as a lazy raster is
    pixels, model = (
        synthetic_scene(size),
        context_model(),
    )
    scene = pixels.chunk({"y": 512, "x": 512})
    with torch.inference_mode():
        whole = model(torch.from_numpy(pixels.values)[None])[0].argmax(0).numpy()
    start = time.perf_counter()
    seamless = segment(scene, model, tile_size=tile, overlap=overlap).compute()
    seconds = time.perf_counter() - start
    naive = segment(scene, model, tile_size=tile, overlap=0, weights="constant").compute()
    panels = [viz.to_rgb8(pixels.values)] + [
        viz.colorize(a, PALETTE) for a in (naive.values, seamless.values, whole)
    ]
    titles = [
        "input (synthetic scene)",
        f"naive {tile}px tiles",
        "seamless_dask",
        "whole image in one pass",
    ]
    png = viz.save_panels(out / "seams.png", [p[::2, ::2] for p in panels], titles)
    return DemoResult(
        naive_error=float(np.mean(naive.values != whole)),
        seamless_error=float(np.mean(seamless.values != whole)),
        seconds=seconds,
        tiles=TileGrid((size, size), tile, overlap).n_tiles,
        png=png,
    )


def write_scene_geotiff(path: str | Path, size: int = 2048, seed: int = 0) -> Path:
    """Write :func:`synthetic_scene` as a 3-band uint8 GeoTIFF (UTM 31N, 10 m pixels, tiled,
    deflate).

    Like a real satellite scene, its footprint is a tilted square inside a nodata (0) border.
    """
    import rasterio
    from rasterio.transform import from_origin

    scene = synthetic_scene(size, seed)
    pixels = (scene.values * 254 + 1).astype(np.uint8)  # 1..255: 0 stays free for nodata
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    angle = np.deg2rad(12)
    u, v = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
    pixels[:, (np.abs(u) > 0.42) | (np.abs(v) > 0.42)] = 0
    profile = {
        "driver": "GTiff",
        "height": size,
        "width": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32631",
        "transform": from_origin(400_000, 5_000_000, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    path = Path(path)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
        dst.descriptions = ("red", "green", "blue")
    return path
