"""What seamless_dask does with each real raster of ../shared/data (run by hand; the tests check the same).

    .venv/bin/python benchmarks/real_rasters.py [--data ../shared/data] [--out /tmp/seamless-real]

For each GeoTIFF: open, segment with a small 2-class brightness model (tile 128, overlap 32), count the
tiles that reached the model, write a zarr and a COG, reopen both and compare CRS, transform, nodata,
size and pixels, and validate the COG with rio_cogeo.
"""

from __future__ import annotations

import argparse
import shutil
import threading
from pathlib import Path

import numpy as np
import rasterio
import torch
import xarray as xr
from rio_cogeo.cogeo import cog_validate

import seamless_dask as sd

NAMES = ["RGB.byte.tif", "shade.tif", "rgb1_fake_nir_epsg3857.tif", "all-nodata.tif", "cogeo.tif"]


class Brightness(torch.nn.Module):
    """2 classes, dark vs bright, by the 5 x 5 mean over bands; counts the tiles it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles, self._lock = 0, threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            self.tiles += x.shape[0]
        mean = torch.nn.functional.avg_pool2d(
            x.float().mean(1, keepdim=True), 5, stride=1, padding=2
        )
        return torch.cat([128 - mean, mean - 128], dim=1) / 16


def report(path: Path, out: Path) -> str:
    image = sd.open_raster(path, chunks=300)
    model = Brightness()
    labels = sd.segment(image, model, tile_size=128, overlap=32, num_classes=2)
    values = labels.values
    ran = model.tiles  # before the writers compute the result again
    total = sd.TileGrid(values.shape, 128, 32).n_tiles
    zarr_path, cog_path = out / (path.stem + ".zarr"), out / (path.stem + ".tif")
    sd.to_zarr(labels, zarr_path, overwrite=True)
    sd.to_cog(labels, cog_path, overwrite=True)
    back = xr.open_zarr(zarr_path, decode_coords="all", mask_and_scale=False)["labels"]
    zarr_ok = (
        back.rio.crs == image.rio.crs
        and back.rio.transform().almost_equals(image.rio.transform())
        and back.rio.nodata == labels.rio.nodata
        and np.array_equal(back.values, values)
    )
    valid, errors, warnings = cog_validate(str(cog_path))
    with rasterio.open(cog_path) as cog:
        cog_ok = (
            (cog.height, cog.width) == values.shape
            and cog.crs == image.rio.crs
            and cog.transform.almost_equals(image.rio.transform())
            and cog.nodata == labels.rio.nodata
            and np.array_equal(cog.read(1), values)
        )
        overviews = cog.overviews(1)
    nodata_px = int((values == labels.rio.nodata).sum()) if labels.rio.nodata is not None else 0
    bands, height, width = image.shape
    return (
        f"| {path.name} | {bands} x {height} x {width} {image.dtype} | {image.rio.nodata} | {total} | "
        f"{ran} ({total - ran} skipped) | {labels.dtype}, nodata {labels.rio.nodata}, "
        f"{nodata_px / values.size:.1%} nodata | {'same' if zarr_ok else 'DIFFERS'} | "
        f"{'valid' if valid else errors}{' ' + str(warnings) if warnings else ''}, overviews {overviews}, "
        f"{'same' if cog_ok else 'DIFFERS'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/seamless-real"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    print(
        "| raster | bands x H x W | input nodata | tiles | reached the model | labels | zarr round trip | COG |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in NAMES:
        print(report(args.data / name, args.out), flush=True)


if __name__ == "__main__":
    main()
