"""Safe in the field: bad values never become labels, user code never ends a run with a false status,
real architectures take every scene, model files that run code are refused, unplannable scenes fail fast.

Each test names the class of defect it holds (see docs/cluster.md, "Reliability and security").
"""

import numpy as np
import pytest
import rasterio
import support
import torch
import xarray as xr
from rasterio.transform import from_origin

import seamless_dask as sd
from seamless_dask import DimensionError, ModelOutputError, ModelSpecError, OptionError
from seamless_dask import testing as helpers
from seamless_dask.cli import main
from seamless_dask.cluster import wave_plan
from seamless_dask.graph.build import keys
from seamless_dask.graph.chunk_size import MAX_CHUNKS
from seamless_dask.graph.layers import ChunkLayer, array_expr
from seamless_dask.tiling.grid import ChunkTiles


@pytest.fixture(scope="module")
def scene(write_scene):
    return write_scene(200)


def cli(*args) -> int:
    return support.segment_cli(*args)


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    assert not any("Traceback" in line for line in err)
    return err[-1]


# ---- class 5: non-finite numbers


def test_infinite_input_pixels_are_nodata_and_never_reach_the_model():
    image = helpers.structured_image(3, 90, 110) * 255
    image[:, 10:20, 10:20] = np.inf  # every band: a nodata pixel
    image[1, 50:60, 50:60] = -np.inf  # one band: filled, the pixel keeps its data
    data = xr.DataArray(image, dims=("band", "y", "x"))
    labels = (
        sd.segment(data, helpers.FiniteOnly(), tile_size=32, overlap=8, num_classes=2)
        .compute()
        .values
    )
    assert (labels[10:20, 10:20] == 255).all()
    assert (labels[50:60, 50:60] != 255).all() and (labels != 255).sum() == 90 * 110 - 100


def test_a_model_returning_nan_fails_the_job_naming_the_tile_instead_of_giving_class_0():
    image = np.full((1, 70, 70), 100, np.float32)
    image[0, 40:45, 40:45] = 250
    with pytest.raises(
        ModelOutputError, match=r"non-finite values .* on 25 pixels with data of tile \d+"
    ):
        sd.segment(image, helpers.nan_model(), tile_size=32, overlap=8, num_classes=2)


def test_a_model_returning_nan_only_where_there_is_no_data_is_fine():
    image = np.full((1, 70, 70), 100, np.float32)
    # nodata: the model sees them filled with 100, so make them a nodata value
    image[0, :5, :5] = 250
    out = sd.segment(
        image, helpers.Brightness(), tile_size=32, overlap=8, nodata=250.0, num_classes=2
    )
    assert (out[:5, :5] == 255).all() and (out[5:] == 0).all()


def test_cli_model_returning_nan_exits_nonzero_with_one_line(scene, tmp_path, capsys):
    assert cli(scene, tmp_path / "o.tif", "--model", "seamless_dask.testing:nan_model") != 0
    assert "non-finite values" in last_line(capsys)
    assert not (tmp_path / "o.tif").exists()


# ---- class 6: silent wrong types


def test_complex_pixels_are_refused_with_the_parts_to_take(tmp_path, scene, capsys):
    data = xr.DataArray(np.ones((1, 40, 40), np.complex64), dims=("band", "y", "x"))
    with helpers.raises_mentioning(DimensionError, ["complex", "data.real", "abs(data)"]):
        sd.segment(data, helpers.Brightness(), num_classes=2)
    path = tmp_path / "complex.tif"
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=1, dtype="complex64",
                       crs="EPSG:32631", transform=from_origin(0, 0, 1, 1)) as dst:  # fmt: skip
        dst.write(np.full((1, 40, 40), 1 + 2j, np.complex64))
    assert cli(path, tmp_path / "o.tif", "--model", "seamless_dask.testing:brightness") == 2
    assert "complex" in last_line(capsys)


def test_cli_picks_a_variable_of_a_zarr_with_several(tmp_path, capsys):
    ds = xr.Dataset({
        "red": (("y", "x"), np.full((80, 80), 50, np.uint8)),
        "nir": (("y", "x"), np.full((80, 80), 220, np.uint8)),
    })  # fmt: skip
    ds.to_zarr(tmp_path / "in.zarr")
    assert (
        cli(tmp_path / "in.zarr", tmp_path / "a.tif", "--model", "seamless_dask.testing:brightness")
        == 2
    )
    assert "--variable" in last_line(capsys)
    assert (
        cli(
            tmp_path / "in.zarr",
            tmp_path / "a.tif",
            "--model",
            "seamless_dask.testing:brightness",
            "--variable",
            "nir",
        )
        == 0
    )
    with rasterio.open(tmp_path / "a.tif") as cog:
        assert (cog.read(1)[5:-5, 5:-5] == 1).all()  # nir is bright (red, 50, would be 0)


@pytest.mark.parametrize("value", ["1e9", "-1", "2.5"])
def test_a_nodata_value_the_dtype_cannot_hold_is_refused(scene, tmp_path, capsys, value):
    assert (
        cli(
            scene,
            tmp_path / "o.tif",
            "--model",
            "seamless_dask.testing:brightness",
            "--nodata",
            value,
        )
        == 2
    )
    line = last_line(capsys)
    assert "can never occur in uint8" in line and "0..255" in line
    with pytest.raises(OptionError, match="can never occur in uint8"):
        sd.segment(
            np.zeros((1, 20, 20), np.uint8),
            helpers.Brightness(),
            nodata=float(value),
            num_classes=2,
        )


# ---- class 7: user code that calls sys.exit


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("sys:exit", "called sys.exit(None)"),
        ("seamless_dask.testing:exiting_factory", "called sys.exit(3)"),
        ("seamless_dask.testing:exiting_model", "called sys.exit(7)"),
    ],
)
def test_user_code_calling_sys_exit_is_a_model_error_with_exit_status_1(
    scene, tmp_path, capsys, spec, words
):
    assert cli(scene, tmp_path / "o.tif", "--model", spec) == 1
    line = last_line(capsys)
    assert line.startswith("seamless-dask: error: ") and words in line
    assert not (tmp_path / "o.tif").exists()


def test_sys_exit_in_forward_on_a_distributed_worker_fails_the_job(scene, tmp_path, capsys):
    args = (
        scene,
        tmp_path / "o.tif",
        "--model",
        "seamless_dask.testing:exiting_model",
        "--num-classes",
        "2",
        "--no-progress",
    )
    assert main(["segment", *map(str, args), "--tile-size", "64", "--overlap", "16"]) == 1
    assert "called sys.exit(7)" in last_line(capsys)


# ---- class 10: real architectures on every scene


def monai_nets():
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    unet = nets.UNet(
        spatial_dims=2, in_channels=3, out_channels=3, channels=(8, 16, 32), strides=(2, 2)
    )
    basic = nets.BasicUNet(
        spatial_dims=2, in_channels=3, out_channels=2, features=(4, 4, 8, 8, 16, 4)
    )
    return {"UNet": unet.eval(), "BasicUNet": basic.eval()}


@pytest.mark.parametrize("name", ["UNet", "BasicUNet"])
@pytest.mark.parametrize("shape", [(3, 23, 300), (3, 90, 37), (3, 11, 13)])
def test_monai_networks_segment_thin_strips_and_small_scenes(name, shape):
    net = monai_nets()[name]
    image = helpers.structured_image(*shape)
    labels = sd.segment(image, net, tile_size=64, overlap=16)
    assert labels.shape == shape[1:]
    # a scene smaller than the tile is one padded tile: the model's own call on the padded image, cropped
    if max(shape[1:]) < 64:
        padded = np.zeros((1, 3, 64, 64), np.float32)
        y0, x0 = (64 - shape[1]) // 2, (64 - shape[2]) // 2
        padded[0, :, y0 : y0 + shape[1], x0 : x0 + shape[2]] = image
        with torch.no_grad():
            whole = net(torch.from_numpy(padded))[0, :, y0 : y0 + shape[1], x0 : x0 + shape[2]]
        np.testing.assert_array_equal(labels, whole.argmax(0).numpy())


def test_padding_uses_the_normalisation_mean_so_the_model_sees_zeros():
    seen = []

    class Records(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    image = np.full((2, 10, 40), 7, np.float32)
    # weights="trust": "trim" would also have a copy of the model measure its receptive field on a random tile
    sd.segment(
        image,
        Records(),
        tile_size=32,
        overlap=8,
        num_classes=2,
        normalize=((7, 7), (2, 2)),
        weights="trust",
    )
    assert all(tuple(x.shape[2:]) == (32, 32) for x in seen) and all((x == 0).all() for x in seen)


def test_tile_dataset_items_all_have_the_tile_size_and_collate():
    from torch.utils.data import DataLoader

    image = helpers.structured_image(3, 40, 150)
    labels = np.ones((40, 150), np.uint8)
    ds = sd.TileDataset(image, labels, tile_size=64, overlap=16)
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert batch["image"].shape == (len(ds), 3, 64, 64) and batch["label"].shape == (
        len(ds),
        64,
        64,
    )
    assert int(batch["valid"][0].sum()) == 40 * 64
    assert (batch["label"][0][~batch["valid"][0]] == -100).all() and (
        batch["label"][0][batch["valid"][0]] == 1
    ).all()


# ---- class 11: model files that run code as they load


def test_torch_export_files_are_refused_unless_trusted(tmp_path, scene, capsys):
    net = helpers.conv_net()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    with helpers.raises_mentioning(
        ModelSpecError, ["unpickles", "trust_model=True", "torch.jit.save"]
    ):
        sd.segment(np.zeros((3, 40, 40), np.float32), str(path))
    out = sd.segment(
        np.zeros((3, 40, 40), np.float32), str(path), trust_model=True, tile_size=16, overlap=4
    )
    assert out.shape == (40, 40)
    assert cli(scene, tmp_path / "o.tif", "--model", path) == 2
    assert "--trust-model" in last_line(capsys)


# ---- class 13: scenes too large to plan


def test_a_million_pixel_square_vrt_is_planned_lazily_and_a_window_runs_only_its_tiles(
    tmp_path, scene, capsys
):
    # 224,676 chunks of the plan at the default 2048 px
    vrt = huge_vrt(tmp_path / "huge.vrt", scene, 1_000_000)
    model = helpers.Counting(helpers.Brightness())
    if array_expr():  # that engine holds a hand-built graph whole: refused, with the way out
        with helpers.raises_mentioning(
            DimensionError,
            ["1000000 x 1000000 px", "224,676 chunks", "chunks=5120 fits", "window by window"],
        ):
            sd.segment(sd.open_raster(vrt), model, num_classes=2)
        assert (
            cli(
                vrt,
                tmp_path / "o.tif",
                "--model",
                "seamless_dask.testing:brightness",
                "--no-progress",
            )
            == 2
        )
        assert "window by window" in last_line(capsys)
        fits = sd.plan((1_000_000, 1_000_000), chunks=5120)  # what the refusal advises does fit
        assert len(fits.chunks[0]) * len(fits.chunks[1]) <= MAX_CHUNKS
        return
    labels = sd.segment(sd.open_raster(vrt), model, num_classes=2, tile_size=256, overlap=64)
    assert labels.data.numblocks == (474, 474) and not model.tiles  # the probe aside, nothing ran
    corner = labels[:1000, :1000].data
    culled = corner.__dask_graph__().cull({key for row in corner.__dask_keys__() for key in row})
    assert len(culled) < 20  # the window's own tasks are made, not the scene's
    window = labels[:1000, :1000].compute().values
    plan = sd.plan((1_000_000, 1_000_000), tile_size=256, overlap=64)
    # the window's chunk rows (and cols)
    inside = [j for j, start in enumerate(plan.y_bounds[:-1]) if start < 1000]
    # and those that owe them halos
    needed = sorted({i for j in inside for i in (j - 1, j) if i >= 0})
    assert model.tiles == sum(len(plan.owned(j, k)) for j in needed for k in needed) < 500
    # the same pixels near the origin: the same labels
    small = huge_vrt(tmp_path / "small.vrt", scene, 5000)
    expected = sd.segment(
        sd.open_raster(small), helpers.Brightness(), num_classes=2, tile_size=256, overlap=64
    )
    assert np.array_equal(window, expected[:1000, :1000].compute().values)


def test_a_300000_px_vrt_plans_without_listing_its_tiles_and_a_window_runs_alone(tmp_path, scene):
    vrt = huge_vrt(tmp_path / "big.vrt", scene, 300_000)
    # 2.4e6 tiles
    labels = sd.segment(sd.open_raster(vrt), helpers.Brightness(), num_classes=2, chunks=4096)
    graph = labels.data.__dask_graph__()
    tasks = [graph[key] for key in graph if keys.inference_key(key) == key]
    last = [task[-1] if isinstance(task, tuple) else task.args[-1] for task in tasks]
    assert len(tasks) == int(np.prod(labels.data.numblocks)) and all(
        isinstance(getattr(a, "value", a), ChunkTiles) for a in last
    )
    window = labels[:300, :300].compute().values
    pixels = sd.open_raster(vrt)[:, :1024, :1024].compute()  # the same pixels, in memory
    assert np.array_equal(
        window, sd.segment(pixels, helpers.Brightness(), num_classes=2)[:300, :300].compute().values
    )


@pytest.mark.skipif(
    array_expr(), reason="that engine holds a hand-built graph whole: nothing to make lazily"
)
def test_a_300000_px_write_makes_no_task_to_start_and_a_band_of_rows_at_a_time(tmp_path, scene):
    labels = sd.segment(
        sd.open_raster(huge_vrt(tmp_path / "big.vrt", scene, 300_000)), helpers.Brightness()
    )
    made = []
    for layer in labels.data.__dask_graph__().layers.values():
        if isinstance(layer, ChunkLayer):
            layer.make = lambda key, make=layer.make: made.append(key) or make(key)
    writes = sd.to_zarr(labels, tmp_path / "labels.zarr", compute=False)
    assert not made  # the store's template is metadata: xarray is not handed the graph
    plan = wave_plan.lazy_waves(writes.__dask_graph__(), writes.key, chunks_per_wave=4)
    rows, cols = labels.data.numblocks
    assert plan is not None and len(plan.by_row) == rows > 100 and plan.writes == rows * cols
    bands = iter(plan)
    handed = [next(bands) for _ in range(3)]  # a band of whole rows each, in order
    assert [{keys.chunk_row(write) for write in band.writes} for band in handed] == [{0}, {1}, {2}]
    assert [write[-1] for write in handed[0].writes] == list(range(cols))
    # Rows culled up to wave_plan.REACH past the waves handed out (they say what is held), each making its
    # neighbours' tasks too: some fifteen rows' worth of tasks, not the scene's 142.
    assert len(made) < 16 * 3 * cols < 3 * rows * cols / 8
    assert handed[0].hold and not handed[0].release and any(band.release for band in handed)


def huge_vrt(path, scene, size):
    """A ``size`` px square VRT with ``scene``'s first band in its top-left corner and zeros elsewhere."""
    path.write_text(f"""<VRTDataset rasterXSize="{size}" rasterYSize="{size}">
  <VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="0">{scene}</SourceFilename>
  <SourceBand>1</SourceBand></SimpleSource></VRTRasterBand></VRTDataset>""")
    return path


def test_a_zarr_variable_with_a_time_dim_is_not_taken_for_bands(tmp_path, capsys):
    ds = xr.Dataset({"t": (("time", "y", "x"), np.ones((2, 50, 50), "uint8"))})
    ds.to_zarr(tmp_path / "time.zarr")
    assert (
        cli(
            tmp_path / "time.zarr",
            tmp_path / "o.tif",
            "--model",
            "seamless_dask.testing:brightness",
        )
        == 2
    )
    line = last_line(capsys)
    assert "'time' is not a band dim" in line and "isel(time=0)" in line
    xr.Dataset({"t": (("channel", "y", "x"), np.ones((2, 50, 50), "uint8"))}).to_zarr(
        tmp_path / "ch.zarr"
    )
    assert sd.open_raster(tmp_path / "ch.zarr").dims == ("band", "y", "x")
