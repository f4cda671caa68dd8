"""Segment a whole-slide image end to end, with no download: OME-TIFF in, OME-Zarr labels out, training tiles.

    python examples/slide.py [--size 4096] [--out slide-output]

1. A synthetic H&E-like slide is written as a pyramidal OME-TIFF (RGB, 0.5 µm pixels, three levels), as a
   scanner's export would be (``seamless_dask.demo.slide``).
2. ``open_raster`` reads it lazily through tifffile, window by window, with its physical pixel size.
3. ``segment`` labels nuclei, tissue and background with class names and colours, and ``to_ome_zarr`` writes a
   multiscale OME-Zarr whose ``image-label`` metadata napari, QuPath and OMERO show as named, coloured classes.
4. The labels are read back with ome-zarr-py's reader (when it is installed), a quicklook PNG with a legend
   is drawn, and ``TileDataset`` serves training tiles straight from the slide.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import seamless_dask as sd
from seamless_dask.demo.slide import (
    SLIDE_CLASSES,
    SLIDE_PALETTE,
    tissue_model,
    write_slide_ome_tiff,
)


def run(out: Path, size: int = 4096) -> dict[str, Any]:
    """Write the slide, segment it, write and reread the labels; return what each step made."""
    out.mkdir(parents=True, exist_ok=True)
    slide_path = write_slide_ome_tiff(out / "slide.ome.tif", size, pixel_size=0.5, levels=3)
    slide = sd.open_raster(slide_path)  # lazy: (band, y, x), y/x in µm
    labels = sd.segment(
        slide,
        tissue_model(),
        tile_size=256,
        overlap=64,
        normalize=(0, 255),
        class_names=list(SLIDE_CLASSES),
        palette=list(SLIDE_PALETTE),
    )
    labels_path = out / "labels.ome.zarr"
    sd.to_ome_zarr(labels, labels_path, overwrite=labels_path.exists())
    png = sd.quicklook(labels_path, out / "labels.png", image=slide)
    levels = reread_with_ome_zarr(labels_path)
    dataset = sd.TileDataset(str(slide_path), tile_size=256, overlap=0)
    first = dataset[0]["image"]
    return {"slide": slide_path, "labels": labels_path, "png": png, "levels": levels, "tiles": len(dataset),
            "tile_shape": tuple(first.shape), "pixel_size": slide.attrs["pixel_size"]}  # fmt: skip


def reread_with_ome_zarr(path: Path) -> list[tuple[int, ...]]:
    """The level shapes and class names as ome-zarr-py reads them (empty without it)."""
    try:
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Reader
    except ImportError:
        return []
    try:
        node = next(iter(Reader(parse_url(str(path)))()))
    except (
        NotImplementedError
    ):  # ome-zarr-py 0.18 reads with da.from_zarr, which dask's array-expr lacks
        print(
            "ome-zarr-py cannot read under dask's array-expr engine; sd.open_raster(path, level=k) can"
        )
        return []
    names = [p.get("class") for p in node.metadata.get("properties", {}).values()]
    print(f"ome-zarr reads {len(node.data)} levels, classes {names}")
    return [tuple(np.shape(level)) for level in node.data]


def main() -> None:
    """Run the example from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="slide side in pixels")
    parser.add_argument("--out", type=Path, default=Path("slide-output"))
    args = parser.parse_args()
    made = run(args.out, args.size)
    print(
        f"segmented {made['slide']} ({args.size} px a side, {made['pixel_size'][0]} µm pixels) into {made['labels']} "
        f"(levels {made['levels']}); quicklook {made['png']}; {made['tiles']} training tiles of {made['tile_shape']}"
    )


if __name__ == "__main__":
    main()
