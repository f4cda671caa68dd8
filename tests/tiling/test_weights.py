import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seamless_dask import TileGrid, TileWeights, WeightsError
from seamless_dask import testing as helpers
from seamless_dask.tiling.profiles import profile, triangle
from seamless_dask.tiling.weights import PROFILE_KINDS, as_weights


@pytest.mark.parametrize("kind", PROFILE_KINDS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 64, 255, 256])
def test_profiles_are_positive_and_peak_at_the_centre(kind, n):
    p = profile(kind, n)
    assert p.shape == (n,)
    inner = p
    if kind == "hann" and n > 1:  # tiler's window: zero on the first and last pixel only
        assert p[0] == p[-1] == 0
        inner = p[1:-1]
    assert inner.min(initial=1) > 0
    assert p.max() == pytest.approx(1.0) or (kind, n) == ("hann", 2)  # [0, 0]: no centre
    assert p[(n - 1) // 2] == pytest.approx(p.max())
    np.testing.assert_allclose(p, p[::-1], rtol=1e-12)  # no side of a tile is favoured


def test_trust_is_a_symmetric_tent_that_vanishes_one_pixel_outside_the_tile():
    p = profile("trust", 7)  # zero at -1 and 7, peak at 3
    np.testing.assert_allclose(p, [1 / 4, 2 / 4, 3 / 4, 1, 3 / 4, 2 / 4, 1 / 4])
    even = profile("trust", 8)
    np.testing.assert_allclose(np.diff(even[:4]), even[0])  # linear


def test_spline_uses_the_scipy_triangle():
    np.testing.assert_allclose(triangle(4), [0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(triangle(5), [1 / 3, 2 / 3, 1, 2 / 3, 1 / 3])
    p = profile("spline", 16)
    assert np.all(np.diff(p[:8]) > 0)  # rises smoothly to the centre


def test_gaussian_sigma_is_a_fraction_of_the_tile():
    p = profile("gaussian", 101, sigma=0.125)
    # one sigma (12.6 px) from the centre the weight is exp(-1/2)
    assert p[50 + 12] == pytest.approx(np.exp(-0.5 * (12 / 12.625) ** 2), rel=1e-6)


@st.composite
def awkward_grids(draw):
    tile = (draw(st.integers(1, 33)), draw(st.integers(1, 33)))
    overlap = tuple(draw(st.integers(0, t - 1)) for t in tile)
    shape = (draw(st.integers(1, 90)), draw(st.integers(1, 90)))
    return TileGrid(shape, tile, overlap)


@given(awkward_grids(), st.sampled_from([*PROFILE_KINDS, "trust-plain"]))
def test_i1_normalised_weights_are_a_partition_of_unity(grid, kind):
    weights = (
        TileWeights("trust", border_aware=False) if kind == "trust-plain" else TileWeights(kind)
    )
    total = np.zeros(grid.shape)
    per_tile = []
    for i, win in enumerate(grid.windows()):
        iy, ix = divmod(i, grid.x.n_tiles)
        overlap = (grid.y.overlap, grid.x.overlap)
        w = weights.for_tile(grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), overlap).astype(
            np.float64
        )
        assert w.shape == grid.tile_shape and (w.min() > 0 or kind in ("trim", "hann"))
        total[win.y, win.x] += w
        per_tile.append((win, w))
    if kind == "hann" and total.min() == 0:  # zero-edged: refused where the layout leaves a gap
        with pytest.raises(WeightsError, match="no tile gives weight to pixel"):
            weights.check_cover((grid.y, grid.x))
        return
    weights.check_cover((grid.y, grid.x))  # never refuses a layout it covers
    assert total.min() > 0  # every pixel is trusted by some tile
    unity = np.zeros(grid.shape)
    for win, w in per_tile:
        unity[win.y, win.x] += w / total[win.y, win.x]
    np.testing.assert_allclose(unity, 1.0, rtol=1e-12)


def test_border_aware_maps_keep_full_trust_on_image_borders_only():
    w = TileWeights("trust")
    inner = w.for_tile((8, 8))
    top_left = w.for_tile((8, 8), (True, False), (True, False))
    assert inner[0, 0] < 0.1 and top_left[0, 0] == pytest.approx(1.0)
    assert top_left[-1, -1] == pytest.approx(inner[-1, -1])  # sides inside the image are unchanged
    assert (
        TileWeights("trust", border_aware=False).for_tile((8, 8), (True, True), (True, True))[0, 0]
        < 0.1
    )


def test_custom_array_weights():
    arr = np.outer(np.hanning(18)[1:-1], np.hanning(18)[1:-1])
    w = as_weights(arr)
    assert w.kind == "array"
    assert w.for_tile((16, 16)).shape == (16, 16)
    assert w.for_tile((4, 16)).shape == (4, 16)  # an image smaller than the tile takes the centre
    w.check_tile((16, 16))
    with pytest.raises(WeightsError, match=r"tile's shape \(32, 32\), got \(16, 16\)"):
        w.check_tile((32, 32))


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((4, 4)), ["positive somewhere", "np.maximum"]),
        (-np.ones((4, 4)), [">= 0", "-1.0 at (0, 0)"]),
        (np.pad(np.eye(3) + 0.0, 1), ["zero only around a box", "pixel (1, 2) is 0", "(1, 4)"]),
        (np.full((4, 4), np.nan), ["finite"]),
        (np.ones(4), ["2-D"]),
        ("cosine", ["unknown weights 'cosine'", "trust"]),
        (3, ["weights must be one of", "int"]),
    ],
)
def test_bad_weights_name_rule_value_and_fix(bad, words):
    with helpers.raises_mentioning(WeightsError, words):
        as_weights(bad)


def test_weights_tokenize_by_value():
    from dask.base import tokenize

    assert tokenize(TileWeights("spline")) == tokenize(TileWeights("spline"))
    assert tokenize(as_weights(np.ones((3, 3)))) != tokenize(
        as_weights(np.full((3, 3), 2.0) + np.eye(3))
    )


def test_trim_centres_abut_so_each_inner_pixel_takes_one_tile():
    grid = TileGrid((70, 53), 16, 6)
    total = np.zeros(grid.shape)
    for i, win in enumerate(grid.windows()):
        iy, ix = divmod(i, grid.x.n_tiles)
        w = TileWeights("trim").for_tile(
            grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), (6, 6)
        )
        assert set(np.unique(w)) <= {0.0, 1.0}
        total[win.y, win.x] += w
    assert total.min() >= 1  # covered everywhere, the image border included
    # before the flush last tiles start
    lattice = total[: grid.y.origins[-1] + 3, : grid.x.origins[-1] + 3]
    assert (lattice == 1).all()  # one tile per pixel on the lattice


def test_trim_must_be_border_aware():
    with helpers.raises_mentioning(WeightsError, ["trim", "border_aware=False"]):
        TileWeights("trim", border_aware=False)


@pytest.mark.parametrize("kind", [*PROFILE_KINDS, "array"])
@pytest.mark.parametrize(
    "edges", [((False, False), (False, False)), ((True, False), (False, True))]
)
def test_support_is_the_non_zero_box_of_the_map_and_flat_only_where_it_is_all_ones(kind, edges):
    rng = np.random.default_rng(1)
    weights = TileWeights(kind, array=rng.random((16, 12)) + 0.1 if kind == "array" else None)
    w = weights.for_tile((16, 12), *edges, (6, 4))
    support = weights.support((16, 12), *edges, (6, 4))
    outside = w.copy()
    outside[support.rows, support.cols] = 0
    assert not outside.any()  # nothing non-zero outside the box
    np.testing.assert_array_equal(support.values, w[support.rows, support.cols])
    assert support.flat == bool(np.all(w[support.rows, support.cols] == 1))
    assert support.flat == (kind in ("trim", "constant"))


def test_trim_support_is_the_tile_minus_half_the_overlap_on_inner_sides():
    support = TileWeights("trim").support((256, 256), (True, False), (False, False), (64, 64))
    assert (support.rows, support.cols) == (slice(0, 224), slice(32, 224))


@given(st.integers(2, 40), st.integers(2, 40), st.data())
def test_reach_is_how_far_past_the_next_tiles_origin_a_tiles_weights_are_not_zero(ty, tx, data):
    overlap = (data.draw(st.integers(0, ty - 1)), data.draw(st.integers(0, tx - 1)))
    assert TileWeights("trim").reach((ty, tx), overlap) == (overlap[0] // 2, overlap[1] // 2)
    assert TileWeights("trust").reach((ty, tx), overlap) == overlap
    array = np.ones((ty, tx))
    assert TileWeights("array", array=array).reach((ty, tx), overlap) == overlap
    for axis, lap in enumerate(
        overlap
    ):  # a trim tile's last non-zero pixel is `reach` past the next one's origin
        shape, laps = (ty, tx), [0, 0]
        laps[axis] = lap
        weights = TileWeights("trim").for_tile(shape, overlap=tuple(laps)).sum(axis=1 - axis)
        last = int(np.flatnonzero(weights)[-1])
        assert last + 1 - (shape[axis] - lap) == TileWeights("trim").reach(shape, overlap)[axis]


@pytest.mark.parametrize("kind", ["trim", "trust", "spline", "gaussian", "constant"])
@pytest.mark.parametrize(
    ("tile", "overlap"), [((64, 64), (0, 0)), ((64, 48), (9, 7)), ((33, 33), (32, 1))]
)
def test_the_margins_a_map_leaves_untrusted_are_the_registrys_one_rule(kind, tile, overlap):
    """The receptive-field check and the halo strips read one rule: trim trusts a tile from
    overlap // 2 of its low edge to (overlap + 1) // 2 of its high edge, so it reaches overlap // 2
    past the next tile's origin; the other maps trust it all and reach the whole overlap.
    """
    weights = TileWeights(kind)
    expected = (overlap[0] // 2, overlap[1] // 2) if kind == "trim" else (0, 0)
    assert weights.margins(tile, overlap) == expected
    assert weights.reach(tile, overlap) == (expected if kind == "trim" else overlap)
