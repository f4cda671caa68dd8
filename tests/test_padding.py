"""``padding=``: what an image smaller than the tile is padded with up to the tile the model takes
(centred, as MONAI's ``sliding_window_inference`` pads), each mode equal to padding the image by
hand and cropping the model's answer; MONAI's ``test_cval`` ported (tests/inferers/
test_sliding_window_inference.py in MONAI: a 3 x 3 image of ones, roi 5, ``cval=-1``).
"""

import json

import numpy as np
import pytest
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers


def _sum_model(batch: torch.Tensor) -> torch.Tensor:
    """MONAI's test_cval predictor: each pixel plus the sum of its whole (padded) tile."""
    return batch + batch.sum(dim=(1, 2, 3), keepdim=True)


def test_monai_s_test_cval_pads_with_the_constant():
    image = np.ones((1, 3, 3), np.float32)
    out = sd.segment(image, _sum_model, tile_size=5, overlap=0.5, padding="constant", cval=-1.0,
                     weights="constant", output="logits", num_classes=1)  # fmt: skip
    np.testing.assert_allclose(out, np.full((1, 3, 3), -6.0))  # 9 - 16 = -7, plus the pixel's 1
    flush = sd.segment(image, _sum_model, tile_size=5, overlap=0.5, weights="constant",
                       output="logits", num_classes=1)  # fmt: skip
    np.testing.assert_allclose(flush, np.full((1, 3, 3), 10.0))  # padded with 0: 9, plus 1


@pytest.mark.parametrize(
    ("padding", "numpy_mode"), [("reflect", "reflect"), ("replicate", "edge"), ("wrap", "wrap")]
)
def test_each_mode_is_the_image_padded_by_hand_then_cropped(padding, numpy_mode):
    image = np.random.default_rng(0).random((2, 20, 13)).astype(np.float32)
    model = helpers.conv_net(bands=2, classes=3)
    out = sd.segment(image, model, tile_size=32, overlap=8, padding=padding, output="logits")
    (by, ay), (bx, ax) = (6, 6), (9, 10)  # 20 -> 32 and 13 -> 32, centred
    padded = np.pad(image, ((0, 0), (by, ay), (bx, ax)), mode=numpy_mode)
    with torch.no_grad():
        whole = model(torch.from_numpy(padded)[None])[0].numpy()
    np.testing.assert_allclose(out, whole[:, by : by + 20, bx : bx + 13], rtol=1e-5, atol=1e-5)


def test_only_an_axis_shorter_than_the_tile_is_padded_and_larger_images_are_unchanged():
    image = np.random.default_rng(1).random((2, 100, 20)).astype(np.float32)
    model = helpers.conv_net(bands=2, classes=3)
    modes = {m: sd.segment(image, model, tile_size=32, overlap=8, padding=m, output="logits")
             for m in ("flush", "reflect", "constant")}  # fmt: skip
    assert not np.allclose(modes["flush"], modes["reflect"])  # x (20 px) is padded
    big = np.random.default_rng(2).random((2, 70, 90)).astype(np.float32)
    a, b = (sd.segment(big, model, tile_size=32, overlap=8, padding=m) for m in ("flush", "wrap"))
    np.testing.assert_array_equal(a, b)  # every tile lies inside the image: nothing to pad


def test_a_padding_is_in_the_job_record_and_a_bad_one_names_the_choices():
    data = xr.DataArray(np.random.default_rng(3).random((2, 20, 20)), dims=("band", "y", "x"))
    model = helpers.conv_net(bands=2, classes=3)
    result = sd.segment(data, model, tile_size=32, overlap=8, padding="reflect")
    options = json.loads(result.attrs["seamless_job"])["options"]
    assert (options["padding"], options["cval"]) == ("reflect", 0.0)
    plain = json.loads(sd.segment(data, model, tile_size=32, overlap=8).attrs["seamless_job"])
    assert "padding" not in plain["options"]  # records written before padding= stay equal
    with helpers.raises_mentioning(sd.OptionError, ["padding must be one of", "'reflect'"]):
        sd.segment(data, model, tile_size=32, overlap=8, padding="mirror")
    with helpers.raises_mentioning(sd.OptionError, ["cval must be a finite number"]):
        sd.segment(data, model, tile_size=32, overlap=8, padding="constant", cval=float("nan"))
