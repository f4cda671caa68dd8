"""Blending tiles computed outside seamless_dask: the lattice equals segment, custom layouts equal a direct sum."""

import numpy as np
import pytest
import shapely
import torch

import seamless_dask as sd
from seamless_dask import TileBlender, TileGrid, TilingError
from seamless_dask import testing as helpers
from seamless_dask.exceptions import ModelOutputError
from seamless_dask.tiling.weights import as_weights

NET = helpers.conv_net(bands=2, classes=3)


def predict(image, window):
    with torch.no_grad():
        return NET(torch.from_numpy(image[None, :, window.y, window.x])).softmax(1)[0].numpy()


def stitch(rows, shape, classes=None):
    out = np.full(((classes,) if classes else ()) + shape, np.nan, np.float32)
    covered = np.zeros(shape[0], int)
    for part in rows:
        out[..., part.rows, :] = part.block
        covered[part.rows] += 1
    assert (covered == 1).all()  # every row emitted exactly once
    return out


@pytest.mark.parametrize("weights", ["trim", "trust", "gaussian"])
def test_on_the_lattice_the_rows_equal_segment(weights):
    image = helpers.structured_image(2, 90, 77)
    grid = TileGrid((90, 77), 24, 8)
    blender = TileBlender((90, 77), grid, weights=weights)
    rows = list(blender.feed((w, predict(image, w)) for w in blender.order))
    expected = sd.segment(
        image, NET, tile_size=24, overlap=8, weights=weights, output="probabilities"
    )
    # batch of 1 vs many
    np.testing.assert_allclose(stitch(rows, (90, 77), 3), expected, atol=5e-6, rtol=0)
    assert blender.max_open_rows <= 24 + 16  # rows in flight: about one tile row, never the image
    labels = TileBlender((90, 77), grid, weights=weights, output="labels")
    labelled = stitch(list(labels.feed((w, predict(image, w)) for w in grid.windows())), (90, 77))
    assert (
        labelled == sd.segment(image, NET, tile_size=24, overlap=8, weights=weights)
    ).mean() > 0.999


def test_a_custom_layout_of_mixed_sizes_in_any_order_equals_a_direct_weighted_sum():
    rng = np.random.default_rng(0)
    shape = (70, 60)
    boxes = [
        shapely.box(x, y, min(x + 30, 60), min(y + 25, 70))
        for y in (0, 20, 45)
        for x in (0, 25, 40)
    ]
    boxes.append(shapely.box(10, 10, 50, 50))  # a big tile in the middle
    preds = {
        b.bounds: rng.random((2, int(b.bounds[3] - b.bounds[1]), int(b.bounds[2] - b.bounds[0])))
        for b in boxes
    }
    expected_sum, expected_w = np.zeros((2, *shape)), np.zeros(shape)
    weights = as_weights("trust")
    for b in boxes:
        x0, y0, x1, y1 = (int(v) for v in b.bounds)
        w = weights.for_tile((y1 - y0, x1 - x0), (y0 == 0, y1 == 70), (x0 == 0, x1 == 60))
        expected_sum[:, y0:y1, x0:x1] += preds[b.bounds] * w
        expected_w[y0:y1, x0:x1] += w
    blender = TileBlender(shape, boxes, weights="trust")
    shuffled = [boxes[i] for i in rng.permutation(len(boxes))]
    out = stitch(list(blender.feed((b, preds[b.bounds]) for b in shuffled)), shape, 2)
    np.testing.assert_allclose(out, expected_sum / expected_w, rtol=1e-6)


def test_rows_are_given_back_as_soon_as_no_tile_can_touch_them():
    grid = TileGrid((100, 50), 20, 5)
    blender = TileBlender((100, 50), grid)
    first_row = [w for w in blender.order if w.y.start == 0]
    emitted = [part for w in first_row for part in blender.add(w, np.ones((1, 20, 20)))]
    # the next tile row starts at 15
    assert [(p.rows.start, p.rows.stop) for p in emitted] == [(0, 15)]


def test_gaps_duplicates_foreign_windows_bad_shapes_and_nan_are_refused():
    with pytest.raises(TilingError, match=r"pixel \(10, 0\)"):
        list(
            TileBlender((20, 10), [(slice(0, 10), slice(0, 10))]).feed(
                [((slice(0, 10), slice(0, 10)), np.ones((1, 10, 10)))]
            )
        )
    blender = TileBlender((20, 10), [(slice(0, 10), slice(0, 10)), (slice(10, 20), slice(0, 10))])
    with pytest.raises(TilingError, match="not a tile of this layout"):
        blender.add((slice(0, 5), slice(0, 5)), np.ones((1, 5, 5)))
    with pytest.raises(ModelOutputError, match=r"expected \(classes, 10, 10\)"):
        blender.add((slice(0, 10), slice(0, 10)), np.ones((1, 10, 9)))
    with pytest.raises(ModelOutputError, match="NaN"):
        blender.add((slice(0, 10), slice(0, 10)), np.full((1, 10, 10), np.nan))
    blender.add((slice(0, 10), slice(0, 10)), np.ones((1, 10, 10)))
    with pytest.raises(TilingError, match="added twice"):
        blender.add((slice(0, 10), slice(0, 10)), np.ones((1, 10, 10)))
    with pytest.raises(TilingError, match="never added"):
        blender.finish()
    with pytest.raises(TilingError, match="outside the image"):
        TileBlender((20, 10), [(slice(0, 30), slice(0, 10))])
