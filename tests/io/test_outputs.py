"""Safe in the field, outputs: a resume finishes the same job or nothing, no output path destroys an input or
something seamless_dask did not write, concurrent runs never mix, and remote (fsspec) outputs work, tested
against a real S3 API on loopback (moto's server)."""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import support
import xarray as xr
import zarr
from rio_cogeo.cogeo import cog_validate

import seamless_dask as sd
from seamless_dask import OptionError, RasterError, io
from seamless_dask import testing as helpers
from seamless_dask.cli import main
from seamless_dask.demo.scene import write_scene_geotiff

MODEL = "seamless_dask.testing:brightness"


def cli(*args, scheduler="threads") -> int:
    return support.segment_cli(*args, scheduler=scheduler, progress=False)


error_line = support.error_line


def tree(path) -> dict:
    """Every file under ``path`` (or the file itself) with its bytes."""
    if os.path.isfile(path):
        return {"": open(path, "rb").read()}
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


# ---- class 1: resume checks that it resumes the same job


@pytest.fixture
def started(scene, tmp_path):
    """A zarr store written by the CLI, then marked as interrupted (two regions not done)."""
    store = tmp_path / "labels.zarr"
    assert cli(scene, store, "--model", MODEL, "--chunks", "96") == 0
    done = zarr.open_array(store, path=io.DONE, mode="r+")
    done[0, 0], done[1, 1] = 0, 0
    zarr.open_group(store, mode="r+").attrs["seamless_complete"] = False
    return store


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        (["--model", "seamless_dask.testing:other_model"], "model.spec"),
        (["--weights", "trust"], "options.weights"),
        (["--normalize", "100/50"], "options.normalize"),
        (["--activation", "sigmoid"], "options.activation"),
        (
            ["--tile-size", "80", "--overlap", "32"],
            "options.tile_size",
        ),  # same stride (48), same chunks
        (["--nodata", "none"], "options.nodata"),
    ],
)
def test_resume_refuses_another_model_or_options_and_lists_what_differs(
    scene, started, capsys, change, differs
):
    before = tree(started)
    args = ["--model", MODEL, "--chunks", "96", "--resume", *change]
    assert main(["segment", str(scene), str(started), "--tile-size", "64", "--overlap", "16", *args,
                 "--scheduler", "threads", "--no-progress"]) == 2  # fmt: skip
    line = error_line(capsys)
    assert "started by another job" in line and differs in line, line
    assert tree(started) == before  # not one byte written


def test_resume_refuses_another_input_even_of_the_same_size(scene, started, tmp_path, capsys):
    other = write_scene_geotiff(tmp_path / "other.tif", size=240, seed=5)
    with rasterio.open(other, "r+") as dst:
        dst.crs = "EPSG:32632"  # another CRS, same pixels grid
    before = tree(started)
    assert cli(other, started, "--model", MODEL, "--chunks", "96", "--resume") == 2
    line = error_line(capsys)
    assert "input.path" in line and "input.crs" in line
    assert tree(started) == before


def test_resume_of_the_same_job_finishes_it(scene, started):
    assert cli(scene, started, "--model", MODEL, "--chunks", "96", "--resume") == 0
    assert io.is_complete(started)


def test_resume_and_overwrite_together_are_a_usage_error(scene, started, capsys):
    assert cli(scene, started, "--model", MODEL, "--resume", "--overwrite") == 2
    assert "pass one of them" in error_line(capsys)
    result = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    with pytest.raises(OptionError, match="pass one of them"):
        sd.to_zarr(result, started, resume=True, overwrite=True)


def test_the_record_names_input_model_options_and_version(scene):
    result = sd.segment(
        sd.open_raster(scene), "seamless_dask.testing:brightness", tile_size=64, overlap=16
    )
    job = json.loads(result.attrs["seamless_job"])
    assert job["input"]["path"] == os.path.realpath(scene) and job["input"]["crs"] == "EPSG:32631"
    # no parameters
    assert (
        job["model"]["spec"] == "seamless_dask.testing:brightness" and "weights" not in job["model"]
    )
    assert job["options"]["tile_size"] == [64, 64] and job["options"]["classes"] == 2
    assert job["seamless_dask"] == sd.__version__
    net, other = helpers.conv_net(seed=0), helpers.conv_net(seed=1)
    image = xr.DataArray(helpers.structured_image(3, 50, 50), dims=("band", "y", "x"))
    records = [
        json.loads(sd.segment(image, m, tile_size=32, overlap=8).attrs["seamless_job"])
        for m in (net, other)
    ]
    # same class, other weights
    assert records[0]["model"]["weights"] != records[1]["model"]["weights"]


# ---- class 2: no output path may destroy an input


def test_quicklook_may_not_be_the_input_or_the_output(scene, tmp_path, capsys):
    copy = tmp_path / "scene.tif"
    copy.write_bytes(scene.read_bytes())
    before = copy.read_bytes()
    assert cli(copy, tmp_path / "o.tif", "--model", MODEL, "--quicklook", copy) == 2
    assert "--quicklook" in (line := error_line(capsys)) and "INPUT" in line
    assert cli(copy, tmp_path / "o.tif", "--model", MODEL, "--quicklook", tmp_path / "o.tif") == 2
    assert "OUTPUT" in error_line(capsys)
    assert copy.read_bytes() == before and not (tmp_path / "o.tif").exists()


def test_output_may_not_be_the_input_even_through_a_symlink(scene, tmp_path, capsys):
    copy = tmp_path / "scene.tif"
    copy.write_bytes(scene.read_bytes())
    before = copy.read_bytes()
    assert cli(copy, copy, "--model", MODEL, "--overwrite") == 2
    assert "would destroy the INPUT" in error_line(capsys)
    (tmp_path / "link.tif").symlink_to(copy)
    assert cli(copy, tmp_path / "link.tif", "--model", MODEL, "--overwrite") == 2
    assert "would destroy the INPUT" in error_line(capsys)
    assert copy.read_bytes() == before


def test_a_zarr_input_cannot_be_overwritten_by_its_own_output(tmp_path, capsys):
    xr.Dataset({"image": (("y", "x"), np.full((60, 60), 200, np.uint8))}).to_zarr(
        tmp_path / "in.zarr"
    )
    before = tree(tmp_path / "in.zarr")
    assert cli(tmp_path / "in.zarr", tmp_path / "in.zarr", "--model", MODEL, "--overwrite") == 2
    assert "would destroy the INPUT" in error_line(capsys)
    image = sd.open_raster(tmp_path / "in.zarr")
    result = sd.segment(image, helpers.Brightness(), tile_size=32, overlap=8)
    with pytest.raises(RasterError, match="would destroy the input"):
        sd.to_zarr(result, tmp_path / "in.zarr", overwrite=True)
    assert tree(tmp_path / "in.zarr") == before


def test_overwrite_never_deletes_a_folder_seamless_dask_did_not_write(scene, tmp_path, capsys):
    folder = tmp_path / "x.zarr"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    assert cli(scene, folder, "--model", MODEL, "--overwrite") == 2
    assert "is not a zarr store seamless_dask wrote" in error_line(capsys)
    assert (folder / "thesis.tex").read_text() == "years of work"
    (tmp_path / "y.tif").mkdir()
    (tmp_path / "y.tif" / "keep").write_text("x")
    assert cli(scene, tmp_path / "y.tif", "--model", MODEL, "--overwrite") == 2
    assert "is not a file" in error_line(capsys)
    assert (tmp_path / "y.tif" / "keep").exists()
    # a store seamless_dask wrote is replaced
    assert cli(scene, tmp_path / "ok.zarr", "--model", MODEL) == 0
    assert (
        cli(
            scene,
            tmp_path / "ok.zarr",
            "--model",
            "seamless_dask.testing:other_model",
            "--overwrite",
        )
        == 0
    )


# ---- class 3: concurrent runs


def slow_run(scene, target, log, sleep: float):
    """The CLI in its own process with a model that sleeps ``sleep`` s per tile; returns once tiles have run."""
    env = {**os.environ, "SEAMLESS_TILE_LOG": str(log), "SEAMLESS_TILE_SLEEP": str(sleep)}
    run = support.python_process("-m", "seamless_dask.cli", "segment", str(scene), str(target), "--model",
                                 "seamless_dask.testing:logged_brightness", "--tile-size", "64", "--overlap", "16",
                                 "--scheduler", "threads", "--no-progress", env=env)  # fmt: skip
    support.wait_for(lambda: sum(support.read_tile_log(log)[1].values()) > 0, 60, "the first tiles")
    return run


def test_two_runs_on_one_target_the_second_is_refused_naming_the_first(scene, tmp_path, capsys):
    target = tmp_path / "o.tif"
    # seconds of work left when the second starts
    first = slow_run(scene, target, tmp_path / "tiles.log", 0.2)
    try:
        assert (
            cli(scene, target, "--model", "seamless_dask.testing:other_model", "--overwrite") == 2
        )
        line = error_line(capsys)
        assert (
            "being written by another run" in line
            and f"pid {first.pid}" in line
            and socket.gethostname() in line
        )
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 0, output.decode()
    finally:
        first.kill()
    with rasterio.open(target) as cog:  # the first run's labels, not the second's
        labels = cog.read(1)
    expected = (
        sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
        .compute()
        .values
    )
    np.testing.assert_array_equal(labels, expected)
    # no claim, no scratch left
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "o.tif",
        "tiles.log",
    ]


def test_a_stale_claim_and_scratch_of_a_dead_run_are_cleared(scene, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "o.tif"
    claim = {
        "run": "deadbeef0000",
        "host": socket.gethostname(),
        "pid": dead.pid,
        "started": "2026-11-21T00:00:00",
    }
    (tmp_path / "o.tif.seamless-lock").write_text(json.dumps(claim))
    (tmp_path / "o.tif.seamless-deadbeef0000.scratch.tif").write_bytes(b"half a scene")
    assert cli(scene, target, "--model", MODEL) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif"]


def test_a_live_claim_on_another_host_is_never_taken_over(scene, tmp_path, capsys):
    claim = {"run": "abc", "host": "gpu-node-7", "pid": 1, "started": "2026-11-21T01:02:03"}
    (tmp_path / "o.tif.seamless-lock").write_text(json.dumps(claim))
    assert cli(scene, tmp_path / "o.tif", "--model", MODEL) == 2
    line = error_line(capsys)
    assert "gpu-node-7" in line and "o.tif.seamless-lock" in line


def test_each_write_has_its_own_scratch_file(scene, tmp_path):
    result = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    sd.to_cog(result, tmp_path / "o.tif", compute=False)
    sd.to_cog(result, tmp_path / "o.tif", compute=False)
    scratch = [p.name for p in tmp_path.iterdir() if p.name.endswith(".scratch.tif")]
    assert len(scratch) == 2 and len(set(scratch)) == 2


def test_sigterm_cleans_up_as_sigint_does(scene, tmp_path):
    run = slow_run(scene, tmp_path / "o.tif", tmp_path / "tiles.log", 0.2)
    try:
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 143, output.decode()
    assert "terminated" in output.decode()
    # no COG, no scratch, no claim
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles.log"]


# ---- class 4: remote outputs, against a real S3 API on loopback


@pytest.mark.integration
def test_cli_writes_zarr_to_s3_and_resumes_it_there(scene, s3, capsys):
    expected = (
        sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
        .compute()
        .values
    )
    # on the default local cluster: its worker processes write the regions to S3 themselves
    assert (
        cli(scene, "s3://bucket/labels.zarr", "--model", MODEL, "--chunks", "96", scheduler="") == 0
    )
    back = xr.open_zarr("s3://bucket/labels.zarr", mask_and_scale=False)["labels"]
    np.testing.assert_array_equal(back.compute().values, expected)
    assert io.is_complete("s3://bucket/labels.zarr")
    assert cli(scene, "s3://bucket/labels.zarr", "--model", MODEL, "--chunks", "96") == 2
    assert "exists" in error_line(capsys)
    assert (
        cli(
            scene,
            "s3://bucket/labels.zarr",
            "--model",
            "seamless_dask.testing:other_model",
            "--chunks",
            "96",
            "--resume",
        )
        == 2
    )
    assert "started by another job" in error_line(capsys)
    assert (
        cli(scene, "s3://bucket/labels.zarr", "--model", MODEL, "--chunks", "96", "--resume") == 0
    )
    assert not s3.exists("bucket/labels.zarr.seamless-lock")


@pytest.mark.integration
def test_cli_writes_a_cog_to_s3_whole_or_not_at_all(scene, s3, tmp_path, capsys):
    assert cli(scene, "s3://bucket/labels.tif", "--model", MODEL) == 0
    s3.get("bucket/labels.tif", str(tmp_path / "back.tif"))
    assert cog_validate(str(tmp_path / "back.tif"))[0]
    with rasterio.open(tmp_path / "back.tif") as cog, rasterio.open(scene) as src:
        assert (cog.width, cog.height, cog.crs, cog.transform) == (
            src.width,
            src.height,
            src.crs,
            src.transform,
        )
    assert cli(scene, "s3://bucket/labels.tif", "--model", MODEL) == 2
    assert "exists" in error_line(capsys)
    # a failing run leaves nothing at its target, and nothing beside it
    assert (
        cli(
            scene,
            "s3://bucket/failed.tif",
            "--model",
            "seamless_dask.testing:raising_model",
            "--num-classes",
            "2",
        )
        == 1
    )
    assert not [p for p in s3.ls("bucket") if "failed" in p]
    assert not [p for p in s3.ls("bucket") if "seamless-" in p]


def test_to_zarr_on_memory_urls_honours_overwrite_and_resume():
    image = xr.DataArray(helpers.structured_image(3, 90, 90) * 255, dims=("band", "y", "x"))
    result = sd.segment(image, helpers.Brightness(), tile_size=32, overlap=8, chunks=40)
    url = "memory://seamless-test/labels.zarr"
    assert sd.to_zarr(result, url) == 4
    with pytest.raises(RasterError, match="exists: pass resume=True"):
        sd.to_zarr(result, url)
    assert sd.to_zarr(result, url, resume=True) == 0  # every region done: nothing recomputed
    other = sd.segment(image, helpers.other_model(), tile_size=32, overlap=8, chunks=40)
    with pytest.raises(RasterError, match="started by another job"):
        sd.to_zarr(other, url, resume=True)
    assert sd.to_zarr(other, url, overwrite=True) == 4
    np.testing.assert_array_equal(
        xr.open_zarr(url)["labels"].compute().values, other.compute().values
    )


@pytest.mark.integration
def test_a_missing_bucket_is_refused_before_any_tile_runs(scene, s3, tmp_path, capsys):
    log = tmp_path / "tiles.log"
    os.environ["SEAMLESS_TILE_LOG"] = str(log)
    try:
        code = cli(scene, "s3://no-such-bucket/labels.zarr", "--model",
                   "seamless_dask.testing:logged_brightness")  # fmt: skip
    finally:
        del os.environ["SEAMLESS_TILE_LOG"]
    assert code == 2
    line = error_line(capsys)
    assert "the bucket 'no-such-bucket'" in line and "does not exist" in line
    assert not log.exists() or "tiles" not in log.read_text()  # no tile ran
    assert not s3.exists("no-such-bucket")


@pytest.mark.integration
def test_an_object_store_that_does_not_answer_is_named_before_any_tile_runs(scene, s3, capsys):
    import s3fs

    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # discard: nothing answers there
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps filesystems by their arguments
    try:
        code = cli(scene, "s3://bucket/elsewhere.zarr", "--model", MODEL)
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved
        s3fs.S3FileSystem.clear_instance_cache()
    assert code == 2
    assert "cannot reach the bucket 'bucket'" in error_line(capsys)


def test_an_s3_target_retries_server_errors_unless_the_caller_or_environment_says_otherwise(
    monkeypatch,
):
    # botocore's default ("legacy", 5 attempts) gives up on a brief brown-out; the package asks for
    # its "standard" mode, 10 attempts (tests/io/test_remote_faults.py: five 500s running, retried)
    for name in ("AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(name, raising=False)
    options = io.as_target("s3://bucket/x.zarr", {"anon": False}).storage_options
    assert options == {"anon": False, "config_kwargs": {"retries": io.S3_RETRIES}}
    assert options["config_kwargs"]["retries"]["mode"] == "standard"
    own = {"config_kwargs": {"retries": {"max_attempts": 2}, "read_timeout": 5}}
    assert io.as_target("s3://bucket/x.zarr", own).storage_options == own
    assert io.as_target("gs://bucket/x.zarr").storage_options == {}  # gcsfs retries on its own
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert io.as_target("s3://bucket/x.zarr").storage_options == {}  # botocore reads the variable
