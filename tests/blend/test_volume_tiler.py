"""VolumeTiler: sliding-window inference in memory over any number of spatial axes (3-D first).

MONAI's ``test_sliding_window_default`` (tests/inferers/test_sliding_window_inference.py in MONAI:
1-D, 3-D and 4-D images, rois smaller and larger than the image, a roi of ``-1`` for a whole axis,
overlap 0.25 and 0.5, constant and gaussian modes, a predictor ``x + 1`` that the blend must give
back exactly) is ported in our words; then ours beside MONAI's ``sliding_window_inference`` itself
on a real MONAI 3-D network, and beside whole-volume inference where "trim"'s margins cover the
field.
"""

import numpy as np
import pytest
import torch

import seamless_dask as sd
from seamless_dask import TileWeights
from seamless_dask.tiling.weights import MONAI_FLOOR

monai_inferers = pytest.importorskip("monai.inferers")

MONAI_GAUSSIAN = TileWeights("gaussian", sigma=0.125, border_aware=False, floor=MONAI_FLOOR)
MONAI_CONSTANT = TileWeights("constant", border_aware=False)

# MONAI's cases: (image shape with batch and channels, roi, sw_batch_size, overlap, mode)
MONAI_DEFAULT_CASES = [
    ((2, 3, 16), (4,), 3, 0.25, "constant"),  # 1-D small roi
    ((2, 3, 16, 15, 7, 9), 4, 3, 0.25, "constant"),  # 4-D small roi
    ((1, 3, 16, 15, 7), (4, -1, 7), 3, 0.25, "constant"),  # 3-D, a whole axis
    ((3, 3, 16, 15, 7), (4, -1, 7), 3, 0.25, "constant"),
    ((1, 3, 16, 15, 7), (4, 10, 7), 3, 0.25, "constant"),
    ((1, 3, 16, 15, 7), (20, 22, 23), 10, 0.25, "constant"),  # 3-D roi larger than the image
    ((1, 3, 16, 15, 7), (20, 22, 23), 10, 0.5, "constant"),  # 3-D large overlap
    ((1, 3, 16, 15, 7), (4, 10, 7), 3, 0.25, "gaussian"),
    ((3, 3, 16, 15, 7), (4, 10, 7), 3, 0.25, "gaussian"),
    ((5, 3, 16, 15, 7), (4, 1, 7), 3, 0.25, "constant"),  # a roi of one voxel along an axis
]


def _roi(roi, spatial):
    """MONAI's roi: an int for every axis, -1 for a whole axis."""
    roi = (roi,) * len(spatial) if isinstance(roi, int) else roi
    return tuple(s if r == -1 else r for r, s in zip(roi, spatial, strict=True))


@pytest.mark.parametrize(("shape", "roi", "batch", "overlap", "mode"), MONAI_DEFAULT_CASES)
def test_monai_s_default_cases_give_the_predictor_back(shape, roi, batch, overlap, mode):
    n = int(np.prod(shape))
    x = (
        torch.arange(n, dtype=torch.float64).reshape(shape)
        if mode == "constant"
        else torch.ones(shape)
    )
    weights = MONAI_CONSTANT if mode == "constant" else MONAI_GAUSSIAN
    tiler = sd.VolumeTiler(shape[2:], _roi(roi, shape[2:]), overlap, weights=weights)
    out = tiler.run(x, lambda tiles: tiles + 1, batch_size=batch)
    np.testing.assert_allclose(out.numpy(), x.double().numpy() + 1, rtol=1e-12)
    np.testing.assert_allclose(tiler.merge(tiler.split(x) + 1).numpy(), out.numpy(), rtol=1e-12)


@pytest.fixture(scope="module")
def unet3d():
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    return net.eval()


@pytest.mark.parametrize(
    ("mode", "weights"), [("constant", MONAI_CONSTANT), ("gaussian", MONAI_GAUSSIAN)]
)
def test_a_monai_3d_unet_equals_monai_s_sliding_window_inference(unet3d, mode, weights):
    volume = torch.from_numpy(np.random.default_rng(2).random((1, 2, 40, 56, 48), np.float32))
    roi, overlap = (16, 32, 32), 0.25
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(
            volume, roi, 4, unet3d, overlap, mode=mode, sigma_scale=0.125
        )
        ours = sd.VolumeTiler(volume.shape[2:], roi, overlap, weights=weights).run(
            volume, unet3d, batch_size=4
        )
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=2e-6)


def test_trim_with_margins_over_the_field_is_whole_volume_inference_and_each_tile_runs_once():
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 2, 3, padding=1)
    ).double()
    volume = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 1, 30, 41, 37)))
    calls = []

    def counted(tiles):
        calls.append(tiles.shape[0])
        return net(tiles)

    tiler = sd.VolumeTiler(
        volume.shape[2:], (12, 16, 16), 4, weights="trim"
    )  # margins 2 >= field 2
    with torch.no_grad():
        ours = tiler.run(volume, counted, batch_size=5)
        whole = net(volume)
    assert sum(calls) == 2 * tiler.n_tiles and max(calls) <= 5
    np.testing.assert_allclose(ours.numpy(), whole.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["trust", "gaussian", "spline", "constant", "trim"])
def test_every_kind_gives_an_identity_model_the_volume_back(kind):
    volume = torch.rand(1, 2, 21, 33, 26, dtype=torch.float64)
    tiler = sd.VolumeTiler(volume.shape[2:], (8, 16, 12), (2, 6, 4), weights=kind)
    np.testing.assert_allclose(tiler.run(volume, lambda t: t).numpy(), volume.numpy(), rtol=1e-12)


def test_wrong_shapes_are_clear_errors():
    tiler = sd.VolumeTiler((20, 30, 30), 16, 4)
    with pytest.raises(sd.DimensionError, match=r"expected an \(N, C, 20, 30, 30\) tensor"):
        tiler.split(torch.zeros(1, 1, 20, 30))
    with pytest.raises(sd.DimensionError, match="it must return"):
        tiler.run(torch.zeros(1, 1, 20, 30, 30), lambda t: t[..., 1:])
    with pytest.raises(sd.DimensionError, match="merge expects"):
        tiler.merge(torch.zeros(3, 1, 16, 16, 16))
    with pytest.raises(sd.WeightsError, match="no tile gives weight"):
        sd.VolumeTiler((64, 64, 64), 16, 0, weights="hann")
