"""Batches, extra dims and channels anywhere: ``(N, bands, H, W)`` numpy, dask and tensor batches
and DataArrays with leading dims (``sample``, ``time``, both) segmented as independent images in one
graph, each equal to its image alone, the extra dims kept on the result; a channel axis given by index
(HWC numpy, NHWC tensors, as pytorch-toolbelt's and tiler's users hold them) or by dim name.
"""

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers

TILES = {"tile_size": 32, "overlap": 8}


@pytest.fixture(scope="module")
def model():
    return helpers.conv_net(bands=2, classes=3)


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).random((3, 2, 50, 40)).astype(np.float32)


def test_a_numpy_batch_is_each_image_alone_in_one_graph(model, batch):
    out = sd.segment(batch, model, **TILES)
    assert out.shape == (3, 50, 40) and isinstance(out, np.ndarray)
    for i, image in enumerate(batch):
        np.testing.assert_array_equal(out[i], sd.segment(image, model, **TILES))
    probabilities = sd.segment(batch, model, output="probabilities", **TILES)
    assert probabilities.shape == (3, 3, 50, 40)


def test_tensor_and_dask_batches_come_back_as_their_kind(model, batch):
    tensor = sd.segment(torch.from_numpy(batch), model, output="logits", **TILES)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (3, 3, 50, 40)
    lazy = sd.segment(da.from_array(batch, chunks=(1, 2, 25, 40)), model, **TILES)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), sd.segment(batch, model, **TILES))
    np.testing.assert_allclose(tensor[1].numpy(), sd.segment(batch[1], model, output="logits",
                                                             **TILES), rtol=1e-6)  # fmt: skip


def test_leading_dims_of_a_dataarray_are_kept_with_their_coords(model):
    pixels = np.random.default_rng(1).random((2, 3, 2, 40, 36))
    data = xr.DataArray(
        pixels, dims=("sample", "time", "band", "y", "x"),
        coords={"sample": ["a", "b"], "time": [10, 20, 30], "y": np.arange(40.0), "x": np.arange(36.0)},
    )  # fmt: skip
    result = sd.segment(data, model, **TILES)
    assert result.dims == ("sample", "time", "y", "x")
    assert list(result["sample"].values) == ["a", "b"] and list(result["time"].values) == [
        10,
        20,
        30,
    ]
    alone = sd.segment(data.sel(sample="b", time=20), model, **TILES)
    np.testing.assert_array_equal(result.sel(sample="b", time=20).to_numpy(), alone.to_numpy())
    stack = sd.segment(data.isel(sample=0).rename(time="slide"), model, **TILES)
    assert stack.dims == ("slide", "y", "x")


def test_a_volume_is_not_segmented_slice_by_slice_without_being_asked(model):
    volume = xr.DataArray(np.zeros((4, 2, 20, 20)), dims=("z", "band", "y", "x"))
    with helpers.raises_mentioning(sd.DimensionError, ["'z' is spatial", "rename(z='slice')"]):
        sd.segment(volume, model, tile_size=16, overlap=4)
    slices = sd.segment(volume.rename(z="slice"), model, tile_size=16, overlap=4)
    assert slices.dims == ("slice", "y", "x")


def test_channels_last_arrays_and_named_channel_dims(model, batch):
    first = sd.segment(batch[0], model, **TILES)
    hwc = np.moveaxis(batch[0], 0, -1)
    np.testing.assert_array_equal(sd.segment(hwc, model, channel_axis=-1, **TILES), first)
    nhwc = torch.from_numpy(np.moveaxis(batch, 1, -1).copy())
    out = sd.segment(nhwc, model, channel_axis=3, **TILES)
    np.testing.assert_array_equal(out.numpy(), sd.segment(batch, model, **TILES))
    lazy = da.from_array(hwc, chunks=(25, 40, 2))
    np.testing.assert_array_equal(
        sd.segment(lazy, model, channel_axis=-1, **TILES).compute(), first
    )
    named = xr.DataArray(hwc, dims=("y", "x", "wavelength"))
    np.testing.assert_array_equal(sd.segment(named, model, channel_axis="wavelength",
                                             **TILES).to_numpy(), first)  # fmt: skip
    by_name = xr.DataArray(hwc, dims=("y", "x", "band"))  # dims are found by name
    np.testing.assert_array_equal(sd.segment(by_name, model, **TILES).to_numpy(), first)


@pytest.mark.parametrize(
    ("data", "axis", "words"),
    [
        (np.zeros((8, 8, 2)), 3, ["channel_axis=3 is not an axis", "[-3, 2]"]),
        (np.zeros((8, 8, 2)), "band", ["must be an axis index", "channel_axis=-1"]),
        (xr.DataArray(np.zeros((8, 8, 2)), dims=("y", "x", "c")), "w", ["names no dim", "'c'"]),
        (
            xr.DataArray(np.zeros((2, 8, 8, 2)), dims=("band", "y", "x", "c")),
            "c",
            ["already has a 'band' dim"],
        ),
    ],
)
def test_a_bad_channel_axis_names_the_rule_and_the_fix(data, axis, words):
    with helpers.raises_mentioning(sd.DimensionError, words):
        sd.segment(data, helpers.conv_net(bands=2, classes=3), channel_axis=axis, tile_size=4,
                   overlap=1)  # fmt: skip
