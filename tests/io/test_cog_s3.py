"""A COG on S3 written by workers that share no folder (``io/_cog_parts.py``): real ``dask
scheduler`` and ``dask worker`` processes, each worker in a folder (and a temporary directory) of
its own, against moto's S3 server on loopback. The COG validates with rio-cogeo and holds the same
pixels, overviews and metadata as the COG GDAL writes locally; a failed run aborts its upload.
"""

import json
import os
import sys

import dask.array as da
import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers .rio)
import support
import xarray as xr
from distributed import Client
from rio_cogeo.cogeo import cog_validate

import seamless_dask as sd
from seamless_dask import OptionError
from seamless_dask import testing as helpers
from seamless_dask.io._cog_parts import MIN_PART

pytestmark = pytest.mark.integration

TILES = {"tile_size": 64, "overlap": 16}


def _same_cog(remote: str, local: str, same_job: bool = True) -> None:
    """The two COGs hold the same pixels at every level, with the same layout and metadata
    (``same_job=False``: written by two jobs, whose records differ).
    """
    assert cog_validate(remote) == (True, [], [])
    with rasterio.open(remote) as a, rasterio.open(local) as b:
        for key in ("width", "height", "count", "dtype", "crs", "transform", "blockxsize", "tiled",
                    "compress", "interleave"):  # fmt: skip
            assert a.profile[key] == b.profile[key], key
        assert a.nodata == b.nodata or (np.isnan(a.nodata) and np.isnan(b.nodata))
        assert a.overviews(1) == b.overviews(1) and a.overviews(1)
        # tifffile writes a unitless resolution of 1, which GDAL shows and GDAL's COGs leave out
        tags = {k: v for k, v in a.tags().items() if not k.startswith("TIFFTAG_")}
        theirs = b.tags()
        # the overviews' resampling, under rio-cogeo 7's name; rio-cogeo 5 calls it OVR_RESAMPLING_ALG
        if "OVR_RESAMPLING_ALG" in theirs:
            theirs["OVERVIEW_RESAMPLING"] = theirs.pop("OVR_RESAMPLING_ALG")
        if not same_job:
            assert json.loads(tags.pop("seamless_job")) != json.loads(theirs.pop("seamless_job"))
        assert a.scales == b.scales and tags == theirs
        for factor in (1, *a.overviews(1)):
            shape = (a.count, -(-a.height // factor), -(-a.width // factor))
            ours, gdals = a.read(out_shape=shape), b.read(out_shape=shape)
            if factor > 1 and ours.dtype.kind == "f":  # GDAL sums float32 in its own order
                np.testing.assert_allclose(ours, gdals, rtol=1e-6, atol=1e-7)
            else:
                np.testing.assert_array_equal(ours, gdals)
        if a.count == 1 and a.dtypes[0] == "uint8":
            assert a.colormap(1) == b.colormap(1)


def _grid(values: np.ndarray, chunks: int) -> xr.DataArray:
    """``values`` on a 10 m UTM grid, dask-backed."""
    h, w = values.shape[-2:]
    dims = ("class", "y", "x") if values.ndim == 3 else ("y", "x")
    coords = {"y": 5e6 - 10 * np.arange(h) - 5, "x": 3e5 + 10 * np.arange(w) + 5}
    out = xr.DataArray(da.from_array(values, chunks=chunks), dims=dims, coords=coords, name="r")
    nodata = np.nan if values.dtype.kind == "f" else 255
    return out.rio.write_crs(32631).rio.write_nodata(nodata)


@pytest.fixture
def cluster(tmp_path, s3):
    """A scheduler and two workers as processes, each worker in a folder of its own (its cwd, its
    TMPDIR, its dask local directory), with the S3 environment; a Client to them in this process.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
           "SEAMLESS_TILE_LOG": str(tmp_path / "instrument" / "tiles.log")}  # fmt: skip
    (tmp_path / "instrument").mkdir()
    file = tmp_path / "scheduler.json"
    processes = [support.dask_process("scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--scheduler-file", str(file), "--no-dashboard", env=env)]  # fmt: skip
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / f"worker-{name}"
        folder.mkdir()
        folders.append(folder)
        support.wait_for(file.exists, 30, "the scheduler file")
        processes.append(support.dask_process(
            "worker", "--scheduler-file", str(file), "--nthreads", "1", "--no-nanny", "--host",
            "127.0.0.1", "--no-dashboard", "--local-directory", str(folder / "dask"), cwd=folder,
            env={**env, "TMPDIR": str(folder)},
        ))  # fmt: skip
    try:
        with Client(scheduler_file=str(file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            yield client, folders, tmp_path / "instrument" / "tiles.log"
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _tiffs(folder) -> list:
    return [
        p for p in folder.rglob("*") if p.suffix in (".tif", ".tiff") or "seamless-cog" in p.name
    ]


@pytest.fixture
def reference(write_scene, tmp_path):
    """The demo scene of 700 px and the COG GDAL writes of its labels, here (before any cluster)."""
    scene = sd.open_raster(write_scene(700), chunks=256)
    labels = sd.segment(scene, helpers.Brightness(), chunks=256, **TILES)
    return scene, sd.to_cog(labels, tmp_path / "local.tif")


def test_two_workers_that_share_no_folder_write_a_valid_cog_to_s3(reference, cluster, s3, tmp_path):
    scene, local = reference
    _, folders, log = cluster
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    labels = sd.segment(scene, "seamless_dask.testing:logged_brightness", chunks=256, **TILES)
    assert sd.to_cog(labels, "s3://bucket/scene.tif") == "s3://bucket/scene.tif"
    # every tile ran once (on whichever of the two workers dask chose: on a loaded machine one may
    # take them all); nothing was written in their folders or here
    _, tiles = support.read_tile_log(log)
    valid = (scene.compute().values != 0).any(
        axis=0
    )  # the demo scene's nodata border: its tiles never run
    assert sum(tiles.values()) == support.tiles_with_data(valid, 64, 16)
    assert not any(_tiffs(folder) for folder in folders)
    assert not [
        n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - before if "seamless" in n
    ]
    s3.invalidate_cache()
    assert sorted(s3.ls("bucket")) == ["bucket/scene.tif"]  # no lock, no upload marker left
    s3.get("bucket/scene.tif", str(tmp_path / "back.tif"))
    _same_cog(str(tmp_path / "back.tif"), local, same_job=False)


def test_a_cog_larger_than_a_part_is_uploaded_in_parts_and_matches_gdals(s3, tmp_path):
    # noise does not compress: 4 blocks of 8 MiB, the level's first two kept for the join
    values = np.random.default_rng(0).random((2, 2000, 1900), dtype=np.float32)
    values[:, :40, :] = np.nan  # nodata, left out of the overviews' averages
    result = _grid(values, 1024)
    sd.to_cog(result, "s3://bucket/noise.tif")
    s3.invalidate_cache()  # the fixture's listings predate the upload
    etag = s3.info("bucket/noise.tif")["ETag"].strip('"')
    parts = int(etag.rsplit("-", 1)[1])  # a multipart object's ETag ends with its part count
    assert parts >= 3 and parts >= values.nbytes // (2 * MIN_PART)
    s3.get("bucket/noise.tif", str(tmp_path / "noise.tif"))
    _same_cog(str(tmp_path / "noise.tif"), sd.to_cog(result, tmp_path / "local.tif"))


def test_without_nodata_an_overview_averages_every_pixel_as_gdal_does(s3, tmp_path):
    values = np.random.default_rng(1).random((700, 900)).astype(np.float32)
    values[::3] = 0  # zeros are values here, not nodata
    result = _grid(values, 256).rio.write_nodata(None)
    assert result.rio.nodata is None
    sd.to_cog(result, "s3://bucket/zeros.tif", blocksize=128)
    s3.invalidate_cache()
    s3.get("bucket/zeros.tif", str(tmp_path / "zeros.tif"))
    assert cog_validate(str(tmp_path / "zeros.tif")) == (True, [], [])
    with rasterio.open(tmp_path / "zeros.tif") as cog:
        assert cog.nodata is None and cog.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(cog.read(1), values)
        for factor in cog.overviews(1):  # each the exact mean of its block of the full image
            h, w = -(-700 // factor) * factor, -(-900 // factor) * factor
            padded = np.full((h, w), np.nan)
            padded[:700, :900] = values
            blocks = padded.reshape(h // factor, factor, w // factor, factor)
            expected = np.nanmean(blocks, axis=(1, 3)).astype(np.float32)
            got = cog.read(1, out_shape=expected.shape)
            np.testing.assert_allclose(got, expected, rtol=2e-6)
    # GDAL's own first overview is the same; its deeper ones drift from the block means (its
    # 1:8 level's first pixel is 0.33465, the block's mean 0.33488), which ours are not
    local = sd.to_cog(result, tmp_path / "local.tif", blocksize=128)
    with rasterio.open(local) as gdal, rasterio.open(tmp_path / "zeros.tif") as cog:
        shape = (350, 450)
        np.testing.assert_allclose(
            cog.read(1, out_shape=shape), gdal.read(1, out_shape=shape), rtol=1e-6
        )


@pytest.mark.parametrize("chunks", [96, 1024])
def test_quantised_probabilities_and_class_names_reach_s3_as_gdal_writes_them(
    s3, scene, tmp_path, chunks
):
    image = sd.open_raster(scene, chunks=chunks)
    probabilities = sd.segment(image, helpers.Brightness(), output="probabilities", dtype="uint8",
                               **TILES)  # fmt: skip
    url = f"s3://bucket/p{chunks}.tif"
    sd.to_cog(probabilities, url, blocksize=64)  # 240 px: two levels of overviews
    s3.invalidate_cache()
    assert s3.info(url)["ETag"].strip('"').endswith("-1")  # under S3's minimum part: one part
    s3.get(url, str(tmp_path / "p.tif"))
    _same_cog(str(tmp_path / "p.tif"), sd.to_cog(probabilities, tmp_path / "pl.tif", blocksize=64))
    labels = sd.with_classes(sd.segment(image, helpers.Brightness(), **TILES), ["dark", "bright"])
    sd.to_cog(labels, f"s3://bucket/l{chunks}.tif", blocksize=64)
    s3.get(f"s3://bucket/l{chunks}.tif", str(tmp_path / "l.tif"))
    s3.get(f"s3://bucket/l{chunks}.tif.aux.xml", str(tmp_path / "l.tif.aux.xml"))
    with rasterio.open(tmp_path / "l.tif") as cog:
        assert cog.colormap(1)[1][:3] and sd.io.category_names(tmp_path / "l.tif")[:2] == [
            "dark",
            "bright",
        ]
    _same_cog(str(tmp_path / "l.tif"), sd.to_cog(labels, tmp_path / "ll.tif", blocksize=64))


def test_a_failed_run_aborts_its_upload_and_leaves_nothing(s3, scene):
    image = sd.open_raster(scene, chunks=96)
    failing = sd.segment(image, helpers.raising_model(), num_classes=2, **TILES)
    with pytest.raises(RuntimeError, match="out of memory"):
        sd.to_cog(failing, "s3://bucket/failed.tif")
    fs = s3
    fs.invalidate_cache()
    bucket, key, _ = fs.split_path("bucket/failed.tif")
    uploads = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key).get("Uploads", [])
    assert uploads == []
    assert not [p for p in fs.ls("bucket") if "failed" in p]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"compress": "jpeg"}, ["deflate", "compress='jpeg'"]),
        ({"overview_resampling": "bilinear"}, ["nearest", "average", "bilinear"]),
    ],
)
def test_options_the_workers_cannot_write_are_refused_before_any_tile_runs(
    s3, scene, options, words
):
    labels = sd.segment(sd.open_raster(scene), helpers.raising_model(), num_classes=2, **TILES)
    with pytest.raises(OptionError) as caught:
        sd.to_cog(labels, "s3://bucket/refused.tif", **options)
    for word in words:
        assert word in str(caught.value)
    s3.invalidate_cache()
    assert not [p for p in s3.ls("bucket") if "refused" in p]


def test_an_upload_a_dead_run_left_is_aborted_by_the_next_claim(s3):
    from seamless_dask.io._cog_parts import Upload, open_upload, upload_marker
    from seamless_dask.io._target import as_target, claim

    target = as_target("s3://bucket/left.tif")
    open_upload(Upload(target, "deadbeef0000", None))  # type: ignore[arg-type]  # a run killed at once
    bucket, key, _ = s3.split_path("bucket/left.tif")

    def uploads():
        return s3.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key).get("Uploads", [])

    assert len(uploads()) == 1 and upload_marker(target, "deadbeef0000").exists()
    with claim(target):
        pass
    assert uploads() == [] and not upload_marker(target, "deadbeef0000").exists()
