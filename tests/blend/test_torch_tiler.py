"""Torch-native split and merge: the tiles and blend of segment, as differentiable tensor ops on any device."""

import numpy as np
import pytest
import torch

import seamless_dask as sd
from seamless_dask import TensorTiler, TileGrid, draw_tile_borders
from seamless_dask import testing as helpers


@pytest.mark.parametrize("weights", ["trim", "trust", "spline", "gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((83, 71), 16, 6), ((64, 96), (32, 24), (8, 12)), ((20, 9), 32, 4)],
)
def test_merge_of_the_model_on_split_tiles_equals_segment(weights, shape, tile, overlap):
    net = helpers.conv_net(bands=2, classes=3)
    image = helpers.structured_image(2, *shape)
    tiler = TensorTiler(shape, tile, overlap, weights=weights)
    with torch.no_grad():
        merged = tiler.merge(net(tiler.split(torch.from_numpy(image)[None])).softmax(dim=1))[0]
    expected = sd.segment(
        image, net, tile_size=tile, overlap=overlap, weights=weights, output="probabilities"
    )
    np.testing.assert_allclose(merged.numpy(), expected, atol=2e-6, rtol=0)
    labels = sd.segment(image, net, tile_size=tile, overlap=overlap, weights=weights)
    assert (merged.argmax(0).numpy() == labels).mean() > 0.999  # ties apart, the same classes


def test_a_batch_is_split_image_by_image_and_merged_back_in_order():
    tiler = TensorTiler((50, 40), 16, 4)
    x = torch.rand(3, 2, 50, 40)
    tiles = tiler.split(x)
    assert tiles.shape == (3 * tiler.n_tiles, 2, 16, 16)
    grid = TileGrid((50, 40), 16, 4)
    window = grid.window(5)
    # image 1, tile 5
    torch.testing.assert_close(tiles[tiler.n_tiles + 5], x[1, :, window.y, window.x])
    # every weighting of the same value is that value
    torch.testing.assert_close(tiler.merge(tiles), x)
    # blended-tiling's forward: blend overlaps, split again
    torch.testing.assert_close(tiler(tiles), tiles)


def test_split_and_merge_are_differentiable_gradcheck():
    tiler = TensorTiler((11, 9), (5, 4), (2, 1), weights="trust")
    x = torch.rand(2, 1, 11, 9, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(tiler.n_tiles * 2, 1, 5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: tiler.merge(tiler.split(t) * scale), (x,))
    tiles = torch.rand(tiler.n_tiles, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tiler.merge, (tiles,))


def test_a_training_step_through_split_model_merge_updates_the_model():
    net = helpers.conv_net(bands=2, classes=3)
    tiler = TensorTiler((40, 40), 16, 4)
    x, target = torch.rand(2, 2, 40, 40), torch.randint(0, 3, (2, 40, 40))
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.nll_loss(tiler.merge(net(tiler.split(x)).log_softmax(1)), target)
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_the_tiler_scripts_with_torchscript_and_gives_the_same_result():
    tiler = TensorTiler((37, 45), 16, 5, weights="trust")
    scripted = torch.jit.script(tiler)
    x = torch.rand(2, 3, 37, 45)
    torch.testing.assert_close(scripted.split(x), tiler.split(x))
    torch.testing.assert_close(scripted.merge(tiler.split(x)), tiler.merge(tiler.split(x)))


def test_wrong_shapes_are_refused_with_the_rule():
    tiler = TensorTiler((40, 40), 16, 4)
    with pytest.raises(ValueError, match=r"\(N, C, 40, 40\)"):
        tiler.split(torch.rand(1, 3, 41, 40))
    with pytest.raises(ValueError, match=r"every tile of split"):
        tiler.merge(torch.rand(tiler.n_tiles + 1, 3, 16, 16))


@pytest.mark.gpu
def test_a_cuda_tensor_is_split_and_merged_on_the_gpu():
    tiler = TensorTiler((300, 200), 64, 16, weights="trust").cuda()
    x = torch.rand(2, 3, 300, 200, device="cuda")
    tiles = tiler.split(x)
    assert tiles.is_cuda
    merged = tiler.merge(tiles)
    assert merged.is_cuda
    torch.testing.assert_close(merged, x)


def test_tile_borders_and_trusted_cores_are_drawn_on_numpy_and_torch_alike():
    grid = TileGrid((60, 60), 32, 8)  # origins 0, 24, 28: trim cores 0-28, 28-52, 32-60
    image = np.zeros((3, 60, 60), np.float32)
    drawn = draw_tile_borders(image, grid, width=1)
    assert image.max() == 0  # a copy
    assert drawn[:, 0, 10].tolist() == [1.0, 0.0, 0.0]  # tile outline
    assert drawn[:, 27, 10].tolist() == [1.0, 1.0, 0.0]  # bottom of the first tile's trusted core
    assert drawn[:, 30, 30].tolist() == [0.0, 0.0, 0.0]
    tensor = draw_tile_borders(torch.zeros(2, 3, 60, 60), grid, width=1)
    np.testing.assert_array_equal(tensor[1].numpy(), drawn)
    single = draw_tile_borders(np.zeros((1, 60, 60)), grid, core_color=None)
    assert single[0, 27, 10] == 0 and single[0, 0, 10] == pytest.approx(1 / 3)


def test_the_quicklook_shows_the_tiles_and_their_cores(tmp_path):
    from PIL import Image

    labels = np.zeros((60, 60), np.uint8)
    plain = np.asarray(Image.open(sd.quicklook(labels, tmp_path / "plain.png")))
    drawn = np.asarray(
        Image.open(sd.quicklook(labels, tmp_path / "tiles.png", tiles=TileGrid((60, 60), 32, 8)))
    )
    assert plain.shape == drawn.shape
    red = (drawn[..., 0] == 255) & (drawn[..., 1] == 0) & (drawn[..., 2] == 0)
    yellow = (drawn[..., 0] == 255) & (drawn[..., 1] == 255) & (drawn[..., 2] == 0)
    assert red.sum() > 0 and yellow.sum() > 0
    assert not ((plain[..., 0] == 255) & (plain[..., 1] == 0) & (plain[..., 2] == 0)).any()
