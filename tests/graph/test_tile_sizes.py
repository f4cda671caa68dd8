"""A tile that cannot fit is refused before the model is probed or any tile is allocated."""

import numpy as np
import pytest

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.cli import main
from seamless_dask.exceptions import OptionError
from seamless_dask.graph.chunk_size import check_tile_fits, machine_memory


def test_a_tile_far_larger_than_the_image_is_refused_naming_the_option_and_a_size_that_fits():
    image = np.zeros((3, 128, 128), "uint8")
    with helpers.raises_mentioning(OptionError, ["tile_size=100000", "GiB", "--tile-size", "128"]):
        sd.segment(image, helpers.Counting(helpers.Brightness()), tile_size=100_000, overlap=0)


def test_the_refusal_comes_before_the_model_sees_a_tile():
    model = helpers.Counting(helpers.Brightness())
    with pytest.raises(OptionError):
        sd.segment(np.zeros((3, 64, 64), "uint8"), model, tile_size=(60_000, 60_000), overlap=0)
    assert model.tiles == 0


def test_a_tile_that_fits_runs_padded_as_before():
    image = np.random.default_rng(0).integers(0, 255, (3, 40, 40)).astype("uint8")
    labels = sd.segment(image, helpers.Brightness(), tile_size=64, overlap=16)
    assert labels.shape == (40, 40)


@pytest.mark.skipif(not machine_memory(), reason="the OS does not say how much memory it has")
def test_the_limit_is_a_quarter_of_the_machine():
    side = int((machine_memory() // 4 / (8 * 3 * 4)) ** 0.5)
    check_tile_fits(3, (side, side), (side - 64, side - 64), 8)  # just under: no error
    with pytest.raises(OptionError):
        check_tile_fits(3, (side, side), (side + 64, side + 64), 8)


def test_the_command_line_says_it_in_one_line(write_scene, tmp_path, capsys):
    scene = write_scene(128)
    code = main(["segment", str(scene), str(tmp_path / "o.zarr"), "--model",
                 "seamless_dask.testing:brightness", "--tile-size", "100000", "--scheduler", "threads",
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--tile-size" in err[0]
    assert not (tmp_path / "o.zarr").exists()
