"""Instances from an instance model, stitched across chunk borders by keeping each object whole (as
StarDist's ``predict_instances_big`` does): with a model that sees no further than the halo and objects
no larger than it, the whole image's objects and ids for every chunking; objects larger than the halo
reported; the model run once a window; bad models and options refused naming the rule.

StarDist's own test of its big-image prediction (``stardist/tests/test_big.py``: a synthetic image of
blobs predicted whole and in tiles, the label images compared) is ported here in our own words with a
local model (a threshold then ``scipy.ndimage.label``) in place of a trained StarDist network.
"""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage
from test_instances import same_partition

import seamless_dask as sd
from seamless_dask.exceptions import OptionError, RasterError


def blobs(seed=0, shape=(200, 180), n=50, radius=(2, 5)):
    """Discs of random radii (some touching, some crossing any border), as a two-band image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros(shape)
    for _ in range(n):
        y, x, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(*radius)
        image[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = 1.0
    return np.stack([image, rng.normal(scale=0.05, size=shape)])


def threshold_label(window):
    """A local instance model: what it names depends only on the pixels of each object."""
    return ndimage.label(window[0] > 0.5)[0]


@pytest.mark.parametrize("chunks", [(200, 180), (64, 64), (37, 41), (16, 50)])
def test_a_local_model_gives_the_whole_images_objects_and_ids_for_every_chunking(chunks):
    image = blobs()
    whole = ndimage.label(image[0] > 0.5)[0]
    assert max(np.ptp(np.nonzero(whole == k), axis=1).max() for k in range(1, whole.max() + 1)) < 16
    ids = sd.segment_instances(da.from_array(image, (2, *chunks)), threshold_label, halo=16)
    ids = ids.compute().values
    assert same_partition(ids, whole)
    # each object's id is 1 + the row-major index of its first pixel, as instances names them
    np.testing.assert_array_equal(ids, sd.instances(whole > 0).compute().values)


def test_the_model_runs_once_a_window_over_the_chunk_and_its_halo():
    image = blobs(1)
    seen = []
    lock = threading.Lock()

    def model(window):
        with lock:
            seen.append(window.shape)
        return threshold_label(window)

    ids = sd.segment_instances(da.from_array(image, (2, 50, 60)), model, halo=10)
    ids.compute()
    assert len(seen) == 4 * 3  # one call a chunk
    assert sorted(set(seen)) == sorted({(2, h, w) for h in (60, 70) for w in (70, 80)})


def test_an_object_larger_than_the_halo_is_reported_or_kept_as_cut():
    image = np.zeros((1, 60, 60))
    image[0, 5:55, 28:33] = 1  # a bar 50 px tall across a chunk border, the halo 8 px
    lazy = da.from_array(image, (1, 30, 30))
    with pytest.raises(RasterError, match=r"larger than the halo.*raise halo="):
        sd.segment_instances(lazy, threshold_label, halo=8, larger_than_halo="raise").compute()
    kept = sd.segment_instances(lazy, threshold_label, halo=8).compute().values
    assert (kept > 0).sum() == (image[0] > 0).sum()  # no pixel lost
    assert len(np.unique(kept[kept > 0])) > 1  # but cut into pieces: what docs/objects.md says
    whole = sd.segment_instances(lazy, threshold_label, halo=30).compute().values
    assert len(np.unique(whole[whole > 0])) == 1  # a halo as large as the object keeps it whole


def test_the_geo_metadata_stays_and_a_single_band_plane_is_taken():
    image = blobs(2, (90, 80))[0]
    array = xr.DataArray(da.from_array(image, 40), dims=("y", "x"), coords={
        "y": 4_200_000.0 - 10 * (np.arange(90) + 0.5), "x": 500_000.0 + 10 * (np.arange(80) + 0.5),
    }).rio.write_crs("EPSG:32633")  # fmt: skip
    ids = sd.segment_instances(array, lambda w: ndimage.label(w > 0.5)[0], halo=12)
    assert ids.rio.crs.to_epsg() == 32633 and ids.rio.transform() == array.rio.transform()
    assert ids.dtype == np.uint32 and ids.data.chunks == ((40, 50), (40, 40))  # 10 px <= the halo
    polygons = pytest.importorskip("geopandas") and sd.polygons(ids)  # an id map: each id apart
    assert set(polygons["id"]) == set(np.unique(ids.compute().values)) - {0}


def test_bad_models_and_options_are_refused_naming_the_rule():
    image = da.from_array(blobs(3, (60, 60)), (2, 30, 30))
    with pytest.raises(RasterError, match="must return integer labels"):
        sd.segment_instances(image, lambda w: w[0] * 2.0, halo=4).compute()
    with pytest.raises(RasterError, match=r"of the window's \(y, x\) shape"):
        sd.segment_instances(image, lambda w: np.zeros((3, 3), int), halo=4).compute()
    # chunks smaller than the halo are joined to their neighbours: the same ids
    small = da.from_array(blobs(3, (60, 60), n=12, radius=(1, 3)), (2, 7, 9))
    np.testing.assert_array_equal(
        sd.segment_instances(small, threshold_label, halo=12).compute().values,
        sd.segment_instances(small.rechunk((2, 30, 30)), threshold_label, halo=12).compute().values,
    )
    with pytest.raises(OptionError, match="larger_than_halo='drop'"):
        sd.segment_instances(image, threshold_label, halo=4, larger_than_halo="drop")
    with pytest.raises(RasterError, match=r"\(y, x\) or \(band, y, x\)"):
        sd.segment_instances(np.zeros((2, 2, 4, 4)), threshold_label, halo=1)


def test_a_distributed_cluster_stitches_as_threads_do():
    distributed = pytest.importorskip("distributed")
    image = da.from_array(blobs(4), (2, 64, 64))
    expected = sd.segment_instances(image, threshold_label, halo=16).compute().values
    with (
        distributed.Client(processes=False, n_workers=2, threads_per_worker=1) as client,
        dask.config.set(scheduler=client),
    ):
        got = sd.segment_instances(image, threshold_label, halo=16).compute().values
    np.testing.assert_array_equal(got, expected)


def test_the_table_and_polygons_take_an_id_map_as_it_is():
    pytest.importorskip("geopandas")
    image = da.from_array(blobs(5), (2, 64, 64))
    ids = sd.segment_instances(image, threshold_label, halo=16)
    values = ids.compute().values
    table = sd.object_table(ids).compute()
    found = np.unique(values[values > 0])
    assert list(table.index) == list(found) and (table["class"] == 1).all()
    np.testing.assert_array_equal(table["area_px"], ndimage.sum_labels(values > 0, values, found))
    frame = sd.polygons(ids)
    assert sorted(frame["id"]) == list(found)  # one row an object, touching objects apart
    assert frame.area.sum() == pytest.approx((values > 0).sum())
    with pytest.raises(OptionError, match="map of object ids"):
        sd.object_table(ids, classes=[1])
