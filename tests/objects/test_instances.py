"""Instances from a class map: scipy.ndimage.label of each class on the whole map, whatever the
chunking, bit for bit the same ids; touching classes apart; the geo metadata kept.

Ported in our own words from dask-image's ``tests/test_dask_image/test_ndmeasure/test_ndmeasure_label.py``
(``test_label``: random images, several chunkings, both structures, compared with scipy up to a
renumbering) and checked against dask-image's ``ndmeasure.label`` itself.
"""

import importlib

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

import seamless_dask as sd
from seamless_dask.exceptions import OptionError, RasterError
from seamless_dask.graph.layers import array_expr

CHUNKINGS = [(120, 110), (64, 64), (37, 41), (1, 110), (120, 1), (5, 7)]


def class_map(seed=0, shape=(300, 280), classes=3, smooth=3.0):
    """Smoothed noise cut into ``classes`` levels: blobs of every size, touching across classes."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), smooth)
    edges = np.quantile(noise, np.linspace(0, 1, classes + 1)[1:-1])
    return np.digitize(noise, edges).astype("uint8")


def same_partition(ids, reference):
    """Whether two label images name the same regions (one id each way), 0 the same pixels."""
    if not np.array_equal(ids > 0, reference > 0):
        return False
    pairs = np.unique(np.stack([ids[ids > 0], reference[reference > 0]]), axis=1)
    return len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def scipy_instances(labels, connectivity, classes):
    structure = ndimage.generate_binary_structure(2, connectivity)
    out, count = np.zeros(labels.shape, np.int64), 0
    for value in classes:
        found, n = ndimage.label(labels == value, structure=structure)
        out[found > 0] = found[found > 0] + count
        count += n
    return out


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_instances_are_scipy_labels_of_each_class_for_every_chunking(chunks, connectivity, seed):
    labels = class_map(seed, (120, 110), smooth=2.0)
    ids = sd.instances(da.from_array(labels, chunks), connectivity=connectivity).compute().values
    assert same_partition(ids, scipy_instances(labels, connectivity, [1, 2]))
    whole = sd.instances(labels, connectivity=connectivity).compute().values
    np.testing.assert_array_equal(ids, whole)  # the same ids, bit for bit, whatever the chunking


def test_an_objects_id_is_one_plus_the_index_of_its_first_pixel():
    labels = class_map(2)
    ids = sd.instances(da.from_array(labels, 50)).compute().values
    for value in np.unique(ids[ids > 0]):
        first = np.flatnonzero(ids.ravel() == value)[0]
        assert value == first + 1


def test_touching_objects_of_two_classes_stay_apart_and_class_zero_is_background():
    labels = np.zeros((40, 40), "uint8")
    labels[5:20, 5:20] = 1
    labels[5:20, 20:35] = 2  # touches the first along a whole edge
    ids = sd.instances(da.from_array(labels, 16)).compute().values
    assert len(np.unique(ids[labels == 1])) == 1 and len(np.unique(ids[labels == 2])) == 1
    assert ids[10, 10] != ids[10, 25] and (ids[labels == 0] == 0).all()
    with_zero = sd.instances(da.from_array(labels, 16), classes=[0, 1]).compute().values
    assert len(np.unique(with_zero[labels == 0])) == 1 and (with_zero[labels == 2] == 0).all()


@pytest.mark.parametrize("classes", [None, [300, -7], [0, 300]])
def test_wider_and_signed_class_maps_are_labelled_class_by_class(classes):
    levels = np.array([-7, 0, 300, 12], "int16")  # 12: nodata
    labels = levels[class_map(5, (90, 100), classes=4, smooth=2.0)]
    array = xr.DataArray(da.from_array(labels, (33, 40)), dims=("y", "x")).rio.write_nodata(12)
    ids = sd.instances(array, classes=classes).compute().values
    wanted = [-7, 300] if classes is None else classes
    assert same_partition(ids, scipy_instances(labels, 1, wanted))
    assert (ids[labels == 12] == 0).all()


def test_the_ids_do_not_depend_on_how_the_labeller_numbers_its_regions(monkeypatch):
    """The ids are made from scan order; a labeller numbering in any other order changes nothing."""
    module = importlib.import_module("seamless_dask.objects.rule")
    labels = class_map(6, (80, 90), smooth=2.0)
    expected = sd.instances(da.from_array(labels, 30)).compute().values
    label = module.measure.label

    def shuffled(image, **kwargs):
        found = label(image, **kwargs)
        order = np.random.default_rng(0).permutation(int(found.max()) + 1)[1:]
        return np.r_[0, order + 10][found]  # 0 kept, every region renumbered, none consecutive

    monkeypatch.setattr(module.measure, "label", shuffled)
    ids = sd.instances(da.from_array(labels, 30)).compute(scheduler="sync").values
    np.testing.assert_array_equal(ids, expected)


def test_a_write_in_waves_labels_each_chunk_once(tmp_path):
    """The merge reaches every chunk row: a cluster write's waves (cluster/waves.py) hold each chunk's
    first labelling for the waves after the first, rather than label it again (they did, for every
    row past the first two, when the steps' keys were not seamless_dask's).
    """
    from collections import Counter

    from seamless_dask.cluster.waves import _plan
    from seamless_dask.graph import keys
    from seamless_dask.io import as_target
    from seamless_dask.io._zarr import _prepare
    from seamless_dask.objects.instances import NAME

    assert NAME.startswith(keys.PREFIX)
    ids = sd.instances(da.from_array(class_map(7, (320, 300)), 40))  # 8 chunk rows
    plan = _plan(_prepare(ids, as_target(str(tmp_path / "ids.zarr"), None), False, False), 4)
    if plan is None:  # array-expr: waves follow model tasks' rows only, so this is submitted whole
        assert array_expr()
        return
    labelled = Counter(
        k for wave in plan for k in wave.tasks if str(k[0]).startswith(NAME + "edges")
    )
    assert len(labelled) == 8 * 8 and set(labelled.values()) == {1}


def test_an_object_winding_through_many_chunks_is_one_object():
    labels = np.zeros((90, 90), "uint8")
    for k in range(5, 85, 10):  # a snake: rows joined alternately at the right and the left end
        labels[k, 5:85] = 1
        end = 84 if (k // 10) % 2 == 0 else 5
        labels[k : k + 11, end] = 1 if k + 10 < 85 else labels[k : k + 11, end]
    ids = sd.instances(da.from_array(labels, 7)).compute().values
    reference, n = ndimage.label(labels)
    assert len(np.unique(ids[ids > 0])) == n and same_partition(ids, reference)


def test_corner_neighbours_join_only_with_connectivity_two_across_chunk_corners():
    labels = np.zeros((8, 8), "uint8")
    labels[3, 3] = labels[4, 4] = 1  # diagonal across the corner of four 4 px chunks
    assert len(np.unique(sd.instances(da.from_array(labels, 4)).compute().values)) == 3
    assert (
        len(np.unique(sd.instances(da.from_array(labels, 4), connectivity=2).compute().values)) == 2
    )


def test_nodata_is_never_an_object():
    labels = class_map(3)
    labels[:50] = 255
    array = xr.DataArray(da.from_array(labels, 64), dims=("y", "x")).rio.write_nodata(255)
    ids = sd.instances(array).compute().values
    assert (ids[:50] == 0).all()
    assert same_partition(ids, scipy_instances(labels, 1, [1, 2]))


@pytest.mark.skipif(array_expr(), reason="dask-image builds its graphs with from_delayed")
def test_the_same_objects_as_dask_image_on_a_foreground():
    ndmeasure = pytest.importorskip("dask_image.ndmeasure")
    labels = (class_map(4, classes=2) == 1).astype("uint8")
    theirs, _ = ndmeasure.label(da.from_array(labels, 64))
    ours = sd.instances(da.from_array(labels, 64)).compute().values
    assert same_partition(ours, np.asarray(theirs))


def test_a_segment_result_keeps_its_crs_transform_and_coords(scene):
    from seamless_dask import testing as helpers

    labels = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
    ids = sd.instances(labels)
    assert ids.rio.crs == labels.rio.crs and ids.rio.transform() == labels.rio.transform()
    assert ids.dtype == np.uint32 and ids.chunks == labels.chunks
    np.testing.assert_array_equal(ids.x, labels.x)
    assert same_partition(ids.compute().values, scipy_instances(labels.compute().values, 1, [1]))


def test_bad_input_is_refused_naming_the_rule():
    with pytest.raises(RasterError, match=r"integer class labels; got float32.*argmax"):
        sd.instances(np.zeros((4, 4), "float32"))
    with pytest.raises(RasterError, match="dims \\(y, x\\)"):
        sd.instances(np.zeros((2, 4, 4), "uint8"))
    with pytest.raises(OptionError, match="connectivity=3"):
        sd.instances(np.zeros((4, 4), "uint8"), connectivity=3)
    with pytest.raises(OptionError, match="classes=\\[\\]"):
        sd.instances(np.zeros((4, 4), "uint8"), classes=[])


def test_an_empty_scene_has_no_object_and_a_boolean_map_is_class_one():
    assert not sd.instances(np.zeros((30, 30), "uint8")).compute().values.any()
    mask = np.zeros((30, 30), bool)
    mask[2:5, 2:5] = True
    assert len(np.unique(sd.instances(mask).compute().values)) == 2


def test_a_scene_larger_than_uint32_holds_gets_uint64_ids_lazily():
    big = da.zeros((70_000, 70_000), dtype="uint8", chunks=10_000)
    ids = sd.instances(big)
    assert ids.dtype == np.uint64 and ids.shape == big.shape  # nothing computed
