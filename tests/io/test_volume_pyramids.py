"""A volume's result as an OME-Zarr pyramid: every level keeps the z slices and halves y and x, as
NGFF's ``multiscales`` says it with a scale per axis (z's unchanged); the labels carry NGFF's
``image-label`` (validated by ome-zarr-models 0.4 and 0.5), go into a z-stack's own ``labels/``
group without touching the image, and resume chunk by chunk (the command line's: tests/test_volumes.py).
"""

import numpy as np
import pytest
import zarr
from support import ngff_models, tree_hash, write_ngff_stack

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.graph.layers import array_expr
from seamless_dask.tiling.lattice import Lattice

TILE, OVERLAP = (12, 16, 16), 4
NAMES = ["background", "nucleus", "membrane"]


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(3).random((1, 30, 41, 37)).astype(np.float32)


@pytest.fixture()
def stack(volume, tmp_path):
    """The volume as an NGFF 0.4 z-stack (z 2 µm, y and x 0.5 µm)."""
    return write_ngff_stack(tmp_path / "stack.ome.zarr", volume)


def _labels(stack, **options):
    return sd.segment(sd.open_raster(stack), helpers.conv3d_net(), tile_size=TILE,
                      overlap=OVERLAP, chunks=(8, 12, 12), **options)  # fmt: skip


def _level(out, k):
    return np.asarray(zarr.open_array(str(out), path=str(k), mode="r")[...])


def test_every_level_keeps_the_z_slices_and_halves_y_and_x(stack, tmp_path):
    labels = _labels(stack, class_names=NAMES)
    out = tmp_path / "labels.ome.zarr"
    written = sd.to_ome_zarr(labels, out, levels=3)
    level0 = labels.to_numpy()
    shapes = [_level(out, k).shape for k in range(3)]
    assert shapes == [(30, 41, 37), (30, 21, 19), (30, 11, 10)]
    for k in range(3):  # nearest: a label is never a blend of two
        np.testing.assert_array_equal(_level(out, k), level0[:, :: 2**k, :: 2**k])
    group = zarr.open_group(str(out), mode="r")
    done = [group[f"_seamless/done/{k}"][...] for k in range(3)]
    assert all(d.all() for d in done) and written == sum(d.size for d in done)
    assert done[1].shape[0] == done[2].shape[0]  # z is never halved: the same z chunks
    multiscale = group.attrs["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in multiscale["axes"]} == {"micrometer"}
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    _, image_label, _ = ngff_models("0.4")
    model = image_label.from_zarr(group)
    names = [p.model_dump(by_alias=True)["class"] for p in model.attributes.image_label.properties]
    assert names == [*NAMES, "nodata"]  # float voxels may be NaN: 255 is nodata, transparent
    back = sd.open_raster(out)  # our own reader: a volume again, physical z and classes kept
    assert back.sizes["z"] == 30 and back.attrs["class_names"] == NAMES
    np.testing.assert_allclose(back["z"].values[:3], [0.0, 2.0, 4.0])


def test_probabilities_average_in_y_and_x_only_and_ngff_05_validates(stack, tmp_path):
    probabilities = _labels(stack, output="probabilities")
    out = tmp_path / "p.ome.zarr"
    sd.to_ome_zarr(probabilities, out, levels=2, zarr_format=3)
    level0, level1 = _level(out, 0), _level(out, 1)
    assert level1.shape == (3, 30, 21, 19)
    padded = np.pad(level0, [(0, 0), (0, 0), (0, 1), (0, 1)], constant_values=np.nan)
    expected = np.nanmean(padded.reshape(3, 30, 21, 2, 19, 2), axis=(3, 5))
    np.testing.assert_allclose(level1, expected, rtol=1e-6)
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["ome"]["version"] == "0.5"
    assert list(group["0"].metadata.dimension_names) == ["c", "z", "y", "x"]
    image, _, _ = ngff_models("0.5")
    image.from_zarr(group)
    # a mean level's origin is the centre of the pixels it averages, in y and x, never in z
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    assert datasets[1]["coordinateTransformations"][1]["translation"] == [0.0, 0.0, 0.25, 0.25]


def test_a_volume_pyramid_resumes_only_what_is_missing(stack, tmp_path):
    net = helpers.Counting(helpers.conv3d_net())
    labels = sd.segment(sd.open_raster(stack), net, tile_size=TILE, overlap=OVERLAP,
                        chunks=(8, 12, 12))  # fmt: skip
    out = tmp_path / "labels.ome.zarr"
    sd.to_ome_zarr(labels, out, levels=2)
    expected = [_level(out, k) for k in range(2)]
    group = zarr.open_group(str(out), mode="r+")
    group["0"][8:16, 12:24, 0:12] = 0
    group["1"][8:16, 0:12, 0:12] = 0
    group["_seamless/done/0"][1, 1, 0] = 0
    group["_seamless/done/1"][1, 0, 0] = 0
    net.reset()
    assert sd.to_ome_zarr(labels, out, levels=2, resume=True) == 2  # the lost chunk and its parent
    assert 0 < net.tiles < Lattice.build((30, 41, 37), TILE, OVERLAP).n_tiles
    for k in range(2):
        np.testing.assert_array_equal(_level(out, k), expected[k])


def test_labels_go_into_the_z_stacks_own_labels_group(stack):
    untouched = tree_hash(stack)
    labels = _labels(stack, class_names=NAMES)
    sd.to_ome_zarr(labels, stack, label_name="nuclei")
    assert tree_hash(stack) == untouched  # the image is never written
    assert zarr.open_group(str(stack / "labels"), mode="r").attrs["labels"] == ["nuclei"]
    np.testing.assert_array_equal(_level(stack / "labels/nuclei", 0), labels.to_numpy())
    _, image_label, labels_model = ngff_models("0.4")
    labels_model.from_zarr(zarr.open_group(str(stack / "labels"), mode="r"))
    image_label.from_zarr(zarr.open_group(str(stack / "labels/nuclei"), mode="r"))
    with helpers.raises_mentioning(sd.RasterError, ["(29, 41, 37)", "(30, 41, 37)", "z, y, x"]):
        sd.to_ome_zarr(labels[1:], stack, label_name="cut")


@pytest.mark.skipif(array_expr(), reason="ome-zarr-py reads with da.from_zarr: not on array-expr")
def test_ome_zarr_py_reads_the_volume_pyramid_as_napari_would(stack, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    out = tmp_path / "labels.ome.zarr"
    labels = _labels(stack, class_names=NAMES)
    sd.to_ome_zarr(labels, out, levels=2)
    node = next(iter(Reader(parse_url(str(out)))()))
    assert [tuple(d.shape) for d in node.data] == [(30, 41, 37), (30, 21, 19)]
    assert node.metadata["properties"][1]["class"] == "nucleus"
