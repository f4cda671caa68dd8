"""``segment(..., resolution=)``: the model sees the image at its own pixel size; the result equals
resampling the whole image by hand with rasterio, segmenting it, and mapping it back, for every
chunking, with the geo (or physical) metadata right on either grid.
"""

import json

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.warp import Resampling, reproject

import seamless_dask as sd
from seamless_dask import OptionError, RasterError
from seamless_dask.cli import main
from seamless_dask.graph.layers import array_expr
from seamless_dask.testing import Brightness

TILES = {"tile_size": 64, "overlap": 16}


@pytest.fixture(scope="module")
def path(write_scene):
    return write_scene(301)  # odd: the last block of every factor is partial


def _by_hand(path, factor: int, resampling=Resampling.average) -> np.ndarray:
    """The scene resampled with rasterio to ``factor`` x its pixel size, whole."""
    with rasterio.open(path) as src:
        image, transform, crs, nodata = (
            src.read().astype("float32"),
            src.transform,
            src.crs,
            src.nodata,
        )
    h, w = -(-image.shape[1] // factor), -(-image.shape[2] // factor)
    out = np.full((image.shape[0], h, w), np.nan, "float32")
    reproject(image, out, src_transform=transform, src_crs=crs, src_nodata=nodata, dst_nodata=np.nan,
              dst_transform=transform * Affine.scale(factor), dst_crs=crs, resampling=resampling)  # fmt: skip
    return out


@pytest.mark.parametrize("chunks", [None, 96, 128])
def test_a_whole_factor_equals_resampling_by_hand_then_segmenting_then_back(path, chunks):
    scene = sd.open_raster(path, chunks=chunks)
    pixel = abs(scene.rio.transform().a)
    manual = sd.segment(_by_hand(path, 2), Brightness(), **TILES)  # numpy: the whole image
    back = np.repeat(np.repeat(manual, 2, axis=0), 2, axis=1)[:301, :301]
    labels = sd.segment(scene, Brightness(), resolution=2 * pixel, **TILES)
    assert labels.shape == (301, 301) and labels.rio.transform() == scene.rio.transform()
    assert labels.rio.crs == scene.rio.crs and labels.rio.nodata == 255
    np.testing.assert_array_equal(labels.compute().values, back)
    assert (labels.compute().values == 255).any()  # the scene's nodata border, kept
    at_model = sd.segment(
        scene, Brightness(), resolution=2 * pixel, output_resolution="model", **TILES
    )
    assert at_model.shape == (151, 151)
    assert at_model.rio.transform() == scene.rio.transform() * Affine.scale(2)
    np.testing.assert_array_equal(at_model.compute().values, manual)


def test_a_factor_of_one_changes_nothing(path):
    scene = sd.open_raster(path)
    same = sd.segment(scene, Brightness(), resolution=abs(scene.rio.transform().a), **TILES)
    np.testing.assert_array_equal(
        same.compute().values, sd.segment(scene, Brightness(), **TILES).compute().values
    )


def test_a_finer_model_sees_the_image_upsampled(path):
    scene = sd.open_raster(path)
    pixel = abs(scene.rio.transform().a)
    at_model = sd.segment(
        scene, Brightness(), resolution=pixel / 2, output_resolution="model", **TILES
    )
    assert at_model.shape == (602, 602)
    assert at_model.rio.transform() == scene.rio.transform() * Affine.scale(0.5)
    back = sd.segment(scene, Brightness(), resolution=pixel / 2, **TILES)
    np.testing.assert_array_equal(
        back.compute().values, at_model.compute().values[1::2, 1::2]
    )  # the pixel under each centre


@pytest.mark.skipif(array_expr(), reason="xarray's interp and coarsen: not on array-expr (refused)")
def test_another_factor_averages_its_whole_part_and_interpolates_the_rest(path):
    scene = sd.open_raster(path, chunks=128)
    pixel = abs(scene.rio.transform().a)
    at_model = sd.segment(
        scene, Brightness(), resolution=2.5 * pixel, output_resolution="model", **TILES
    )
    assert at_model.shape == (120, 120)
    assert at_model.rio.transform() == scene.rio.transform() * Affine.scale(2.5)
    by_hand = _by_hand(path, 1)  # rasterio's bilinear to the same grid, for comparison
    with rasterio.open(path) as src:
        out = np.full((3, 120, 120), np.nan, "float32")
        reproject(by_hand, out, src_transform=src.transform, src_crs=src.crs, dst_crs=src.crs,
                  dst_transform=src.transform * Affine.scale(2.5), resampling=Resampling.average,
                  src_nodata=np.nan, dst_nodata=np.nan)  # fmt: skip
    manual = sd.segment(out, Brightness(), **TILES)
    assert (at_model.compute().values == manual).mean() > 0.95
    back = sd.segment(scene, Brightness(), resolution=2.5 * pixel, **TILES)
    assert back.shape == (301, 301) and back.rio.transform() == scene.rio.transform()


def test_a_slide_in_micrometres_keeps_its_pixel_size(path):
    pixels = sd.open_raster(path).values
    slide = xr.DataArray(pixels, dims=("band", "y", "x"),
                         attrs={"pixel_size": [0.25, 0.25], "pixel_unit": "micrometer"})  # fmt: skip
    at_model = sd.segment(
        slide, Brightness(), resolution=0.5, output_resolution="model", nodata=0, **TILES
    )
    assert at_model.attrs["pixel_size"] == [0.5, 0.5]
    np.testing.assert_allclose(at_model.x.values[:3], [0, 0.5, 1.0])
    back = sd.segment(slide, Brightness(), resolution=0.5, nodata=0, **TILES)
    assert back.attrs["pixel_size"] == [0.25, 0.25] and back.shape == (301, 301)
    manual = sd.segment(_by_hand(path, 2), Brightness(), **TILES)
    np.testing.assert_array_equal(at_model.compute().values, manual)


def test_the_job_record_names_the_file_and_the_resolution_and_resume_holds_it(path, tmp_path):
    scene = sd.open_raster(path, chunks=128)
    pixel = abs(scene.rio.transform().a)
    labels = sd.segment(scene, Brightness(), resolution=2 * pixel, **TILES)
    job = json.loads(labels.attrs["seamless_job"])
    assert job["input"]["path"] == str(path) and job["options"]["resolution"] == [2 * pixel] * 2
    sd.to_zarr(labels, tmp_path / "l.zarr")
    other = sd.segment(scene, Brightness(), resolution=3 * pixel, **TILES)
    with pytest.raises(RasterError, match=r"another layout|started by another job"):
        sd.to_zarr(other, tmp_path / "l.zarr", resume=True)
    assert sd.to_zarr(labels, tmp_path / "l.zarr", resume=True) == 0


@pytest.mark.parametrize(
    ("data", "options", "words"),
    [
        ("numpy", {"resolution": 20.0}, ["ndarray", "pixel size"]),
        ("scene", {"resolution": 0}, ["positive number"]),
        ("scene", {"resolution": "ten"}, ["positive number"]),
        ("scene", {"resolution": 20.0, "output_resolution": "native"}, ["'input'", "'model'"]),
        ("bare", {"resolution": 20.0}, ["no CRS", "pixel_size"]),
    ],
)
def test_a_resolution_that_cannot_apply_is_refused_with_the_fix(path, data, options, words):
    scene = sd.open_raster(path)
    given = {"numpy": scene.compute().values, "scene": scene,
             "bare": xr.DataArray(scene.compute().values, dims=("band", "y", "x"))}[data]  # fmt: skip
    with pytest.raises(OptionError) as caught:
        sd.segment(given, Brightness(), **options, **TILES)
    for word in words:
        assert word in str(caught.value)


def test_the_cli_segments_at_the_models_resolution(path, tmp_path):
    store = tmp_path / "r.zarr"
    args = ["segment", str(path), str(store), "--model", "seamless_dask.testing:brightness", "--tile-size",
            "64", "--overlap", "16", "--resolution", "20", "--no-progress", "--scheduler", "threads"]  # fmt: skip
    assert main(args) == 0
    back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
    manual = sd.segment(_by_hand(path, 2), Brightness(), **TILES)
    np.testing.assert_array_equal(
        back, np.repeat(np.repeat(manual, 2, axis=0), 2, axis=1)[:301, :301]
    )


@pytest.mark.skipif(not array_expr(), reason="the refusal of dask's array-expr engine")
def test_array_expr_refuses_a_factor_that_is_not_whole_with_the_fix(path):
    scene = sd.open_raster(path)
    with pytest.raises(OptionError, match="whole factor"):
        sd.segment(scene, Brightness(), resolution=25.0, **TILES)
