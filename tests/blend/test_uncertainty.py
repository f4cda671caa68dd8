"""output="uncertainty": how much overlapping tiles disagree, and the entropy of the blend, lazily."""

import dask.array as da
import numpy as np
import pytest
import rasterio
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import OptionError, TileGrid
from seamless_dask import testing as helpers
from seamless_dask.cli import main
from seamless_dask.demo.scene import write_scene_geotiff
from seamless_dask.tiling.weights import as_weights

NET = helpers.conv_net(bands=2, classes=3)


def direct_uncertainty(image, tile, overlap, weights):
    """Each tile's probabilities, weighted, accumulated over the whole image in numpy: the reference."""
    grid, spec = TileGrid(image.shape[1:], tile, overlap), as_weights(weights)
    s1, s2, sw = (
        np.zeros((3, *image.shape[1:])),
        np.zeros((3, *image.shape[1:])),
        np.zeros(image.shape[1:]),
    )
    for i, window in enumerate(grid.windows()):
        iy, ix = divmod(i, grid.x.n_tiles)
        with torch.no_grad():
            p = (
                NET(torch.from_numpy(image[None, :, window.y, window.x]))
                .softmax(1)[0]
                .double()
                .numpy()
            )
        w = spec.for_tile(grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), grid.overlap)
        s1[:, window.y, window.x] += w * p
        s2[:, window.y, window.x] += w * p * p
        sw[window.y, window.x] += w
    mean = s1 / sw
    return (s2 / sw - mean**2).sum(0), -(mean * np.log(mean)).sum(0)


@pytest.mark.parametrize("chunks", [None, 30, (25, 64)])
def test_disagreement_and_entropy_equal_a_direct_computation_whatever_the_chunking(chunks):
    image = helpers.structured_image(2, 90, 77)
    lazy = da.from_array(image, chunks=(2, 40, 40))
    out = sd.segment(
        lazy, NET, tile_size=24, overlap=8, weights="trust", output="uncertainty", chunks=chunks
    )
    assert out.shape == (2, 90, 77) and out.dtype == np.float32
    disagreement, entropy = direct_uncertainty(image, 24, 8, "trust")
    np.testing.assert_allclose(out[0].compute(), disagreement, atol=2e-6)
    np.testing.assert_allclose(out[1].compute(), entropy, atol=2e-6)
    assert disagreement.max() > 1e-3  # the tiles really disagree somewhere: the check can fail


def test_where_one_tile_decides_there_is_no_disagreement():
    image = helpers.structured_image(2, 90, 77)
    # "trim": one tile per pixel
    out = sd.segment(image, NET, tile_size=24, overlap=8, output="uncertainty")
    np.testing.assert_allclose(out[0], 0, atol=1e-6)
    probs = sd.segment(image, NET, tile_size=24, overlap=8, output="probabilities")
    np.testing.assert_allclose(out[1], -(probs * np.log(probs)).sum(0), atol=2e-6)


def test_an_xarray_result_names_its_measures_and_keeps_its_geo(tmp_path):
    scene = sd.open_raster(write_scene_geotiff(tmp_path / "scene.tif", size=128))
    out = sd.segment(
        scene, helpers.conv_net(bands=3, classes=4), tile_size=32, overlap=8, output="uncertainty"
    )
    assert out.dims == ("measure", "y", "x") and list(out["measure"].values) == [
        "disagreement",
        "entropy",
    ]
    assert out.rio.crs == scene.rio.crs and out.name == "uncertainty"
    assert isinstance(out.data, type(da.ones(1))) or not isinstance(out.data, np.ndarray)  # lazy
    values = out.compute().values
    nodata = (scene == scene.rio.nodata).all("band").values  # the demo scene has a nodata border
    assert nodata.any() and (np.isnan(values) == nodata).all()  # NaN exactly where no band has data


def test_a_binary_sigmoid_model_counts_both_classes():
    image = helpers.structured_image(1, 40, 40)
    net = helpers.conv_net(bands=1, classes=1)
    out = sd.segment(
        image,
        net,
        tile_size=16,
        overlap=6,
        weights="trust",
        activation="sigmoid",
        output="uncertainty",
    )
    probs = sd.segment(
        image,
        net,
        tile_size=16,
        overlap=6,
        weights="trust",
        activation="sigmoid",
        output="probabilities",
    )[0]
    entropy = -(probs * np.log(probs) + (1 - probs) * np.log(1 - probs))
    np.testing.assert_allclose(out[1], entropy, atol=2e-6)
    assert (out[0] >= 0).all()


def test_uncertainty_without_an_activation_is_refused():
    with pytest.raises(OptionError, match="activation='softmax'"):
        sd.segment(
            helpers.structured_image(2, 40, 40),
            NET,
            tile_size=16,
            output="uncertainty",
            activation=None,
        )


def test_the_cli_writes_uncertainty_as_a_two_band_cog(tmp_path):
    scene = write_scene_geotiff(tmp_path / "scene.tif", size=160)
    args = [
        "segment",
        str(scene),
        str(tmp_path / "u.tif"),
        "--model",
        "seamless_dask.testing:make_conv",
    ]
    args += [
        "--output",
        "uncertainty",
        "--tile-size",
        "64",
        "--overlap",
        "16",
        "--scheduler",
        "threads",
        "--no-progress",
    ]
    assert main(args) == 0
    with rasterio.open(tmp_path / "u.tif") as cog:
        assert cog.count == 2 and cog.dtypes[0] == "float32"
        values, nodata = cog.read(), (cog.read(1) != cog.read(1))
        assert np.isfinite(values[:, ~nodata]).all() and values[0][~nodata].max() > 0
    reopened = xr.open_dataarray(tmp_path / "u.tif", engine="rasterio")
    assert reopened.shape == (2, 160, 160)


@pytest.mark.parametrize(("dtype", "scale"), [("uint8", 255), ("uint16", 65535), ("float32", 1)])
def test_the_imagenet_preset_is_scaled_to_the_dtype(dtype, scale):
    image = (helpers.structured_image(3, 40, 40) * (scale if scale > 1 else 1)).astype(dtype)
    net = helpers.conv_net(bands=3, classes=4)
    mean = np.array([0.485, 0.456, 0.406]) * scale
    std = np.array([0.229, 0.224, 0.225]) * scale
    expected = sd.segment(
        image, net, tile_size=16, overlap=4, normalize=(mean, std), output="probabilities"
    )
    got = sd.segment(
        image, net, tile_size=16, overlap=4, normalize="imagenet", output="probabilities"
    )
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_the_imagenet_preset_needs_three_bands():
    with pytest.raises(OptionError, match="3 RGB bands, the image has 2"):
        sd.segment(helpers.structured_image(2, 40, 40), NET, tile_size=16, normalize="imagenet")


class TwoHeads(torch.nn.Module):
    """A torchvision-style segmentation model: {"out": main head, "aux": auxiliary head}."""

    def __init__(self):
        super().__init__()
        self.main, self.aux = (
            helpers.conv_net(bands=2, classes=3, seed=0),
            helpers.conv_net(bands=2, classes=3, seed=1),
        )

    def forward(self, x):
        return {"out": self.main(x), "aux": self.aux(x)}


def test_the_auxiliary_head_is_segmented_when_asked_for():
    image, model = helpers.structured_image(2, 50, 60), TwoHeads()
    main = sd.segment(image, model, tile_size=16, overlap=4, output="probabilities")
    aux = sd.segment(image, model, tile_size=16, overlap=4, output="probabilities", head="aux")
    np.testing.assert_allclose(
        main, sd.segment(image, model.main, tile_size=16, overlap=4, output="probabilities")
    )
    np.testing.assert_allclose(
        aux, sd.segment(image, model.aux, tile_size=16, overlap=4, output="probabilities")
    )
    assert np.abs(main - aux).max() > 1e-3
    with pytest.raises(
        sd.ModelOutputError,
        match=r"head='deep' is not an output of the model: it returns \['out', 'aux'\]",
    ):
        sd.segment(image, model, tile_size=16, overlap=4, head="deep")
