"""segment, TileBlender and TensorTiler are three ways to blend the same tiles: with an identity model
each gives the image back, on every geometry and every weight kind, and each gives the others'
numbers. The geometries are the peers' own round trips, in our words: MONAI's sliding-window tests
(tests/test_sliding_window_inference.py: images smaller than roi_size, overlap 0 .. roi - 1),
blended-tiling's and pytorch-toolbelt's split/merge round trips (tests/test_tiles.py in each), tiler's
identity merge (tests/test_merger.py) on sizes 1x1 to 64x31, tiles 1 to 33, overlaps 0, 1, t/2, t-1.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import seamless_dask as sd
from seamless_dask import TensorTiler, TileBlender, TileGrid, TileWeights
from seamless_dask import testing as helpers
from seamless_dask.tiling.weights import WEIGHTS_KINDS

SIZES = [(1, 1), (1, 7), (5, 1), (16, 100), (23, 17), (64, 31), (33, 33), (40, 64)]
TILES = [1, 2, 7, 16, 33]


def _overlaps(tile: int) -> list[int]:
    return sorted({0, min(1, tile - 1), tile // 2, tile - 1} - {tile})


GEOMETRIES = [(s, t, o) for s in SIZES for t in TILES for o in _overlaps(t)]


def _blender(image: np.ndarray, tile: int, overlap: int, weights: str) -> np.ndarray:
    """``image`` through TileBlender, tile by tile on segment's lattice, rows stitched back."""
    grid = TileGrid(image.shape[1:], tile, overlap)
    blender = TileBlender(image.shape[1:], grid, weights=weights)
    out = np.full(image.shape, np.nan)
    for window in blender.order:
        for part in blender.add(window, image[:, window.y, window.x]):
            out[:, part.rows, :] = part.block
    assert not blender.finish(), "every row was emitted by the last add"
    return out


def _covered(shape: tuple[int, int], tile: int, overlap: int, weights: str) -> bool:
    """Whether ``weights`` leave no pixel of the layout without a tile; where they would (a map
    zero at a tile's edge, "hann", with too little overlap), all three refuse it, with one
    WeightsError (tiler's test_merger.py::test_generate_window: a zero-edged window on tiles
    that do not overlap leaves every tenth pixel 0 there, silently).
    """
    grid = TileGrid(shape, tile, overlap)
    try:
        TileWeights(weights).check_cover((grid.y, grid.x))
    except sd.WeightsError as refusal:
        image = _image(shape, "float32")
        for attempt in (_tiler, _blender, _segment):
            with pytest.raises(sd.WeightsError, match="no tile gives weight to pixel"):
                attempt(image, tile, overlap, weights)
        assert weights == "hann", refusal
        return False
    return True


def _tiler(image: np.ndarray, tile: int, overlap: int, weights: str) -> np.ndarray:
    tiler = TensorTiler(image.shape[1:], tile, overlap, weights=weights)
    tensor = torch.from_numpy(image)[None]
    return tiler.merge(tiler.split(tensor))[0].numpy()


def _segment(image: np.ndarray, tile: int, overlap: int, weights: str) -> np.ndarray:
    return sd.segment(
        image, helpers.Identity(), tile_size=tile, overlap=overlap, weights=weights, output="logits"
    )


def _image(shape: tuple[int, int], dtype: str = "float64", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 5, (2, *shape)).astype(dtype)


@pytest.mark.parametrize("weights", WEIGHTS_KINDS)
@pytest.mark.parametrize(("shape", "tile", "overlap"), GEOMETRIES)
def test_the_torch_tiler_and_the_blender_give_the_image_back(shape, tile, overlap, weights):
    image = _image(shape)
    if not _covered(shape, tile, overlap, weights):
        return
    tiled = _tiler(image, tile, overlap, weights)
    assert tiled.dtype == np.float64
    np.testing.assert_allclose(tiled, image, rtol=1e-12, atol=1e-12)  # float64 kept at float64
    blended = _blender(image, tile, overlap, weights)  # float32 rows, as segment's probabilities
    np.testing.assert_allclose(blended, image, rtol=1e-6, atol=1e-6)


@given(
    height=st.integers(1, 64),
    width=st.integers(1, 64),
    tile=st.integers(1, 33),
    overlap_share=st.floats(0, 0.99),
    weights=st.sampled_from(WEIGHTS_KINDS),
)
def test_segment_the_blender_and_the_torch_tiler_agree_on_any_geometry(
    height, width, tile, overlap_share, weights
):
    overlap = int(overlap_share * tile)
    image = _image((height, width), "float32", seed=height * 97 + width)
    if not _covered((height, width), tile, overlap, weights):
        return
    ours = _segment(image, tile, overlap, weights)
    np.testing.assert_allclose(ours, image, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_tiler(image, tile, overlap, weights), ours, rtol=0, atol=1e-5)
    blended = _blender(image.astype(np.float64), tile, overlap, weights)
    np.testing.assert_allclose(blended, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("classes", [1, 2, 3, 5, 300])
def test_labels_are_numpys_argmax_with_the_first_class_winning_ties(classes):
    from seamless_dask.blend.decide import argmax_classes

    scores = np.random.default_rng(classes).integers(0, 3, (classes, 40, 30)).astype(np.float64)
    labels = argmax_classes(scores, classes)
    np.testing.assert_array_equal(labels, np.argmax(scores, axis=0))
    assert labels.dtype == (np.uint8 if classes <= 256 else np.uint16)
