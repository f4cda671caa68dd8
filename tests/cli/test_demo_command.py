import numpy as np
from PIL import Image

from seamless_dask.cli import main
from seamless_dask.demo.scene import context_model, run_demo, synthetic_scene


def test_demo_shows_seams_for_naive_tiling_and_none_for_seamless(tmp_path):
    result = run_demo(tmp_path, size=512, tile=128, overlap=32)
    assert result.naive_error > 0.02  # the zero-padded context model breaks on every tile edge
    assert result.seamless_error < result.naive_error / 10
    with Image.open(result.png) as png:
        assert png.size[0] > 4 * 256 and png.mode == "RGB"


def test_demo_model_is_importable_by_spec_and_scene_has_structure():
    from seamless_dask.model.runner import ModelRunner

    scene = synthetic_scene(128)
    assert scene.dims == ("band", "y", "x") and float(scene.std()) > 0.1
    spec = ModelRunner("seamless_dask.demo:context_model").predict(scene.values[None, :, :64, :64])
    direct = ModelRunner(context_model()).predict(scene.values[None, :, :64, :64])
    np.testing.assert_allclose(spec, direct)


def test_cli_plan_prints_the_grid(capsys):
    assert (
        main(["plan", "1000", "700", "--tile-size", "256", "--overlap", "64", "--chunks", "512"])
        == 0
    )
    out = capsys.readouterr().out
    assert "tiles        20 (5 x 4)" in out and "each tile run once" in out


def test_cli_plan_says_what_a_chunk_holds_and_when_the_scheduler_is_the_bottleneck(capsys):
    args = [
        "plan",
        "100000",
        "100000",
        "--tile-size",
        "512",
        "--overlap",
        "64",
        "--gpu-workers",
        "500",
    ]
    assert main(args) == 0
    # chunks of about 2240 px: 3 bands of uint8 with the overlap, 2 classes + weight
    out = capsys.readouterr().out
    assert "window 15 MiB (3 bands of uint8), sums 27 MiB" in out and "labels 5 MiB" in out
    # 45 chunks a row (44 of 2240 px and one of 1440): 32 rows below each and 32 columns right of all but the last,
    # 3 float32 channels: (32 * 100000 + (32 * 2240 + 32 * 32) * 44) * 12 bytes = 73 MiB; twice that for "trust"
    assert (
        "45 chunks; the halo strips it hands the row below: 73 MiB (32 rows and 32 columns" in out
    )
    assert "the scheduler is the bottleneck: use larger --chunks" in out
    assert main([*args, "--weights", "trust"]) == 0
    assert "the row below: 147 MiB (64 rows and 64 columns" in capsys.readouterr().out
    assert main([*args, "--chunks", "10240"]) == 0
    assert "(fits; only 100 chunks: at most 100 workers busy at once)" in capsys.readouterr().out
    assert main(["plan", "300000", "300000", *args[3:], "--chunks", "10240"]) == 0
    assert "(fits)" in capsys.readouterr().out


def test_cli_user_mistake_is_one_line_and_exit_2(capsys):
    assert main(["plan", "100", "100", "--tile-size", "64", "--overlap", "70"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seamless-dask: error: overlap must be smaller") and err.count("\n") == 1
