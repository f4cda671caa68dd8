"""The receptive field, measured; segment warns when "trim" is not exact, and is exact when it says so."""

import typing
import warnings

import numpy as np
import pytest
import torch
from monai.networks.nets import BasicUNet

import seamless_dask as sd
from seamless_dask import ReceptiveFieldWarning, receptive_field
from seamless_dask import testing as helpers
from seamless_dask.model import receptive
from seamless_dask.model.receptive import ReceptiveFieldError


def conv_stack(kernels, bands=2, classes=3):
    torch.manual_seed(0)
    layers, channels = [], bands
    for i, k in enumerate(kernels):
        out = classes if i == len(kernels) - 1 else 8
        layers += [torch.nn.Conv2d(channels, out, k, padding=k // 2), torch.nn.Tanh()]
        channels = out
    return torch.nn.Sequential(*layers[:-1]).eval()


@pytest.mark.parametrize(("kernels", "radius"), [([3], 1), ([5, 3], 3), ([7, 7, 3], 7)])
def test_the_measured_field_of_a_conv_stack_is_the_sum_of_its_half_kernels(kernels, radius):
    field = receptive_field(conv_stack(kernels), bands=2)
    assert field.radius == (radius, radius) and field.bounded
    assert field.exact_overlap == (2 * radius, 2 * radius)
    assert 0 < field.effective[0] <= radius


def test_a_model_that_sees_everything_is_reported_unbounded():
    class Global(torch.nn.Module):
        def forward(self, x):
            return x[:, :1] + x.mean(dim=(2, 3), keepdim=True)[:, :1]

    field = receptive_field(Global(), bands=1, size=32, max_size=64)
    assert not field.bounded and field.probe == (64, 64)


def test_trim_with_the_measured_overlap_equals_whole_image_inference_and_a_short_one_warns():
    net = conv_stack([5, 5, 3])  # radius 5
    image = helpers.structured_image(2, 70, 90)
    with torch.no_grad():
        whole = net(torch.from_numpy(image)[None]).softmax(1)[0].numpy()
    with pytest.warns(ReceptiveFieldWarning, match=r"overlap=10 for whole-image results"):
        short = sd.segment(image, net, tile_size=32, overlap=4, output="probabilities")
    assert np.abs(short - whole).max() > 1e-4  # the warning is right: seams differ
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReceptiveFieldWarning)
        exact = sd.segment(image, net, tile_size=32, overlap=10, output="probabilities")
        # smooth weights: no promise, no warning
        sd.segment(image, net, tile_size=32, overlap=4, weights="trust")
    np.testing.assert_allclose(exact, whole, atol=1e-5)


def test_a_deep_monai_unet_at_a_small_tile_gets_the_advice_to_blend():
    net = BasicUNet(
        spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4)
    ).eval()
    with pytest.warns(ReceptiveFieldWarning, match="or more.*weights='gaussian'"):
        sd.segment(helpers.structured_image(1, 96, 96), net, tile_size=32, overlap=8)


class Callers(torch.nn.Module):
    """Records which instance each call reached, and whether it took a gradient of the input."""

    calls: typing.ClassVar[list[tuple[int, bool]]] = []

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        Callers.calls.append((id(self), x.requires_grad))
        return self.net(x)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_users_model_is_not_called_by_the_check(mode):
    net = getattr(Callers(conv_stack([5, 5, 3])), mode)()
    Callers.calls.clear()
    with pytest.warns(ReceptiveFieldWarning):
        sd.segment(helpers.structured_image(2, 70, 90), net, tile_size=32, overlap=4, num_classes=3)
    probes = [who for who, grad in Callers.calls if grad]
    tiles = [who for who, grad in Callers.calls if not grad]
    assert probes and id(net) not in probes  # the check measured a copy
    # a module ready to run (eval, on the device) runs as it is; one in training runs as a copy
    assert (id(net) in tiles) == (mode == "eval") and net.training == (mode == "train")
    counting = helpers.Counting(conv_stack([5, 5, 3]))
    with pytest.warns(ReceptiveFieldWarning):
        sd.segment(helpers.structured_image(2, 70, 90), counting, tile_size=32, overlap=4,
                   num_classes=3)  # fmt: skip
    assert counting.tiles == sd.TileGrid((70, 90), 32, 4).n_tiles  # the probe is not a tile


class FixedSize(torch.nn.Module):
    """A model that takes only its own tile size (as a ViT with a fixed patch grid does)."""

    def __init__(self, net, size):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x):
        if x.shape[-1] != self.size:
            raise ValueError(f"this model takes {self.size} px tiles, got {x.shape[-1]}")
        return self.net(x)


def test_the_check_probes_a_small_tile_first_and_the_tile_size_when_it_must():
    image = helpers.structured_image(2, 300, 300)
    with warnings.catch_warnings():
        # radius 3 inside margins of 8: no warning
        warnings.simplefilter("error", ReceptiveFieldWarning)
        sd.segment(image, conv_stack([7]), tile_size=128, overlap=16)
    field = receptive.check_overlap(conv_stack([7]), 2, (128, 128), (16, 16))
    # margins of 8: a 32 px probe settles it
    assert field.probe == (32, 32) and field.radius == (
        3,
        3,
    )
    # fails on the small probe: measured again at its tile size
    fixed = FixedSize(conv_stack([7]), 128)
    assert receptive.check_overlap(fixed, 2, (128, 128), (16, 16)).probe == (128, 128)
    with pytest.warns(ReceptiveFieldWarning, match=r"overlap=6 for whole-image results"):
        sd.segment(image, fixed, tile_size=128, overlap=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReceptiveFieldWarning)
        sd.segment(image, fixed, tile_size=128, overlap=16)


def test_a_model_whose_class_scores_cancel_is_measured_and_warned_about():
    """The demo's context model: its two class weights sum to zero, so the summed centre gradient was
    zero everywhere and the probe crashed (issue 32); the classes are now mixed with random weights.
    """
    from seamless_dask.demo import context_model

    field = sd.receptive_field(context_model(), bands=3)
    assert field.bounded and field.radius == (15, 15)
    scene = np.random.default_rng(0).integers(0, 255, (3, 256, 256)).astype("uint8")
    with pytest.warns(ReceptiveFieldWarning, match="reaches 15 x 15 px"):
        sd.segment(scene, context_model(), tile_size=128, overlap=8, normalize=(0, 255))


def test_a_probe_that_finds_no_gradient_says_so():
    constant = torch.nn.Conv2d(1, 2, 3, padding=1)
    torch.nn.init.zeros_(constant.weight)
    with pytest.raises(ReceptiveFieldError, match=r"cannot be measured.*zero everywhere"):
        sd.receptive_field(constant, bands=1)
    with pytest.warns(ReceptiveFieldWarning, match="the overlap is not checked"):
        sd.segment(np.zeros((1, 128, 128), "float32"), constant, tile_size=64, overlap=8)


def test_the_field_is_measured_inside_inference_mode_too():
    net = conv_stack([5, 3])
    with torch.inference_mode():  # as in a user's own inference loop
        field = receptive_field(net, bands=2)
    assert field.radius == (3, 3) and field.bounded
