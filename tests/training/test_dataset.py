"""TileDataset: training tiles on segment's own grid, read lazily, never written to disk."""

import dask.array as da
import numpy as np
import pytest
import rioxarray  # noqa: F401
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import DimensionError, OptionError, TileDataset, TileGrid
from seamless_dask import testing as helpers
from seamless_dask.demo.scene import write_scene_geotiff
from seamless_dask.training.dataset import IGNORE_INDEX


def test_items_are_the_tiles_segment_runs_in_order_with_their_pixels():
    image = helpers.structured_image(3, 100, 90).astype(np.float32)
    data = TileDataset(image, tile_size=32, overlap=8)
    grid = TileGrid((100, 90), 32, 8)
    assert len(data) == grid.n_tiles == 16
    for i, win in enumerate(grid.windows()):
        item = data[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
        np.testing.assert_array_equal(item["image"].numpy(), image[:, win.y, win.x])
        assert item["window"] == (win.y.start, win.x.start) and item["valid"].all()
    assert data[-1]["tile"] == grid.n_tiles - 1
    with pytest.raises(IndexError, match="out of range"):
        data[len(data)]


def test_labels_come_aligned_and_nodata_becomes_the_ignore_index():
    image = helpers.structured_image(3, 64, 64)
    image[:, :10, :] = 0  # a nodata band across the top
    labels = (np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8)
    labels[40:, 40:] = 255  # unlabelled
    data = TileDataset(image, labels, tile_size=32, nodata=0, label_nodata=255)
    first, last = data[0], data[len(data) - 1]
    assert first["label"].dtype == torch.int64
    assert (first["label"][:10] == IGNORE_INDEX).all() and not first["valid"][:10].any()
    np.testing.assert_array_equal(first["label"][10:].numpy(), labels[10:32, :32])
    assert (last["label"][8:, 8:] == IGNORE_INDEX).all()  # rows/cols 40: of the last tile (32:64)
    # nodata pixels are filled as segment fills them: from the nearest valid pixel of the same tile
    np.testing.assert_array_equal(first["image"][:, 0].numpy(), first["image"][:, 10].numpy())


def test_normalisation_is_segments_own():
    image = helpers.structured_image(3, 40, 40)
    data = TileDataset(image, tile_size=40, normalize=((100, 110, 120), (50, 50, 50)))
    mean = np.array([100, 110, 120], np.float32).reshape(3, 1, 1)
    np.testing.assert_allclose(
        data[0]["image"].numpy(), (image.astype(np.float32) - mean) / 50, rtol=1e-6
    )
    with helpers.raises_mentioning(OptionError, ["normalize", "2 values", "3 bands"]):
        TileDataset(image, normalize=((1, 2), (1, 2)))


def test_a_lazy_geotiff_streams_through_a_dataloader_with_worker_processes(tmp_path):
    path = write_scene_geotiff(tmp_path / "scene.tif", size=300)
    scene = sd.open_raster(path)
    labels = (scene.isel(band=0) > 100).astype("uint8").rio.write_nodata(None)
    data = TileDataset(str(path), labels.compute(), tile_size=64, overlap=16)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2, shuffle=False)
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 64, 64) and batch["label"].shape[1:] == (64, 64)
        seen += len(batch["image"])
    assert seen == len(data) == TileGrid((300, 300), 64, 16).n_tiles
    assert len(data.with_data()) == len(data)  # every tile of this scene holds some data
    kept = data.with_data(0.9)
    assert 0 < len(kept) < len(data)  # tiles across the tilted nodata border go
    assert all(kept[i]["valid"].float().mean() >= 0.9 for i in range(len(kept)))


def test_several_scenes_and_dask_inputs():
    a = da.from_array(helpers.structured_image(3, 50, 50), chunks=(3, 20, 20))
    b = helpers.structured_image(3, 70, 30)
    data = TileDataset([a, b], tile_size=25)
    assert len(data) == TileGrid((50, 50), 25, 0).n_tiles + TileGrid((70, 30), 25, 0).n_tiles
    scene, win = data.window(len(data) - 1)
    assert scene == 1
    np.testing.assert_array_equal(data[len(data) - 1]["image"].numpy(), b[:, win.y, win.x])


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (
            lambda: TileDataset(np.zeros((3, 40, 40)), np.zeros((30, 40))),
            DimensionError,
            ["(30, 40)", "(40, 40)"],
        ),
        (
            lambda: TileDataset(np.zeros((3, 40, 40)), np.zeros((2, 40, 40))),
            DimensionError,
            ["one band", "2 bands"],
        ),
        (
            lambda: TileDataset([np.zeros((3, 8, 8))] * 2, [np.zeros((8, 8))]),
            OptionError,
            ["one raster per image"],
        ),
        (lambda: TileDataset(np.zeros((3, 40, 40)), tile_size=0), Exception, ["tile_size"]),
        (
            lambda: TileDataset(np.zeros((3, 8, 8))).with_data(1.5),
            OptionError,
            ["min_valid", "1.5"],
        ),
        (lambda: TileDataset([]), OptionError, ["at least one image"]),
    ],
)
def test_bad_dataset_inputs_name_rule_value_and_fix(make, error, words):
    with helpers.raises_mentioning(error, words):
        make()


def test_misaligned_georeferenced_labels_are_refused(tmp_path):
    scene = sd.open_raster(write_scene_geotiff(tmp_path / "scene.tif", size=64))
    labels = (scene.isel(band=0) > 0).astype("uint8")
    shifted = labels.assign_coords(x=labels.x + 10.0)
    with helpers.raises_mentioning(DimensionError, ["not on images[0]'s grid", "reproject_match"]):
        TileDataset(scene, shifted)
    assert isinstance(TileDataset(scene, labels)[0]["label"], torch.Tensor)


def test_xarray_in_memory_two_dimensional_image():
    image = xr.DataArray(helpers.structured_image(1, 40, 40)[0], dims=("y", "x"))
    assert TileDataset(image, tile_size=16)[0]["image"].shape == (1, 16, 16)


def test_with_data_drops_tiles_without_data():
    image = helpers.structured_image(3, 64, 64) + 1
    image[:, :32] = 0
    data = TileDataset(image, tile_size=32, nodata=0)
    kept = data.with_data()
    assert (len(data), len(kept)) == (4, 2)
    assert [kept[i]["window"] for i in range(2)] == [(32, 0), (32, 32)]
