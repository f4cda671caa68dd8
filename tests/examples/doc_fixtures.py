"""The one fixture file the docs' code blocks run against (``test_doc_blocks.py``): the files and names
their placeholders stand for, small and real.

Files, in the folder the blocks run in: ``scene.tif`` and ``my_scene.tif`` (the demo's georeferenced
scene, 400 px), ``scan.svs`` and ``scan.ome.tif`` (the demo slide, 512 px at 0.5 µm), ``scan.ome.zarr``
(the same slide as an NGFF 0.4 image), ``stack.ome.zarr`` (a z-stack, 1 x 24 x 64 x 64), ``truth.tif``
(a class map to score against), ``slide1.tif`` and ``slide2.tif`` with their ``-labels.tif`` (training
pairs), and ``my_pkg/models.py`` whose ``build`` is the demo's 3-class model and ``unet3d`` a small 3-D
one (on the ``PYTHONPATH`` of the blocks' processes). Names, in the namespace of each document's Python
blocks: ``model`` (that model), ``image``/``scene`` (the scene, opened lazily), ``slide`` (the slide),
``mask`` (a thumbnail of the slide's left half), ``x`` and ``target`` (a batch and its labels for the
tiler), ``out`` and ``run_my_model`` (for the blender), ``torch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import support

MY_PKG = '''"""A user's package: the model the docs call my_pkg.models:build."""


def build():
    from seamless_dask.demo import context_model

    return context_model()


def unet3d():
    from seamless_dask.testing import conv3d_net

    return conv3d_net()
'''


def prepare(folder: Path) -> dict[str, Any]:
    """Write the files into ``folder`` and return the namespace the Python blocks start from."""
    import torch

    import seamless_dask as sd
    from seamless_dask.demo import context_model, write_scene_geotiff
    from seamless_dask.demo.slide import synthetic_slide, write_slide_ome_tiff, write_slide_svs

    scene = write_scene_geotiff(folder / "scene.tif", size=400)
    write_scene_geotiff(folder / "my_scene.tif", size=400)
    write_slide_svs(folder / "scan.svs", size=512)
    write_slide_ome_tiff(folder / "scan.ome.tif", size=512)
    support.write_ngff_image(folder / "scan.ome.zarr", np.moveaxis(synthetic_slide(512), -1, 0),
                             pixel_size=0.5, chunk=256)  # fmt: skip
    volume = np.random.default_rng(0).random((1, 24, 64, 64)).astype(np.float32)
    support.write_ngff_stack(folder / "stack.ome.zarr", volume, chunks=(1, 12, 32, 32))
    (folder / "my_pkg").mkdir()
    (folder / "my_pkg" / "__init__.py").write_text("")
    (folder / "my_pkg" / "models.py").write_text(MY_PKG)
    with rasterio.open(scene) as src:
        profile, pixels = src.profile, src.read()
    truth = (pixels.mean(axis=0) > 100).astype("uint8") + (pixels.mean(axis=0) > 180)
    _geotiff(folder / "truth.tif", truth[None], profile, nodata=255)
    for name in ("slide1", "slide2"):
        _geotiff(folder / f"{name}.tif", pixels, profile)
        _geotiff(folder / f"{name}-labels.tif", truth[None], profile, nodata=255)
    image = sd.open_raster(scene)
    slide = sd.open_raster(folder / "scan.svs")
    thumbnail = np.zeros((64, 64), dtype=bool)
    thumbnail[:, :32] = True
    return {
        "sd": sd,
        "torch": torch,
        "model": context_model(),
        "image": image,
        "scene": image,
        "slide": slide,
        "mask": thumbnail,
        "x": torch.rand(2, 3, 512, 512),
        "target": torch.randint(0, 3, (2, 512, 512)),
        "out": np.zeros((3, *image.shape[-2:]), np.float32),
        "run_my_model": lambda pixels: np.stack([np.asarray(pixels, np.float32).mean(axis=0)] * 3),
    }


def _geotiff(path: Path, data: np.ndarray, profile: dict, nodata: float | None = None) -> None:
    profile = {**profile, "count": data.shape[0], "dtype": str(data.dtype), "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
