"""Several heads in one pass: ``segment(..., head={"out": "labels", "aux": "probabilities"})`` (or a
list of keys) blends every head of a model that returns a dict or a tuple with each tile run once,
into an ``xr.Dataset`` of one variable a head (a dict of arrays for numpy, dask and tensors), each
the same as segmenting that head alone.
"""

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers

TILES = {"tile_size": 32, "overlap": 8}


class TwoHeads(torch.nn.Module):
    """A segmentation head of 4 classes and an auxiliary one of 2 (torchvision's ``aux``), as a dict
    or a tuple.
    """

    def __init__(self, as_tuple=False, aux_stride=1):
        super().__init__()
        self.main = helpers.conv_net(bands=3, classes=4)
        self.aux = helpers.conv_net(bands=3, classes=2, seed=1)
        self.as_tuple, self.aux_stride = as_tuple, aux_stride

    def forward(self, x):
        main, aux = self.main(x), self.aux(x)[..., :: self.aux_stride, :: self.aux_stride]
        return (main, aux) if self.as_tuple else {"out": main, "aux": aux}


@pytest.fixture(scope="module")
def scene(write_scene):
    return sd.open_raster(write_scene(150), chunks=64)


def test_each_head_equals_segmenting_it_alone_and_each_tile_runs_once(scene):
    net = helpers.Counting(TwoHeads()).eval()
    both = sd.segment(scene, net, head={"out": "labels", "aux": "probabilities"}, **TILES)
    assert isinstance(both, xr.Dataset) and set(both) == {"out", "aux"}
    net.reset()
    computed = both.compute()  # one graph for both heads
    assert net.tiles == sd.TileGrid((150, 150), 32, 8).n_tiles
    alone = sd.segment(scene, net, **TILES).compute()
    np.testing.assert_array_equal(computed["out"].values, alone.values)  # nodata border included
    aux = sd.segment(scene, net, head="aux", output="probabilities", **TILES).compute()
    np.testing.assert_allclose(computed["aux"].values, aux.values, rtol=1e-6, equal_nan=True)
    # the scene's geo metadata on every variable
    assert computed["out"].rio.crs == scene.rio.crs and computed["out"].rio.nodata == 255
    assert computed["aux"].rio.transform() == scene.rio.transform()


def test_a_tuple_model_s_heads_by_index_on_numpy_dask_and_tensors():
    net = TwoHeads(as_tuple=True).eval()
    image = helpers.structured_image(3, 70, 60).astype(np.float32) / 255
    out = sd.segment(image, net, head=[0, 1], output="logits", **TILES)
    assert set(out) == {"head_0", "head_1"} and out["head_1"].shape == (2, 70, 60)
    np.testing.assert_allclose(
        out["head_1"], sd.segment(image, net, head=1, output="logits", **TILES), rtol=1e-6
    )
    lazy = sd.segment(da.from_array(image, chunks=(3, 35, 30)), net, head={0: "labels", 1: "logits"},
                      **TILES)  # fmt: skip
    assert isinstance(lazy["head_0"], da.Array)
    np.testing.assert_array_equal(lazy["head_0"].compute(), sd.segment(image, net, head=0, **TILES))
    tensor = sd.segment(
        torch.from_numpy(image), net, head={0: "labels", 1: "probabilities"}, **TILES
    )
    assert isinstance(tensor["head_0"], torch.Tensor) and tensor["head_0"].shape == (70, 60)


def test_each_head_writes_to_a_store_of_its_own_and_resumes_only_as_itself(scene, tmp_path):
    both = sd.segment(scene, TwoHeads().eval(), head={"out": "labels", "aux": "probabilities"},
                      **TILES)  # fmt: skip
    for name in both:
        sd.to_zarr(both[name], tmp_path / f"{name}.zarr")
        back = xr.open_zarr(tmp_path / f"{name}.zarr", mask_and_scale=False, decode_coords="all")[
            name
        ]
        np.testing.assert_array_equal(back.to_numpy(), both[name].to_numpy())
        assert back.rio.crs == scene.rio.crs
    sd.to_zarr(both["out"], tmp_path / "out.zarr", resume=True)  # the same job: nothing to do
    labels = sd.segment(scene, TwoHeads().eval(), head={"out": "labels", "aux": "labels"}, **TILES)
    with pytest.raises(sd.SeamlessError) as refused:  # same layout, another head: another job
        sd.to_zarr(labels["aux"].rename("out"), tmp_path / "out.zarr", resume=True)
    assert "head" in str(refused.value)


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (["out"], ["two or more distinct keys", "head='aux'"]),
        ({"out": "labels", "aux": "uncertainty"}, ["('labels', 'probabilities', 'logits')"]),
        ({"out"}, ["a list of them, or a dict"]),
        (["out", "nope"], ["head='nope' is not an output", "['out', 'aux']"]),
    ],
)
def test_bad_head_lists_are_clear_errors(head, words):
    image = helpers.structured_image(3, 40, 40).astype(np.float32)
    with helpers.raises_mentioning(sd.SeamlessError, words):
        sd.segment(image, TwoHeads().eval(), head=head, **TILES)


def test_a_head_at_another_resolution_is_refused_with_the_fix():
    image = helpers.structured_image(3, 40, 40).astype(np.float32)
    with helpers.raises_mentioning(sd.ModelOutputError, ["head 'aux' has shape", "upsample"]):
        sd.segment(image, TwoHeads(aux_stride=2).eval(), head=["out", "aux"], **TILES)
