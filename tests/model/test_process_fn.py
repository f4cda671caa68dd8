"""``segment(..., process_fn=)``: MONAI's ``process_fn``, a function of each batch of predictions and
its tiles between the model and the blend. MONAI's own suite has no case of it (its
tests/inferers/test_sliding_window_inference.py tests buffers, devices, sigma, cval, args and several
outputs), so these are ours: the hook sees every tile once, what it returns is what is blended, a
hook that changes the class count sets it, and a bad hook is a clear error.
"""

import sys

import numpy as np
import pytest
import torch

import seamless_dask as sd
from seamless_dask import ModelError, ModelOutputError, OptionError
from seamless_dask import testing as helpers

TILES = {"tile_size": 32, "overlap": 8}


@pytest.fixture(scope="module")
def image():
    return helpers.structured_image(3, 80, 70).astype(np.float32) / 255


def test_the_hook_sees_each_tile_once_and_what_it_returns_is_blended(image):
    net = helpers.conv_net(bands=3, classes=4).eval()
    seen = []

    def hook(predictions, tiles):
        seen.append(tiles.shape[0])
        assert predictions.shape[1] == 4 and tiles.shape[1] == 3  # activated, as blended
        np.testing.assert_allclose(predictions.sum(1).numpy(), 1, rtol=1e-5)
        return predictions.flip(1)

    plain = sd.segment(image, net, output="probabilities", **TILES)
    hooked = sd.segment(image, net, output="probabilities", process_fn=hook, **TILES)
    assert sum(seen) - 1 == sd.TileGrid((80, 70), 32, 8).n_tiles  # one more: the class probe
    np.testing.assert_allclose(hooked, plain[::-1], rtol=1e-6)
    labels = sd.segment(image, net, process_fn="seamless_dask.testing:swap_classes", **TILES)
    np.testing.assert_array_equal(labels, 3 - sd.segment(image, net, **TILES))


def test_a_hook_that_merges_classes_sets_the_class_count(image):
    net = helpers.conv_net(bands=3, classes=4).eval()

    def merge(predictions, tiles):  # classes 0-1 and 2-3 as two
        return torch.stack([predictions[:, :2].sum(1), predictions[:, 2:].sum(1)], 1)

    merged = sd.segment(image, net, output="probabilities", process_fn=merge, **TILES)
    assert merged.shape == (2, 80, 70)
    full = sd.segment(image, net, output="probabilities", **TILES)
    np.testing.assert_allclose(merged[0], full[:2].sum(0), rtol=1e-5)


def _returns_numpy(predictions, tiles):
    return predictions.numpy()


def _crops(predictions, tiles):
    return predictions[..., 1:, 1:]


def _raises(predictions, tiles):
    raise ValueError("calibration table missing")


def _exits(predictions, tiles):
    sys.exit(0)


@pytest.mark.parametrize(
    ("hook", "error", "words"),
    [
        (_returns_numpy, ModelOutputError, ["process_fn must return a torch tensor", "ndarray"]),
        (_crops, ModelOutputError, ["process_fn's output", "spatial size"]),
        (_raises, ValueError, ["calibration table missing"]),
        (_exits, ModelError, ["sys.exit(0)", "process_fn"]),
        ("no_module_here:fn", sd.ModelSpecError, ["no_module_here"]),
        (42, OptionError, ["process_fn must be a function", "42"]),
    ],
)
def test_a_bad_hook_is_a_clear_error_never_a_silent_result(image, hook, error, words):
    net = helpers.conv_net(bands=3, classes=4).eval()
    with pytest.raises(error) as raised:
        sd.segment(image, net, process_fn=hook, **TILES)
    text = str(raised.value) + "\n".join(getattr(raised.value, "__notes__", []))
    for word in words:
        assert word in text


def test_the_hook_is_part_of_the_job_record(write_scene):
    scene = sd.open_raster(write_scene(120), chunks=64)
    net = helpers.conv_net(bands=3, classes=4).eval()
    hooked = sd.segment(scene, net, process_fn="seamless_dask.testing:swap_classes", **TILES)
    assert '"process_fn": "seamless_dask.testing:swap_classes"' in hooked.attrs["seamless_job"]
    assert "process_fn" not in sd.segment(scene, net, **TILES).attrs["seamless_job"]


def test_the_command_line_takes_the_hook_by_import_string(write_scene, tmp_path):
    import xarray as xr

    from seamless_dask.cli import main

    scene = write_scene(120)
    runs = {}
    for name, extra in (
        ("plain", []),
        ("swapped", ["--process-fn", "seamless_dask.testing:swap_classes"]),
    ):
        store = tmp_path / f"{name}.zarr"
        args = ["segment", str(scene), str(store), "--model", "seamless_dask.testing:make_conv",
                "--tile-size", "32", "--overlap", "8", "--no-progress", "--scheduler", "threads",
                *extra]  # fmt: skip
        assert main(args) == 0
        runs[name] = xr.open_zarr(store)["labels"].to_numpy()
    valid = runs["plain"] != 255
    np.testing.assert_array_equal(runs["swapped"][valid], 3 - runs["plain"][valid])
