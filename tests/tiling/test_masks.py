"""Regions from rasters (``tiling/masks.py``): a boolean mask at the image's resolution selects
exactly its pixels; a thumbnail selects blocks of them; a callable decides tile by tile; a slide's
tissue is found on a thumbnail and only the tiles over it run.
"""

import dask.array as da
import numpy as np
import pytest
import shapely
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.demo.slide import synthetic_slide
from seamless_dask.exceptions import OptionError
from seamless_dask.tiling.masks import otsu, tissue_mask

TILE = {"tile_size": 32, "overlap": 8}


def _touching(geometry, shape) -> int:
    grid = sd.TileGrid(shape, 32, 8)
    return sum(
        geometry.intersects(shapely.box(w.x.start, w.y.start, w.x.stop, w.y.stop))
        for w in grid.windows()
    )


@pytest.fixture(scope="module")
def image():
    return helpers.structured_image(3, 150, 170)


@pytest.fixture(scope="module")
def whole(image):
    return sd.segment(image, helpers.conv_net(), num_classes=4, **TILE)


@pytest.mark.parametrize("kind", ["numpy", "dask", "xarray"])
def test_a_full_resolution_mask_selects_exactly_its_pixels(image, whole, kind):
    mask = np.zeros(image.shape[1:], dtype=bool)
    mask[20:90, 30:60] = True
    mask[100:140, 100:160] = True
    given = {"numpy": mask, "dask": da.from_array(mask, chunks=50),
             "xarray": xr.DataArray(mask, dims=("y", "x"))}[kind]  # fmt: skip
    counting = helpers.Counting(helpers.conv_net())
    labels = sd.segment(image, counting, num_classes=4, region=given, chunks=50, **TILE)
    np.testing.assert_array_equal(labels[mask], whole[mask])
    assert (labels[~mask] == 255).all()
    boxes = shapely.union_all([shapely.box(30, 20, 60, 90), shapely.box(100, 100, 160, 140)])
    assert (
        counting.tiles
        == _touching(boxes, image.shape[1:])
        < sd.TileGrid(image.shape[1:], 32, 8).n_tiles
    )


def test_a_thumbnail_mask_selects_the_blocks_its_pixels_stand_for(image, whole):
    thumbnail = np.zeros((15, 17), dtype=np.uint8)  # a tenth of the image
    thumbnail[2:5, 3:6] = 1
    labels = sd.segment(image, helpers.conv_net(), num_classes=4, region=thumbnail, **TILE)
    inside = np.zeros(image.shape[1:], dtype=bool)
    inside[20:50, 30:60] = True
    np.testing.assert_array_equal(labels[inside], whole[inside])
    assert (labels[~inside] == 255).all()


def test_a_callable_decides_tile_by_tile(image, whole):
    asked = []

    def left_half(y0, x0, y1, x1):
        asked.append((y0, x0, y1, x1))
        return x1 <= 85

    counting = helpers.Counting(helpers.conv_net())
    labels = sd.segment(image, counting, num_classes=4, region=left_half, **TILE)
    grid = sd.TileGrid(image.shape[1:], 32, 8)
    assert len(asked) == grid.n_tiles
    taken = shapely.union_all([shapely.box(x0, y0, x1, y1) for y0, x0, y1, x1 in asked if x1 <= 85])
    inside = np.zeros(image.shape[1:], dtype=bool)
    x_end = int(taken.bounds[2])
    inside[:, :x_end] = True
    np.testing.assert_array_equal(labels[inside], whole[inside])
    assert (labels[:, x_end:] == 255).all()
    assert counting.tiles == _touching(taken, image.shape[1:])


def test_otsu_maximises_the_variance_between_the_two_sides():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.6, 0.05, 3000)])
    cut = otsu(values)
    assert (values[5000:] > cut).all() and (values[:5000] <= cut).mean() > 0.99

    def between(t):  # by hand: the weighted squared distance of the two sides' means
        low, high = values[values <= t], values[values > t]
        return len(low) * len(high) * (low.mean() - high.mean()) ** 2 / len(values) ** 2

    candidates = np.linspace(values.min(), values.max(), 256)[1:-1]
    assert between(cut) >= max(between(t) for t in candidates) * 0.999


def test_tissue_on_the_demo_slide_is_its_islands_and_only_their_tiles_run():
    rgb = synthetic_slide(512)
    slide = xr.DataArray(np.moveaxis(rgb, -1, 0), dims=("band", "y", "x"))
    found = tissue_mask(slide, side=128)
    truth = (rgb.max(axis=-1).astype(int) - rgb.min(axis=-1)) > 40  # glass is grey, tissue pink
    thumb = truth[::4, ::4]
    agree = (found == thumb).mean()
    assert agree > 0.95 and 0.05 < found.mean() < 0.95, (agree, found.mean())
    counting = helpers.Counting(helpers.Brightness())
    labels = sd.segment(slide, counting, region="tissue", tile_size=64, overlap=16)
    grid = sd.TileGrid((512, 512), 64, 16)
    assert 0 < counting.tiles < grid.n_tiles
    glass = ~truth
    assert (
        labels.compute().values[glass & (labels.compute().values != 255)].size / glass.sum()
    ) < 0.2


@pytest.mark.parametrize(
    ("region", "words"),
    [
        (np.zeros((150, 170), bool), ["selects no pixel"]),
        (np.ones((40, 170), bool), ["cover the image's extent", "40 x 170"]),
        (np.ones((2, 3, 4, 5), bool), ["2-D raster"]),
        (np.full((150, 170), np.nan), ["NaN", "fillna"]),
        (lambda *box: False, ["accepted none"]),
        (lambda *box: "yes", ["True or False"]),
        ("forest", ["'tissue'", "GeoJSON"]),
    ],
)
def test_a_region_raster_that_selects_nothing_or_does_not_fit_is_refused(image, region, words):
    with pytest.raises(OptionError) as caught:
        sd.segment(image, helpers.conv_net(), num_classes=4, region=region, **TILE)
    for word in words:
        assert word in str(caught.value)


def test_tissue_needs_colour_and_a_mask_takes_no_region_crs(image):
    with pytest.raises(OptionError, match="3 bands"):
        sd.segment(image[:1], helpers.conv_net(), num_classes=4, region="tissue", **TILE)
    with pytest.raises(OptionError, match="leave region_crs out"):
        sd.segment(image, helpers.conv_net(), num_classes=4, region=np.ones((150, 170), bool),
                   region_crs="EPSG:4326", **TILE)  # fmt: skip


def test_the_cli_takes_a_mask_raster_or_tissue_as_its_region(write_scene, tmp_path, capsys):
    from PIL import Image

    from seamless_dask.cli import main

    scene = write_scene(200)
    mask = np.zeros((50, 50), dtype=np.uint8)  # a thumbnail, a quarter of the scene's side
    mask[10:30, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    base = ["--model", "seamless_dask.testing:brightness", "--tile-size", "64", "--overlap", "16",
            "--no-progress", "--scheduler", "threads"]  # fmt: skip
    out = tmp_path / "masked.zarr"
    counted = [a for a in base if a != "--no-progress"]  # the summary counts the tiles
    masked = ["segment", str(scene), str(out), "--region", str(tmp_path / "mask.png"), *counted]
    assert main(masked) == 0
    grid = sd.TileGrid((200, 200), 64, 16).n_tiles
    assert f"of the grid's {grid} tiles planned" in capsys.readouterr().out
    labels = xr.open_zarr(out, mask_and_scale=False)["labels"].compute().values
    assert (labels[:40] == 255).all() and (labels[:, 120:] == 255).all()
    assert (
        labels[50:110, 50:110] != 255
    ).mean() > 0.5  # inside: the scene's own pixels (and its nodata)
    slide = tmp_path / "slide.tif"
    import rasterio

    rgb = synthetic_slide(256)
    with rasterio.open(
        slide, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8"
    ) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    assert main(["segment", str(slide), str(tmp_path / "t.zarr"), "--region", "tissue", *base]) == 0
    tissue = xr.open_zarr(tmp_path / "t.zarr", mask_and_scale=False)["labels"].compute().values
    assert 0 < (tissue != 255).mean() < 1
