"""Nodata (I7): nodata in gives nodata out, empty tiles never reach the model, valid pixels stay valid."""

import numpy as np
import pytest
import support
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.tiling.grid import TileGrid


def _bordered(height: int = 90, width: int = 110, nodata: float = 0) -> np.ndarray:
    """A 2-band uint8-valued image whose left third and a top band are nodata in every band."""
    image = helpers.structured_image(2, height, width).astype(np.float32) + 1  # data never equals 0
    image[:, :, : width // 3] = nodata
    image[:, :12, :] = nodata
    return image


@pytest.mark.parametrize("chunks", [None, 23, 50])
def test_empty_tiles_never_reach_the_model_and_nodata_comes_out(chunks):
    image = _bordered().astype(np.uint8)
    valid = (image != 0).any(axis=0)
    model = helpers.Counting(helpers.conv_net(bands=2, classes=3))
    labels = sd.segment(
        image, model, tile_size=16, overlap=4, nodata=0, num_classes=3, chunks=chunks
    )
    expected = support.tiles_with_data(valid, 16, 4)
    assert model.tiles == expected < TileGrid(valid.shape, 16, 4).n_tiles
    assert labels.dtype == np.uint8
    # nodata exactly where every band is nodata
    np.testing.assert_array_equal(labels == 255, ~valid)
    assert labels[valid].max() < 3

    probs = sd.segment(
        image, model, tile_size=16, overlap=4, nodata=0, output="probabilities", chunks=chunks
    )
    np.testing.assert_array_equal(np.isnan(probs).all(axis=0), ~valid)
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1, atol=1e-5)


def test_nodata_results_do_not_depend_on_chunks():
    image = _bordered(nodata=-9999) / 255  # values in a model's usual range
    image[image < 0] = -9999
    net = helpers.conv_net(bands=2, classes=3)
    one = sd.segment(
        image, net, tile_size=16, overlap=6, output="probabilities", nodata=-9999, chunks=1000
    )
    for chunks in (10, 31, (17, 44)):
        out = sd.segment(
            image, net, tile_size=16, overlap=6, output="probabilities", nodata=-9999, chunks=chunks
        )
        np.testing.assert_allclose(out, one, atol=1e-6, equal_nan=True)


def test_valid_pixels_beside_nodata_are_not_pulled_toward_it():
    """Neither a raw nodata value (-9999), nor NaN, nor a constant fill may leak into valid pixels through the
    model's receptive field: the model sees the nearest valid pixels continued into the nodata border."""
    image = np.full((1, 40, 40), 100.0, dtype=np.float32)
    image[:, 5:35, 5:35] = helpers.structured_image(1, 30, 30)[0] / 255 + 100
    continued = image.copy()
    image[:, :, :10] = -9999
    continued[:, :, :10] = continued[:, :, 10:11]  # the nearest valid pixel of each row
    options = {"tile_size": 16, "overlap": 4, "output": "logits"}
    out = sd.segment(image, helpers.Mean3(), nodata=-9999, **options)
    expected = sd.segment(continued, helpers.Mean3(), nodata=None, **options)
    assert np.isnan(out[:, :, :10]).all()
    np.testing.assert_allclose(out[:, :, 10:], expected[:, :, 10:], atol=1e-4)

    with_nan = image.copy()
    with_nan[:, :, :10] = np.nan
    out_nan = sd.segment(with_nan, helpers.Mean3(), **options)
    np.testing.assert_allclose(out_nan, out, atol=1e-4, equal_nan=True)


def test_normalised_models_see_the_mean_where_a_band_has_no_data():
    image = np.full((2, 24, 24), 50.0, dtype=np.float32)
    image[1, :, :8] = -1  # nodata in one band only: the pixel stays valid
    out = sd.segment(
        image,
        helpers.Identity(),
        tile_size=8,
        overlap=2,
        nodata=-1,
        normalize=((50, 10), (5, 5)),
        output="logits",
    )
    assert not np.isnan(out).any()
    # filled with the mean: 0 after normalisation
    np.testing.assert_allclose(out[1, :, :8], 0, atol=1e-6)


def test_nodata_none_treats_every_value_as_data():
    image = _bordered().astype(np.uint8)
    model = helpers.Counting(helpers.conv_net(bands=2, classes=3))
    labels = sd.segment(image, model, tile_size=16, overlap=4, nodata=None, num_classes=3)
    assert model.tiles == TileGrid(image.shape[1:], 16, 4).n_tiles and labels.max() < 3


def test_nodata_is_read_from_the_dataarray():
    image = _bordered().astype(np.uint8)
    data = xr.DataArray(image, dims=("band", "y", "x")).rio.write_nodata(0)
    labels = sd.segment(data, helpers.conv_net(bands=2, classes=3), tile_size=16, overlap=4)
    assert labels.rio.nodata == 255
    np.testing.assert_array_equal(labels.compute().values == 255, (image == 0).all(axis=0))


def test_labels_move_to_a_wider_dtype_when_the_classes_need_the_nodata_value():
    image = _bordered(30, 30).astype(np.uint8)
    wide = helpers.conv_net(bands=2, classes=256)
    labels = sd.segment(
        xr.DataArray(image, dims=("band", "y", "x")).rio.write_nodata(0),
        wide,
        tile_size=16,
        overlap=4,
    )
    assert labels.dtype == np.uint16 and labels.rio.nodata == 65535
    assert (labels.compute().values == 65535).sum() == (image == 0).all(axis=0).sum()


def test_all_nodata_image_runs_no_tile():
    image = np.zeros((4, 300, 20), dtype=np.uint16)
    model = helpers.Counting(helpers.conv_net(bands=4, classes=2))
    labels = sd.segment(image, model, tile_size=64, overlap=16, nodata=0, num_classes=2)
    assert model.tiles == 0 and (labels == 255).all()


def test_bad_nodata_is_refused():
    with helpers.raises_mentioning(sd.OptionError, ["nodata", "'zero'"]):
        sd.segment(np.zeros((1, 8, 8)), helpers.Identity(), tile_size=4, overlap=0, nodata="zero")
