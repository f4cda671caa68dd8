"""``segment(..., dtype=)``: soft outputs stored as float16, or probabilities quantised to uint8/uint16
with CF and GDAL scale metadata, decoded by xarray and GDAL to within half a step of the float32
result; nodata, the region and resuming keep working.
"""

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr
from PIL import Image
from shapely.geometry import box

import seamless_dask as sd
from seamless_dask import OptionError, RasterError
from seamless_dask.cli import main
from seamless_dask.testing import Brightness

TILES = {"tile_size": 64, "overlap": 16}


@pytest.fixture(scope="module")
def scene(write_scene):
    return sd.open_raster(write_scene(200), chunks=96)


@pytest.fixture(scope="module")
def floats(scene):
    return sd.segment(scene, Brightness(), output="probabilities", **TILES).compute()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_quantised_probabilities_are_within_half_a_step_with_nodata_kept(scene, floats, dtype):
    codes = sd.segment(scene, Brightness(), output="probabilities", dtype=dtype, **TILES)
    top = np.iinfo(dtype).max
    assert codes.dtype == dtype and codes.rio.nodata == top
    assert (
        codes.attrs["scale_factor"] == pytest.approx(1 / (top - 1))
        and codes.attrs["add_offset"] == 0
    )
    values = codes.compute().values
    missing = np.isnan(floats.values)
    assert missing.any()  # the scene's nodata border
    np.testing.assert_array_equal(values == top, missing)
    decoded = values * codes.attrs["scale_factor"]
    error = np.abs(decoded - floats.values)[~missing]
    assert error.max() <= 0.5 / (top - 1) + 1e-7
    assert values[~missing].max() == top - 1  # 1.0 is a code, never nodata


def test_a_quantised_zarr_decodes_to_probabilities_with_xarray(scene, floats, tmp_path):
    codes = sd.segment(scene, Brightness(), output="probabilities", dtype="uint8", **TILES)
    sd.to_zarr(codes, tmp_path / "p.zarr")
    raw = xr.open_zarr(tmp_path / "p.zarr", mask_and_scale=False)["probabilities"]
    assert raw.dtype == np.uint8
    back = xr.open_zarr(tmp_path / "p.zarr")["probabilities"].compute().values
    np.testing.assert_array_equal(np.isnan(back), np.isnan(floats.values))
    np.testing.assert_allclose(back, floats.values, atol=0.5 / 254 + 1e-7)


def test_a_quantised_cog_carries_gdal_band_scales(scene, floats, tmp_path):
    codes = sd.segment(scene, Brightness(), output="probabilities", dtype="uint8", **TILES)
    path = sd.to_cog(codes, tmp_path / "p.tif")
    with rasterio.open(path) as cog:
        assert cog.dtypes == ("uint8", "uint8") and cog.nodata == 255
        assert cog.scales == pytest.approx((1 / 254,) * 2) and cog.offsets == (0.0, 0.0)
    back = rioxarray.open_rasterio(path, mask_and_scale=True).values
    np.testing.assert_allclose(back, floats.values, atol=0.5 / 254 + 1e-6)


def test_float16_halves_every_soft_output(scene, floats):
    for output in ("probabilities", "logits", "uncertainty"):
        half = sd.segment(scene, Brightness(), output=output, dtype="float16", **TILES)
        assert half.dtype == np.float16 and half.compute().dtype == np.float16, output
    half = sd.segment(scene, Brightness(), output="probabilities", dtype="float16", **TILES)
    np.testing.assert_allclose(half.compute().values, floats.values, atol=5e-4)
    same = sd.segment(scene, Brightness(), output="probabilities", dtype="float32", **TILES)
    assert same.dtype == np.float32


def test_the_region_outside_is_the_quantised_nodata(scene):
    x0, y1 = float(scene.x[40]), float(scene.y[40])
    region = box(x0, float(scene.y[150]), float(scene.x[150]), y1)
    codes = sd.segment(
        scene, Brightness(), output="probabilities", dtype="uint8", region=region, **TILES
    )
    values = codes.compute().values
    assert (values[:, :30, :] == 255).all() and (values[:, 60:120, 60:120] < 255).all()


@pytest.mark.parametrize(
    ("output", "dtype", "words"),
    [
        ("labels", "uint8", ["class indices", "leave dtype unset"]),
        ("logits", "uint8", ["[0, 1]", "float16"]),
        ("uncertainty", "uint16", ["[0, 1]", "float16"]),
        ("probabilities", "int8", ["dtype must be one of", "float16"]),
        ("probabilities", "complex128", ["dtype must be one of"]),
        ("labels", "float64", ["class indices", "leave dtype unset"]),
    ],
)
def test_a_dtype_the_output_cannot_hold_is_refused_with_the_fix(scene, output, dtype, words):
    with pytest.raises(OptionError) as caught:
        sd.segment(scene, Brightness(), output=output, dtype=dtype, **TILES)
    for word in words:
        assert word in str(caught.value)


def test_resuming_with_another_dtype_is_refused(scene, tmp_path):
    codes = sd.segment(scene, Brightness(), output="probabilities", dtype="uint8", **TILES)
    sd.to_zarr(codes, tmp_path / "p.zarr")
    other = sd.segment(scene, Brightness(), output="probabilities", dtype="uint16", **TILES)
    with pytest.raises(RasterError, match="dtype"):
        sd.to_zarr(other, tmp_path / "p.zarr", resume=True)


def test_the_cli_writes_quantised_probabilities_and_their_quicklook(write_scene, tmp_path):
    store, quick = tmp_path / "p.zarr", tmp_path / "q.png"
    args = ["segment", str(write_scene(200)), str(store), "--model", "seamless_dask.testing:brightness",
            "--tile-size", "64", "--overlap", "16", "--output", "probabilities", "--dtype", "uint8",
            "--quicklook", str(quick), "--no-progress", "--scheduler", "threads"]  # fmt: skip
    assert main(args) == 0
    raw = xr.open_zarr(store, mask_and_scale=False)["probabilities"]
    assert raw.dtype == np.uint8 and raw.attrs["scale_factor"] == pytest.approx(1 / 254)
    with Image.open(quick) as png:
        assert png.mode == "RGBA" and png.getpixel((1, 30))[3] == 0  # nodata stays transparent


def _double_net():
    import torch

    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(6, 3, 3, padding=1)
    )
    return net.double().eval()


@pytest.mark.parametrize("weights", ["trim", "gaussian"])
def test_float64_keeps_a_float64_models_precision_for_every_chunking(weights):
    import torch

    net = _double_net()
    rng = np.random.default_rng(5)
    image = rng.normal(size=(2, 200, 170))  # float64 pixels
    image[:, 10:14, 20:30] = np.nan  # nodata filled in float64 too
    runs = [
        sd.segment(
            da.from_array(image, chunks=(2, c, c)), net,
            output="logits", dtype="float64", weights=weights, num_classes=3, **TILES,
        ).compute()
        for c in (200, 96, 48)
    ]  # fmt: skip
    assert all(r.dtype == np.float64 for r in runs)
    for other in runs[1:]:  # the same for every chunking, at float64's noise (float32 halos: 7e-8)
        np.testing.assert_allclose(other, runs[0], rtol=0, atol=1e-13, equal_nan=True)
    if weights == "trim":  # margins (overlap 16 // 2) cover the field (2 px): whole-image inference
        filled = np.nan_to_num(image, nan=0.0)
        with torch.no_grad():
            whole = net(torch.from_numpy(filled)[None])[0].numpy()
        valid = np.ones(image.shape[1:], bool)
        valid[8:16, 18:32] = False  # nodata is filled per tile from its nearest data, not with 0
        np.testing.assert_allclose(runs[0][:, valid], whole[:, valid], rtol=0, atol=1e-12)
    single = sd.segment(
        image, net.float(), output="logits", num_classes=3, weights=weights, **TILES
    )
    assert single.dtype == np.float32  # the default stays float32
    np.testing.assert_allclose(single, runs[0], atol=1e-5, equal_nan=True)
