"""Objects, not only pixels: segment a scene, count and measure its objects, open them in a GIS.

    python examples/objects.py [--out objects-output] [--size 1024]

1. Writes ``scene.tif`` (the demo's synthetic UTM scene) and segments it with the CLI into ``labels.tif``.
2. ``seamless-dask vectorize labels.tif objects.gpkg``: every object a polygon, with its class name, in the
   scene's CRS (open it in QGIS over ``scene.tif``).
3. The object table: how many objects of each class, and their area in m^2.
4. ``objects.png``: the scene with each object's outline in its class's colour.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw

import seamless_dask as sd
from seamless_dask.demo.scene import CLASSES, PALETTE, write_scene_geotiff

MODEL = "seamless_dask.demo:context_model"


def cli(*args: str) -> None:
    print("$ seamless-dask", " ".join(args))
    subprocess.run([sys.executable, "-m", "seamless_dask.cli", *args], check=True)


def outlines(scene: Path, frame, png: Path) -> Path:
    """The scene's RGB with every polygon's rings drawn in its class's colour."""
    with rasterio.open(scene) as source:
        rgb, to_pixels = np.moveaxis(source.read([1, 2, 3]), 0, -1), ~source.transform
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    for geometry, value in zip(frame.geometry, frame["class"], strict=True):
        for polygon in getattr(geometry, "geoms", [geometry]):
            for ring in [polygon.exterior, *polygon.interiors]:
                points = [to_pixels * xy for xy in ring.coords]
                draw.line(points, fill=tuple(PALETTE[int(value)]), width=2)
    image.save(png)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="objects-output", help="folder for what it writes")
    parser.add_argument("--size", type=int, default=1024, help="scene size in pixels")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scene = write_scene_geotiff(out / "scene.tif", size=args.size)
    cli("segment", str(scene), str(out / "labels.tif"), "--model", MODEL, "--tile-size", "256",
        "--overlap", "64", "--normalize", "0/255", "--num-classes", "3", "--class-names",
        ",".join(CLASSES), "--chunks", "512", "--overwrite", "--no-progress")  # fmt: skip
    # every class an object here, water (class 0) too: by default class 0 is background
    cli("vectorize", str(out / "labels.tif"), str(out / "objects.gpkg"), "--classes", "0,1,2",
        "--overwrite")  # fmt: skip

    labels = sd.open_raster(out / "labels.tif", chunks=512).isel(band=0)
    labels.attrs["class_names"] = CLASSES
    table = sd.object_table(labels, classes=[0, 1, 2]).compute()
    for value, group in table.groupby("class"):
        print(f"{CLASSES[int(value)]}: {len(group)} objects, {group['area'].sum() / 1e6:.2f} km^2, "
              f"median {group['area'].median():.0f} m^2")  # fmt: skip
    frame = sd.polygons(labels, classes=[0, 1, 2])
    png = outlines(scene, frame, out / "objects.png")
    print(f"{len(frame)} polygons; done in {time.perf_counter() - start:.0f} s: see {png}")


if __name__ == "__main__":
    main()
