"""`seamless-dask segment`: the whole job from the command line; user mistakes are one line, never a traceback."""

import dask
import distributed  # noqa: F401  (its config defaults)
import numpy as np
import pandas as pd
import pytest
import rasterio
import support
import xarray as xr
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from seamless_dask import io
from seamless_dask.cli import main
from seamless_dask.demo.scene import write_scene_geotiff

MODEL = "seamless_dask.testing:brightness"


@pytest.fixture(scope="module")
def scene(write_scene):
    return write_scene(300)


def segment(*args: str, scheduler: str = "threads") -> int:
    """The CLI with small tiles; on dask's threads unless ``scheduler`` says otherwise (default: a cluster)."""
    return support.segment_cli(*args, scheduler=scheduler or None)


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    # after the progress bar
    err = err.rsplit("\r", 1)[-1].split("\n", 1)[-1] if "tile/s]" in err else err
    assert err.startswith("seamless-dask: error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def test_cli_writes_a_cog_a_zarr_and_a_quicklook(scene, tmp_path, capsys):
    quick = tmp_path / "quick.png"
    # The default: a LocalCluster sized to the machine, started and closed by the command.
    args = ("--model", MODEL, "--quicklook", quick, "--chunks", "100")
    assert segment(scene, tmp_path / "labels.tif", *args, scheduler="") == 0
    out = capsys.readouterr()
    # the progress bar counts tiles
    assert "wrote" in out.out and "EPSG:32631" in out.out and "tile" in out.err
    assert cog_validate(str(tmp_path / "labels.tif"))[0]
    with rasterio.open(tmp_path / "labels.tif") as cog, rasterio.open(scene) as src:
        assert (cog.width, cog.height, cog.crs, cog.nodata) == (src.width, src.height, src.crs, 255)
        assert cog.transform == src.transform
        labels, image = cog.read(1), src.read()
    np.testing.assert_array_equal(labels == 255, (image == 0).all(axis=0))
    with Image.open(quick) as png:
        assert png.mode == "RGBA" and png.getpixel((1, 30))[3] == 0  # nodata is transparent

    assert segment(scene, tmp_path / "labels.zarr", "--model", MODEL, "--no-progress") == 0
    back = xr.open_zarr(tmp_path / "labels.zarr", decode_coords="all", mask_and_scale=False)[
        "labels"
    ]
    assert back.rio.crs == "EPSG:32631" and io.is_complete(tmp_path / "labels.zarr")
    np.testing.assert_array_equal(back.compute().values, labels)


def test_cli_probabilities_and_a_torchscript_model(scene, tmp_path):
    import torch

    from seamless_dask import testing as helpers

    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(helpers.Brightness()), str(path))
    assert (
        segment(
            scene, tmp_path / "p.tif", "--model", path, "--output", "probabilities", "--no-progress"
        )
        == 0
    )
    with rasterio.open(tmp_path / "p.tif") as cog:
        assert cog.count == 2 and cog.dtypes[0] == "float32"


def test_cli_tile_larger_than_the_image_runs_one_tile(tmp_path, capsys):
    small = write_scene_geotiff(tmp_path / "small.tif", size=40)
    assert (
        main(
            [
                "segment",
                str(small),
                str(tmp_path / "o.tif"),
                "--model",
                MODEL,
                "--scheduler",
                "threads",
            ]
        )
        == 0
    )
    assert "1 tiles" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["missing.tif", "o.tif", "--model", MODEL], ["does not exist", "missing.tif"]),
        (
            ["{scene}", "o.tif", "--model", "no_such_model"],
            ["neither an existing TorchScript file", "pkg.module"],
        ),
        (
            ["{scene}", "o.tif", "--model", "no_such_pkg:build"],
            ["cannot import module", "no_such_pkg"],
        ),
        (
            ["{scene}", "o.tif", "--model", "seamless_dask.testing:failing_factory"],
            ["factory", "raised"],
        ),
        (["{scene}", "nowhere/o.tif", "--model", MODEL], ["does not exist", "create it first"]),
        (["{scene}", "o.png", "--model", MODEL], [".tif/.tiff", ".zarr"]),
        (["{scene}", "o.tif", "--model", MODEL, "--resume"], ["--resume works with .zarr"]),
        (
            ["{scene}", "o.tif", "--model", MODEL, "--tile-size", "64", "--overlap", "80"],
            ["overlap", "smaller"],
        ),
        (["{scene}", "o.tif", "--model", MODEL, "--bands", "7"], ["between 1 and 3"]),
        (
            ["{scene}", "o.tif", "--model", MODEL, "--scheduler", "tcp://127.0.0.1:1"],
            ["cannot reach", "--scheduler"],
        ),
    ],
)
def test_cli_user_mistakes_are_one_line_errors(scene, tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(dask.config.config["distributed"]["comm"]["timeouts"], "connect", "2s")
    assert main(["segment", *(a.format(scene=scene) for a in args), "--no-progress"]) == 2
    one_line_error(capsys, *words)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_refuses_to_overwrite_unless_asked(scene, tmp_path, capsys):
    target = tmp_path / "o.tif"
    target.write_bytes(b"precious")
    assert segment(scene, target, "--model", MODEL) == 2
    one_line_error(capsys, "exists", "--overwrite")
    assert target.read_bytes() == b"precious"
    # --overwrite replaces a GeoTIFF, never a file of another kind
    assert segment(scene, target, "--model", MODEL, "--overwrite", "--no-progress") == 2
    one_line_error(capsys, "is not a GeoTIFF", "left as it is")
    assert target.read_bytes() == b"precious"
    target.write_bytes(scene.read_bytes())
    assert segment(scene, target, "--model", MODEL, "--overwrite", "--no-progress") == 0


def test_cli_model_that_raises_fails_the_job_and_leaves_no_output(scene, tmp_path, capsys):
    code = segment(
        scene,
        tmp_path / "o.tif",
        "--model",
        "seamless_dask.testing:raising_model",
        "--num-classes",
        "2",
    )
    assert code == 1
    one_line_error(capsys, "RuntimeError", "out of memory (simulated)", "raised by the model")
    # no COG, no scratch file: a failed tile never becomes zeros
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(
    tuple(int(v) for v in xr.__version__.split(".")[:2]) < (2025, 7)
    and int(pd.__version__.split(".")[0]) >= 3,
    reason="xarray 2025.6 cannot write pandas 3's string coordinates (uncertainty's measure) to zarr",
)
def test_an_uncertainty_output_gets_a_quicklook_of_its_disagreement(write_scene, tmp_path):
    """``--output uncertainty --quicklook`` wrote the zarr and then failed (issue 32: its ``measure``
    dim was not read back as bands)."""
    from PIL import Image

    scene, png = write_scene(128), tmp_path / "q.png"
    code = support.segment_cli(scene, tmp_path / "u.zarr", "--model", "seamless_dask.testing:brightness",
                               "--output", "uncertainty", "--tta", "flips", "--quicklook", png,
                               progress=False)  # fmt: skip
    assert code == 0 and Image.open(png).size[0] > 0
