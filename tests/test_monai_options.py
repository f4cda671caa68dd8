"""MONAI's sliding-window options, taken as MONAI users write them: a fractional overlap, a sigma per
axis, MONAI's floored gaussian, and its own test cases (tests/inferers/test_sliding_window_inference.py
in MONAI: ``test_sigma``, ``test_sliding_window_default``, ``test_buffers``), ported in our words.
Each compares with MONAI itself where MONAI is installed, and with MONAI's expected numbers always.
"""

import numpy as np
import pytest
import torch

import seamless_dask as sd
from seamless_dask import TileGrid, TileWeights, WeightsError
from seamless_dask import testing as helpers
from seamless_dask.tiling.grid import as_overlap
from seamless_dask.tiling.weights import MONAI_FLOOR

monai_inferers = pytest.importorskip("monai.inferers")


class Staircase:
    """MONAI's ``test_sigma`` predictor: every call adds one more than the last (2, 3, 4, ...), so
    the blend shows which tiles went into which batch and how much each is trusted.
    """

    def __init__(self) -> None:
        self.add = 1

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.add += 1
        return batch + self.add


def _monai(image, roi, batch, predictor, overlap, **options):
    out = monai_inferers.sliding_window_inference(
        torch.from_numpy(image)[None], roi, batch, predictor, overlap, **options
    )
    return out[0].numpy()


def _ours(image, roi, batch, predictor, overlap, weights):
    return sd.segment(
        image, predictor, tile_size=roi, overlap=overlap, batch_size=batch, weights=weights,
        output="logits", num_classes=image.shape[0], chunks=max(image.shape[1:]),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fraction", "tile", "pixels"),
    [(0.25, 256, 64), (0.5, 3, 2), (0.8, 7, 6), (0.4, 96, 39), (0.125, 80, 10), (0.0, 64, 0)],
)
def test_a_float_overlap_is_a_fraction_of_the_tile_with_monai_s_stride(fraction, tile, pixels):
    # MONAI's _get_scan_interval: the stride is int(roi * (1 - overlap)), at least 1
    assert as_overlap(fraction, (tile, tile)) == (pixels, pixels)
    assert as_overlap((fraction, 64), (tile, tile)) == (pixels, 64)
    assert TileGrid((1000, 1000), tile, fraction).overlap == (pixels, pixels)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (1.0, ["fraction of the tile in [0, 1)", "overlap=1"]),
        (-0.25, ["[0, 1)"]),
        ("0.2", ["ints"]),
    ],
)
def test_a_bad_float_overlap_names_the_rule_and_the_fix(bad, words):
    with helpers.raises_mentioning(sd.TilingError, words):
        as_overlap(bad, (64, 64))


def test_the_tile_positions_are_monai_s_for_every_fractional_overlap():
    from monai.data.utils import dense_patch_slices

    for size, roi, fraction in [(511, 96, 0.4), (237, 80, 0.4), (10, 7, 0.8), (512, 80, 0.125)]:
        grid = TileGrid((size, 1), (roi, 1), (fraction, 0.0))
        stride = roi - grid.overlap[0]
        slices = dense_patch_slices((size,), (roi,), (stride,))
        assert [s[0].start for s in slices] == list(grid.y.origins)


def test_the_floored_gaussian_is_monai_s_importance_map():
    from monai.data.utils import compute_importance_map

    for shape, sigma in [((64, 64), 0.125), ((65, 40), (0.125, 0.3)), ((7, 7), 1.0)]:
        weights = TileWeights("gaussian", sigma=sigma, border_aware=False, floor=MONAI_FLOOR)
        ours = weights.for_tile(shape).astype(np.float64)
        theirs = compute_importance_map(shape, "gaussian", sigma).numpy().astype(np.float64)
        # ours peaks at 1; MONAI's a little below 1 between the two centre pixels of an even side
        np.testing.assert_allclose(ours / ours.max(), theirs / theirs.max(), rtol=2e-6)
        assert (ours > 0).all()
    plain = TileWeights("gaussian", border_aware=False).for_tile((64, 64))
    assert plain.min() < MONAI_FLOOR / 10  # not floored unless asked: closer to whole-image


def test_sigma_per_axis_shapes_each_axis_and_names_a_wrong_count():
    weights = TileWeights("gaussian", sigma=(0.1, 0.4), border_aware=False)
    w = weights.for_tile((41, 41)).astype(np.float64)
    assert w[20, 0] > w[0, 20]  # the wider sigma along x keeps its edge more trusted
    assert TileWeights("gaussian", sigma=[0.2, 0.2]).sigma == (0.2, 0.2)
    with helpers.raises_mentioning(WeightsError, ["3 values", "2 axes"]):
        TileWeights("gaussian", sigma=(0.1, 0.2, 0.3)).for_tile((8, 8))
    for bad in [0, (0.1, -1), "wide", (), True]:
        with helpers.raises_mentioning(WeightsError, ["sigma", "(0, 10]"]):
            TileWeights("gaussian", sigma=bad)


def test_floor_is_checked_and_recorded():
    with helpers.raises_mentioning(WeightsError, ["[0, 1)", "floor=0.001"]):
        TileWeights("gaussian", floor=1.5)
    with helpers.raises_mentioning(WeightsError, ["'trim'", "floor"]):
        TileWeights("trim", floor=1e-3)
    assert TileWeights("gaussian").spec == "gaussian"
    assert TileWeights("trust").spec == "trust"
    spec = TileWeights("gaussian", sigma=(0.25, 0.125), floor=1e-3).spec
    assert spec == "gaussian(sigma=(0.25, 0.125), floor=0.001)"
    image = np.random.default_rng(0).random((2, 40, 40)).astype(np.float32)
    import xarray as xr

    data = xr.DataArray(image, dims=("band", "y", "x"))
    result = sd.segment(data, helpers.Identity(), tile_size=16, overlap=0.25,
                        weights=TileWeights("gaussian", sigma=0.3), output="logits")  # fmt: skip
    import json

    options = json.loads(result.attrs["seamless_job"])["options"]
    assert options["weights"] == "gaussian(sigma=0.3)"
    assert options["overlap"] == [4, 4]  # the pixels the fraction came to


def test_monai_s_test_sigma_constant_and_gaussian():
    """MONAI's test_sigma: a 7 x 7 image of ones, roi 3, overlap 0.5 (stride 1: 25 tiles), batches
    of 10, each batch's tiles raised by one more; MONAI's expected rows, to its 1e-4.
    """
    image = np.ones((1, 7, 7), np.float32)
    constant = [3.0, 3.0, 3.3333, 3.6667, 4.3333, 4.5, 5.0]
    gaussian = [3.0, 3.0, 3.3271625, 3.6728377, 4.3271623, 4.513757, 5.0]
    for weights, rows in [
        (TileWeights("constant"), constant),
        (TileWeights("gaussian", sigma=1.0, border_aware=False), gaussian),
        (TileWeights("gaussian", sigma=(1.0, 1.0), border_aware=False), gaussian),
    ]:
        ours = _ours(image, 3, 10, Staircase(), 0.5, weights)
        np.testing.assert_allclose(ours[0], np.repeat(np.array(rows)[:, None], 7, 1), rtol=1e-4)
    theirs = _monai(image, (3, 3), 10, Staircase(), 0.5, mode="gaussian", sigma_scale=1.0)
    ours = _ours(image, 3, 10, Staircase(), 0.5, TileWeights("gaussian", sigma=1.0,
                                                              border_aware=False))  # fmt: skip
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "roi", "batch", "overlap", "mode"),
    [  # MONAI's 2-D TEST_CASES of test_sliding_window_default, one image of the batch each
        ((3, 15, 7), (2, 6), 1000, 0.25, "constant"),
        ((3, 16, 7), (80, 50), 7, 0.25, "constant"),
        ((3, 16, 7), (80, 50), 7, 0.5, "gaussian"),
    ],
)
def test_monai_s_sliding_window_default_cases(shape, roi, batch, overlap, mode):
    if mode == "constant":
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    else:
        image = np.ones(shape, np.float32)
    weights = TileWeights(mode, border_aware=False)
    ours = _ours(image, roi, batch, lambda x: x + 1, overlap, weights)
    np.testing.assert_allclose(ours, image + 1.0)


@pytest.mark.parametrize(
    ("shape", "roi", "overlap", "batch"),
    [  # MONAI's 2-D windows of test_buffers: 2 x the image back, within 1e-3
        ((3, 10, 11), (7, 10), 0.8, 5),
        ((3, 10, 11), (15, 12), 0, 2),
        ((3, 10, 11), (10, 11), 0, 3),
        ((3, 511, 237), (96, 80), 0.4, 5),
        ((3, 512, 245), (96, 80), 0, 5),
        ((3, 512, 245), (512, 80), 0.125, 5),
    ],
)
def test_monai_s_buffer_windows_give_twice_the_image_as_monai_does(shape, roi, overlap, batch):
    image = np.random.default_rng(0).integers(0, 255, shape).astype(np.float32)
    weights = TileWeights("gaussian", border_aware=False, floor=MONAI_FLOOR)
    ours = _ours(image, roi, batch, lambda x: 2.0 * x, overlap, weights)
    assert np.abs(image - 0.5 * ours).max() < 1e-3
    theirs = _monai(image, roi, batch, lambda x: 2.0 * x, overlap, mode="gaussian")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


def test_floored_gaussian_blends_a_context_model_as_monai_does_and_unfloored_does_not():
    """The numbers a MONAI user has: a model whose tiles disagree (its output depends on the tile's
    mean), blended with MONAI's floored gaussian at sigma 0.125, equal to MONAI within float32
    noise; ours unfloored differs where a corner is covered by tile edges only.
    """

    def context(batch: torch.Tensor) -> torch.Tensor:
        return batch + batch.mean(dim=(2, 3), keepdim=True)

    image = np.random.default_rng(1).random((1, 150, 130)).astype(np.float32) * 10
    theirs = _monai(image, (64, 64), 4, context, 0.25, mode="gaussian", sigma_scale=0.125)
    floored = TileWeights("gaussian", border_aware=False, floor=MONAI_FLOOR)
    ours = _ours(image, 64, 4, context, 0.25, floored)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    unfloored = _ours(image, 64, 4, context, 0.25, TileWeights("gaussian", border_aware=False))
    assert np.abs(unfloored - theirs).max() > 1e-3
