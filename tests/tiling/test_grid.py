import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_dask import DimensionError, TileGrid, TilingError
from seamless_dask import testing as helpers
from seamless_dask.tiling.grid import AxisTiling


@st.composite
def grids(draw):
    tile = draw(st.integers(1, 40))
    overlap = draw(st.integers(0, tile - 1))
    size = draw(st.integers(1, 200))
    return size, tile, overlap


@given(grids())
def test_axis_tiles_cover_every_pixel_inside_the_image(case):
    size, tile, overlap = case
    axis = AxisTiling.build(size, tile, overlap)
    covered = np.zeros(size, int)
    for origin in axis.origins:
        assert origin >= 0 and origin + axis.tile <= size
        covered[origin : origin + axis.tile] += 1
    assert covered.min() >= 1
    assert list(axis.origins) == sorted(set(axis.origins))
    assert axis.tile == min(tile, size)


@given(grids())
def test_tiles_follow_one_lattice_and_the_last_is_flush(case):
    size, tile, overlap = case
    axis = AxisTiling.build(size, tile, overlap)
    if size <= tile:
        assert axis.origins == (0,)
        return
    stride = tile - overlap
    assert all(o % stride == 0 for o in axis.origins[:-1])
    assert axis.origins[-1] == size - tile
    # neighbours overlap by at least the requested overlap: seams get blended, never butted
    assert all(b - a <= stride for a, b in itertools.pairwise(axis.origins))


@given(grids(), st.integers(1, 300))
def test_chunk_plan_gives_each_tile_one_owner_whose_extended_window_holds_it(case, target):
    size, tile, overlap = case
    grid = TileGrid((size, 7), tile, overlap)
    plan = grid.plan_chunks((target, 7))
    bounds, ext = plan.y_bounds, plan.extensions[0]
    assert bounds[0] == 0 and bounds[-1] == size
    stride = grid.y.stride
    assert all(b % stride == 0 for b in bounds[1:-1])
    sizes = plan.chunks[0]
    if len(sizes) > 1:
        assert min(sizes) >= grid.y.overlap  # a halo strip lands in one neighbour
    owners = [plan.owner(i)[0] for i in range(grid.n_tiles) if i % grid.x.n_tiles == 0]
    for iy, origin in enumerate(grid.y.origins):
        j = owners[iy]
        assert bounds[j] <= origin < bounds[j + 1]
        assert origin + grid.y.tile <= bounds[j + 1] + ext[j]
    owned = [i for j in range(len(sizes)) for i in plan.owned(j, 0)]
    assert sorted(owned) == list(range(grid.n_tiles))


def test_chunk_plan_honours_the_target_as_closely_as_the_lattice_allows():
    plan = TileGrid((10_000, 10_000), 256, 64).plan_chunks(2048)
    inner = set(plan.chunks[0][:-1])
    assert inner == {192 * 11}  # 2112, the multiple of the stride nearest 2048
    assert plan.chunks[0][-1] >= 256


def test_window_and_tiles_touching_agree_with_brute_force():
    grid = TileGrid((101, 67), (32, 24), (8, 5))
    ys, xs = slice(30, 41), slice(0, 3)
    expected = [
        i
        for i, w in enumerate(grid.windows())
        if w.y.start < ys.stop
        and w.y.stop > ys.start
        and w.x.start < xs.stop
        and w.x.stop > xs.start
    ]
    assert grid.tiles_touching(ys, xs) == expected
    assert grid.window(0) == (slice(0, 32), slice(0, 24))
    assert grid.window(grid.n_tiles - 1) == (slice(69, 101), slice(43, 67))


def test_image_smaller_than_a_tile_has_one_tile_of_the_image_size():
    grid = TileGrid((5, 300), 64, 16)
    assert grid.tile_shape == (5, 64)
    assert grid.grid_shape[0] == 1


def test_grid_is_a_value_and_tokenizes_deterministically():
    from dask.base import tokenize

    assert TileGrid((10, 10), 4, 1) == TileGrid((10, 10), (4, 4), (1, 1))
    assert tokenize(TileGrid((10, 10), 4, 1)) == tokenize(TileGrid((10, 10), 4, 1))
    assert tokenize(TileGrid((10, 10), 4, 1)) != tokenize(TileGrid((10, 10), 4, 2))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (
            {"tile": 64, "overlap": 64},
            ["overlap must be smaller than tile_size", "overlap=64", "<= 63"],
        ),
        ({"tile": 64, "overlap": 100}, ["overlap must be smaller", "overlap=100"]),
        ({"tile": 0, "overlap": 0}, ["tile_size must be a positive", "(0, 0)"]),
        ({"tile": (64, -3), "overlap": 0}, ["tile_size must be a positive", "(64, -3)"]),
        ({"tile": 64, "overlap": -2}, ["overlap must be >= 0", "(-2, -2)", "overlap=0"]),
        ({"tile": 64.5, "overlap": 8}, ["whole pixels", "64.5"]),
        ({"tile": (64, 64, 64), "overlap": 8}, ["2 ints (y, x)", "(64, 64, 64)"]),
        ({"tile": "big", "overlap": 8}, ["tile_size", "'big'"]),
    ],
)
def test_bad_tiling_names_rule_value_and_fix(kwargs, words):
    with helpers.raises_mentioning(TilingError, words):
        TileGrid((100, 100), **kwargs)


def test_empty_image_is_a_clear_error():
    with pytest.raises(DimensionError, match=r"empty.*\(0, 100\)"):
        TileGrid((0, 100), 16, 4)
