"""Geo I/O (I7): real rasters through open_raster, segment, to_zarr and to_cog, geo kept; resume."""

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import support
import xarray as xr
import zarr
from rio_cogeo.cogeo import cog_validate

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers
from seamless_dask.demo.scene import write_scene_geotiff

DATA = Path(
    os.environ.get("SEAMLESS_TEST_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
needs_data = pytest.mark.skipif(
    not (DATA / "RGB.byte.tif").is_file(),
    reason=f"real rasters not found in {DATA} (../shared/data beside the repo, or set SEAMLESS_TEST_DATA)",
)

# name: (bands, height, width, input nodata)
RASTERS = {
    "RGB.byte.tif": (3, 718, 791, 0),
    "shade.tif": (1, 1024, 1024, 255),
    "rgb1_fake_nir_epsg3857.tif": (1, 681, 676, 0),
    "all-nodata.tif": (4, 2475, 71, 0),
    "cogeo.tif": (3, 1024, 1024, None),
}


def _segment(data, model, **options):
    return sd.segment(data, model, tile_size=128, overlap=32, num_classes=2, **options)


def _tiles_with_data(image: xr.DataArray, nodata) -> int:
    pixels = image.compute().values
    valid = np.ones(pixels.shape[1:], bool) if nodata is None else (pixels != nodata).any(axis=0)
    return support.tiles_with_data(valid, 128, 32)


@needs_data
@pytest.mark.parametrize("name", list(RASTERS))
def test_real_raster_round_trips_through_zarr_and_cog(name, tmp_path):
    bands, height, width, nodata = RASTERS[name]
    image = sd.open_raster(DATA / name, chunks=300)
    assert image.dims == ("band", "y", "x") and image.shape == (bands, height, width)
    assert image.rio.nodata == nodata and image.rio.crs is not None
    model = helpers.Counting(helpers.Brightness())
    labels = _segment(image, model)
    assert model.tiles == 0  # lazy: nothing ran yet
    expected = labels.compute().values
    # tiles with no data never reached the model
    assert model.tiles == _tiles_with_data(image, nodata)
    if nodata is None:
        assert labels.rio.nodata is None and expected.max() < 2
    else:
        assert labels.rio.nodata == 255
        np.testing.assert_array_equal(
            expected == 255, (image.compute().values == nodata).all(axis=0)
        )

    assert io.to_zarr(labels, tmp_path / "out.zarr") > 0
    back = xr.open_zarr(tmp_path / "out.zarr", decode_coords="all", mask_and_scale=False)["labels"]
    _assert_same_geo(back, image, labels.rio.nodata)
    np.testing.assert_array_equal(back.compute().values, expected)
    assert io.is_complete(tmp_path / "out.zarr")

    cog = io.to_cog(labels, tmp_path / "out.tif")
    valid, errors, _ = cog_validate(cog)
    assert valid, errors
    with rasterio.open(cog) as src:
        assert (src.count, src.height, src.width) == (1, height, width)
        assert src.crs == image.rio.crs and src.nodata == labels.rio.nodata
        assert src.transform.almost_equals(image.rio.transform())
        assert src.profile["tiled"] and src.compression is not None
        # internal overviews down to one block
        assert bool(src.overviews(1)) == (min(height, width) > 512)
        np.testing.assert_array_equal(src.read(1), expected)
    # no scratch files left
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.tif",
        "out.zarr",
    ]


def _assert_same_geo(back: xr.DataArray, image: xr.DataArray, nodata) -> None:
    assert back.shape == image.shape[1:]
    assert back.rio.crs == image.rio.crs
    assert back.rio.transform().almost_equals(image.rio.transform())
    assert back.rio.nodata == nodata
    np.testing.assert_allclose(back.x, image.x)


@needs_data
def test_probabilities_keep_geo_and_are_nan_on_nodata(tmp_path):
    image = sd.open_raster(DATA / "RGB.byte.tif", chunks=400)
    probs = _segment(image, helpers.Brightness(), output="probabilities")
    assert probs.dims == ("class", "y", "x") and np.isnan(probs.rio.nodata)
    io.to_zarr(probs, tmp_path / "p.zarr")
    back = xr.open_zarr(tmp_path / "p.zarr", decode_coords="all")["probabilities"]
    assert back.rio.crs == image.rio.crs
    nodata = (image.compute().values == 0).all(axis=0)
    np.testing.assert_array_equal(np.isnan(back.compute().values).all(axis=0), nodata)
    cog = io.to_cog(probs, tmp_path / "p.tif")
    with rasterio.open(cog) as src:
        assert src.count == 2 and src.dtypes[0] == "float32" and cog_validate(cog)[0]
        np.testing.assert_allclose(src.read(), probs.compute().values, equal_nan=True)


@needs_data
def test_open_raster_selects_bands_and_reads_zarr(tmp_path):
    rgb = sd.open_raster(DATA / "RGB.byte.tif", bands=[3, 1])
    assert rgb.shape[0] == 2 and list(rgb.band.compute().values) == [3, 1]
    with helpers.raises_mentioning(sd.RasterError, ["between 1 and 3", "[4]"]):
        sd.open_raster(DATA / "RGB.byte.tif", bands=[4])
    rgb.rio.write_nodata(0).to_dataset(name="scene").to_zarr(tmp_path / "in.zarr")
    again = sd.open_raster(tmp_path / "in.zarr")
    assert again.dims == ("band", "y", "x") and again.rio.crs == rgb.rio.crs
    np.testing.assert_array_equal(again.compute().values, rgb.compute().values)


def test_open_raster_errors_name_the_problem(tmp_path):
    with helpers.raises_mentioning(sd.RasterError, ["does not exist", "nope.tif"]):
        sd.open_raster(tmp_path / "nope.tif")
    (tmp_path / "junk.tif").write_text("not a tiff")
    with helpers.raises_mentioning(sd.RasterError, ["cannot read", "junk.tif"]):
        sd.open_raster(tmp_path / "junk.tif")


def _scene(height=520, width=460) -> xr.DataArray:
    image = helpers.structured_image(3, height, width).astype(np.uint8)
    image[:, :40, :60] = 0
    data = xr.DataArray(
        image,
        dims=("band", "y", "x"),
        coords={"y": 5000 - 10 * np.arange(height), "x": 300 + 10 * np.arange(width)},
    )
    return data.rio.write_crs("EPSG:32631").rio.write_nodata(0).chunk({"y": 64, "x": 64})


def test_zarr_refuses_to_clobber_and_checks_the_folder(tmp_path):
    labels = _segment(_scene(), helpers.Brightness(), chunks=64)
    io.to_zarr(labels, tmp_path / "a.zarr")
    with helpers.raises_mentioning(sd.RasterError, ["exists", "resume=True", "overwrite=True"]):
        io.to_zarr(labels, tmp_path / "a.zarr")
    io.to_zarr(labels, tmp_path / "a.zarr", overwrite=True)
    with helpers.raises_mentioning(sd.RasterError, ["does not exist", "create it first"]):
        io.to_zarr(labels, tmp_path / "missing" / "b.zarr")
    other = _segment(_scene(400, 400), helpers.Brightness(), chunks=64)
    with helpers.raises_mentioning(sd.RasterError, ["another layout", "overwrite=True"]):
        io.to_zarr(other, tmp_path / "a.zarr", resume=True)


def test_zarr_fill_value_is_nodata_and_empty_regions_read_as_nodata(tmp_path):
    labels = _segment(_scene(), helpers.Brightness(), chunks=64)
    io.to_zarr(labels, tmp_path / "a.zarr", compute=False)  # template only
    array = zarr.open_array(tmp_path / "a.zarr", path="labels")
    assert array.fill_value == 255  # zarr v2: CF's _FillValue is the array's fill_value
    assert not io.is_complete(tmp_path / "a.zarr")
    back = xr.open_zarr(tmp_path / "a.zarr", mask_and_scale=False)["labels"]
    assert back.attrs["_FillValue"] == 255 and (back.compute().values == 255).all()
    io.to_zarr(labels, tmp_path / "v3.zarr", compute=False, zarr_format=3)  # v3 keeps both
    v3 = zarr.open_array(tmp_path / "v3.zarr", path="labels")
    assert v3.fill_value == 255 and v3.attrs["_FillValue"] == 255


@pytest.mark.parametrize(
    "overlap", [8, 1]
)  # 1: "trim" trusts no pixel of the overlap, done chunks run no tile
def test_resume_writes_only_missing_regions_and_runs_only_the_tiles_they_need(tmp_path, overlap):
    model = helpers.Counting(helpers.Brightness())
    options = {"tile_size": 32, "overlap": overlap, "chunks": 96, "num_classes": 2, "nodata": None}
    labels = sd.segment(_scene(), model, **options)
    expected = labels.compute().values
    full = model.tiles
    store = tmp_path / "r.zarr"
    io.to_zarr(labels, store)
    # An interrupted run: two regions never got their marker (and hold junk, as if half-written).
    missing = [(1, 2), (3, 0)]
    done = zarr.open_array(store, path=io.DONE, mode="r+")
    assert done.shape == labels.data.numblocks == (6, 5)
    array = zarr.open_array(store, path="labels", mode="r+")
    y, x = [np.cumsum((0, *c)) for c in labels.data.chunks]
    for j, k in missing:
        done[j, k] = 0
        array[y[j] : y[j + 1], x[k] : x[k + 1]] = 7
    zarr.open_group(store, mode="r+").attrs["seamless_complete"] = False

    model.reset()
    again = sd.segment(_scene(), model, **options)
    assert io.to_zarr(again, store, resume=True) == 2
    np.testing.assert_array_equal(
        xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values, expected
    )
    assert io.is_complete(store)
    # Exactly the tiles the two regions need: their own, and those of done neighbours that reach into them.
    plan = sd.plan(expected.shape, tile_size=32, overlap=overlap, chunks=96)
    assert model.tiles == support.tiles_needed_on_resume(plan, missing) < full / 4
    owned = sum(len(plan.owned(j, k)) for j, k in missing)
    assert (model.tiles == owned) == (overlap == 1)


@needs_data
def test_a_window_is_read_by_its_model_task_unless_the_model_needs_a_gpu_then_by_a_task_of_its_own():
    """A GPU worker runs one model task at a time: a read of its own lets the next window load meanwhile."""
    image = sd.open_raster(DATA / "RGB.byte.tif")
    for resources, reads in ((None, 0), ({"GPU": 1}, 4)):
        labels = _segment(image, helpers.Brightness(), chunks=384, resources=resources)
        graph = dict(labels.data.__dask_graph__())
        assert (
            sum(str(k[0]).startswith("seamless-window-") for k in graph if isinstance(k, tuple))
            == reads
        )
        assert labels.data.numblocks == (2, 2)


@needs_data
def test_a_lazy_raster_is_read_window_by_window_and_never_sized_whole():
    """distributed measures every graph value with dask.sizeof, which reads all pixels of an xarray variable."""
    from dask.sizeof import sizeof

    image = sd.open_raster(DATA / "RGB.byte.tif")
    assert image.chunks is None  # lazy, not dask: segment reads its own windows
    labels = _segment(image, helpers.Brightness(), chunks=300)
    graph = dict(labels.data.__dask_graph__())
    sources = [
        v for k, v in graph.items() if isinstance(k, str) and k.startswith("seamless-source-")
    ]
    assert len(sources) == 1
    value = sources[0].value if hasattr(sources[0], "value") else sources[0]
    assert sizeof(value) < 10_000
    np.testing.assert_array_equal(
        labels.compute().values,
        _segment(image.load(), helpers.Brightness(), chunks=300).compute().values,
    )


def test_the_zarr_output_opens_in_gdal_with_its_crs_transform_and_nodata_and_in_xarray_as_integers(
    tmp_path,
):
    scene = write_scene_geotiff(tmp_path / "scene.tif", size=300)
    labels = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    store = tmp_path / "labels.zarr"
    sd.to_zarr(labels, store)
    # GDAL (rasterio's, and so QGIS) reads zarr format 2 with the CRS, the geotransform and nodata
    with rasterio.open(f'ZARR:"{store}":/labels') as gdal, rasterio.open(scene) as src:
        assert (gdal.crs, gdal.nodata, gdal.dtypes[0]) == (src.crs, 255, "uint8")
        assert gdal.transform.almost_equals(src.transform)
        np.testing.assert_array_equal(gdal.read(1), labels.compute().values)
    back = sd.open_raster(store)
    assert back.dtype == np.uint8 and back.rio.crs == "EPSG:32631" and back.rio.nodata == 255
    np.testing.assert_array_equal(back.compute().values[0], labels.compute().values)
    # the guide's line
    reopened = xr.open_zarr(store, decode_coords="all", mask_and_scale=False)["labels"]
    assert reopened.dtype == np.uint8 and reopened.rio.crs == "EPSG:32631"
