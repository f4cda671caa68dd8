"""A tile or a chunk that cannot fit is refused before the model is probed or any tile or window
is allocated."""

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


def test_chunks_too_large_for_memory_are_refused_naming_the_option_and_a_size_that_fits(
    write_scene, tmp_path, monkeypatch
):
    # a 300,000 px VRT read lazily: --chunks 100000 is 10^10 px a chunk, 260 GiB of window and sums
    from seamless_dask.graph import chunk_size

    monkeypatch.setattr(chunk_size, "machine_memory", lambda: 16 * 2**30)
    scene = write_scene(128)
    vrt = tmp_path / "big.vrt"
    vrt.write_text(f"""<VRTDataset rasterXSize="300000" rasterYSize="300000">
  <VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="0">{scene}</SourceFilename>
  <SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>""")  # fmt: skip
    image = sd.open_raster(vrt)
    model = helpers.Counting(helpers.Brightness())
    words = ["chunks of 100032 x 100032 px", "GiB", "--chunks", "16 GiB", "e.g. 12288"]
    with helpers.raises_mentioning(OptionError, words):
        sd.segment(image, model, tile_size=64, overlap=16, chunks=100_000, num_classes=2)
    assert model.tiles == 0
    # the size it names plans (lazily: nothing runs)
    assert sd.segment(image, model, tile_size=64, overlap=16, chunks=12288, num_classes=2).shape
    assert model.tiles == 0
