"""Random training tiles: seeded windows anywhere, weighted by data or by class, sharded like any dataset."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from seamless_dask import OptionError, RandomTiles, TileDataset, TileGrid


def test_draws_are_seeded_by_epoch_and_index_and_start_anywhere_in_bounds():
    image = np.random.default_rng(0).integers(1, 255, (3, 300, 250), dtype=np.uint8)
    tiles = RandomTiles(TileDataset(image, tile_size=64, overlap=16), n=200, seed=3)
    windows = [tiles.window(i) for i in range(200)]
    # a draw depends on (seed, epoch, index) only
    assert windows == [tiles.window(i) for i in range(200)]
    origins = TileGrid((300, 250), 64, 16)
    on_lattice = sum(
        w.y.start in origins.y.origins and w.x.start in origins.x.origins for _, w in windows
    )
    assert on_lattice < 50  # not only lattice windows
    assert all(0 <= w.y.start <= 300 - 64 and 0 <= w.x.start <= 250 - 64 for _, w in windows)
    item = tiles[5]
    np.testing.assert_array_equal(item["image"].numpy(), image[:, windows[5][1].y, windows[5][1].x])
    tiles.set_epoch(1)
    assert [tiles.window(i) for i in range(200)] != windows


def test_tiles_are_always_the_requested_size_so_the_default_collate_works():
    small, big = np.ones((2, 40, 30), np.float32), np.ones((2, 200, 200), np.float32)
    tiles = RandomTiles(TileDataset([small, big], tile_size=64), n=300, seed=0)
    batch = next(iter(DataLoader(tiles, batch_size=300)))
    assert batch["image"].shape == (300, 2, 64, 64)
    assert {int(s) for s in batch["scene"]} == {0, 1}


def test_worker_processes_and_distributed_ranks_see_the_same_draws():
    image = np.random.default_rng(1).random((1, 200, 200)).astype(np.float32)
    tiles = RandomTiles(TileDataset(image, tile_size=32), n=24, seed=7)
    direct = [tiles[i]["window"] for i in range(24)]
    loaded = [
        w
        for batch in DataLoader(tiles, batch_size=4, num_workers=2)
        for w in zip(*batch["window"], strict=True)
    ]
    assert [tuple(int(v) for v in w) for w in loaded] == [tuple(w) for w in direct]
    shards = [
        list(DistributedSampler(tiles, num_replicas=2, rank=r, shuffle=True, seed=1))
        for r in (0, 1)
    ]
    assert sorted(shards[0] + shards[1]) == list(range(24)) and not set(shards[0]) & set(shards[1])


def test_weight_valid_draws_where_the_data_is():
    image = np.full((1, 200, 400), 5, np.uint8)
    image[:, :, :200] = 0  # the left half is nodata
    data = TileDataset(image, tile_size=32, nodata=0)
    uniform = RandomTiles(data, n=300, seed=0)
    valid = RandomTiles(data, n=300, seed=0, weight="valid")
    left = lambda tiles: np.mean([tiles.window(i)[1].x.stop <= 200 for i in range(300)])  # noqa: E731
    assert left(uniform) > 0.3 and left(valid) == 0


def test_weight_classes_draws_a_rare_class_as_often_as_a_common_one():
    image = np.ones((1, 400, 400), np.float32)
    labels = np.zeros((400, 400), np.uint8)
    labels[300:340, 300:340] = 1  # 1% of the scene
    data = TileDataset(image, labels, tile_size=32, label_nodata=None, nodata=None)
    rare = lambda tiles: np.mean([(tiles[i]["label"] == 1).any().item() for i in range(200)])  # noqa: E731
    assert rare(RandomTiles(data, n=200, seed=0)) < 0.1
    assert rare(RandomTiles(data, n=200, seed=0, weight="classes")) > 0.3


def test_bad_options_are_refused():
    data = TileDataset(np.ones((1, 50, 50)), tile_size=16)
    with pytest.raises(OptionError, match="give the TileDataset labels"):
        RandomTiles(data, n=5, weight="classes")
    with pytest.raises(OptionError, match="n="):
        RandomTiles(data, n=0)
    assert isinstance(RandomTiles(data, n=2)[0]["image"], torch.Tensor)
