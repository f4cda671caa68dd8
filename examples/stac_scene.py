"""Segment a scene found through STAC, with no network: a STAC item over local COGs, loaded with odc-stac.

    python examples/stac_scene.py [--raster ../shared/data/RGB.byte.tif] [--out stac-output]

Each band of the raster becomes a single-band COG and an asset of one pystac ``Item`` (with the projection
extension, as real catalogues publish them); ``odc.stac.load`` reads the item lazily as a ``Dataset`` with one
variable per band and a ``time`` dim; ``seamless_dask.segment(dataset, model, bands=[...])`` maps over time and
keeps the CRS and transform; the labels are written as a COG with a quicklook. Without ``--raster``, the demo's
synthetic scene is used.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import numpy as np


def write_item(
    raster: Path, folder: Path, names: tuple[str, ...] = ("red", "green", "blue")
) -> Any:
    """A pystac Item whose assets are single-band COGs cut from ``raster``'s first bands, in ``folder``."""
    import pystac
    import rasterio
    from pystac.extensions.projection import ProjectionExtension
    from rasterio.warp import transform_bounds
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(raster) as src:
        crs, transform, shape, bounds = src.crs, src.transform, (src.height, src.width), src.bounds
        west, south, east, north = transform_bounds(crs, "EPSG:4326", *bounds)
        geometry = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                        [west, south]]]}  # fmt: skip
        item = pystac.Item("scene", geometry, [west, south, east, north], datetime.datetime(2026, 11, 21,
                           tzinfo=datetime.UTC), {})  # fmt: skip
        for band, name in enumerate(names, start=1):
            path = folder / f"{name}.tif"
            cog_translate(src, str(path), cog_profiles.get("deflate"), indexes=[band], quiet=True)
            item.add_asset(
                name,
                # absolute: odc-stac resolves no relative href of an item without a self link
                pystac.Asset(str(path.resolve()), media_type=pystac.MediaType.COG, roles=["data"]),
            )
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    projection.epsg, projection.transform, projection.shape = (
        crs.to_epsg(),
        list(transform)[:6],
        list(shape),
    )
    item.save_object(dest_href=str(folder / "item.json"), include_self_link=False)
    return item


def segment_item(
    item: Any, names: tuple[str, ...] = ("red", "green", "blue"), **options: Any
) -> Any:
    """The item loaded with odc-stac and segmented: lazy ``(time, y, x)`` labels with the item's CRS."""
    import odc.stac

    import seamless_dask as sd
    from seamless_dask.demo.scene import context_model

    dataset = odc.stac.load([item], bands=list(names), chunks={})
    options = {"tile_size": 256, "overlap": 64, "normalize": (0, 255), **options}
    return sd.segment(dataset, context_model(), bands=list(names), **options)


def main() -> None:
    import seamless_dask as sd
    from seamless_dask.demo.scene import write_scene_geotiff

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raster", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("stac-output"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)  # before the demo scene is written into it
    raster = args.raster or write_scene_geotiff(args.out / "scene.tif", size=1024)
    item = write_item(raster, args.out / "assets")
    labels = segment_item(item)
    first = labels.isel(time=0)
    sd.to_cog(first, args.out / "labels.tif", overwrite=True)
    sd.quicklook(args.out / "labels.tif", args.out / "labels.png")
    counts = np.bincount(first.values.ravel())
    print(
        f"{labels.sizes} {labels.rio.crs}; class counts {counts.tolist()}; wrote {args.out / 'labels.tif'}"
    )


if __name__ == "__main__":
    main()
