"""Scene-wide normalisation by percentiles (issue 32; cellpose#608: per-tile normalisation draws lines
between tiles): the seeded sample's percentiles against numpy's on the whole image, nodata and the
region left out, the values in the job record, the same for a resumed job, and the CLI flag.
"""

import json

import dask.array as da
import numpy as np
import pytest
import shapely
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.exceptions import OptionError
from seamless_dask.graph import record


def image(shape=(2, 300, 280)):
    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 30.0, size=shape).astype("float32")
    data[1] *= 10  # a band on another scale
    return data


def normalize_of(labels):
    """The job record's normalize: what the model saw, and what a resume is checked against."""
    return json.loads(labels.attrs[record.ATTR])["options"]["normalize"]


def test_a_small_scene_is_sampled_whole_and_matches_numpys_percentiles():
    pixels = image()
    array = xr.DataArray(da.from_array(pixels, (2, 100, 100)), dims=("band", "y", "x"))  # 9 chunks
    labels = sd.segment(
        array, helpers.Brightness(), tile_size=64, overlap=16, normalize="percentile"
    )
    lows, spans = normalize_of(labels)
    for band in range(2):
        lo, hi = np.percentile(pixels[band].astype(np.float64), [1, 99.8])
        assert lows[band] == pytest.approx(lo) and spans[band] == pytest.approx(hi - lo)


def test_a_large_scene_is_sampled_from_sixteen_seeded_chunks_close_to_the_whole():
    pixels = image((2, 1000, 1000))
    array = xr.DataArray(
        da.from_array(pixels, (2, 100, 100)), dims=("band", "y", "x")
    )  # 100 chunks
    first = sd.segment(array, helpers.Brightness(), tile_size=64, overlap=16,
                       normalize=("percentile", 2, 98))  # fmt: skip
    again = sd.segment(array, helpers.Brightness(), tile_size=64, overlap=16,
                       normalize=("percentile", 2, 98))  # fmt: skip
    assert normalize_of(first) == normalize_of(again)  # a resumed job is the same job
    lows, spans = normalize_of(first)
    lo, hi = np.percentile(pixels[0].astype(np.float64), [2, 98])
    assert lows[0] == pytest.approx(lo, rel=0.05) and lows[0] + spans[0] == pytest.approx(
        hi, rel=0.05
    )


def test_nodata_and_the_region_are_left_out():
    pixels = image()
    pixels[:, :, :140] = 0  # nodata on the left half
    pixels[:, 200:, 140:] *= 100  # bright pixels outside the region
    array = xr.DataArray(da.from_array(pixels, (2, 100, 100)), dims=("band", "y", "x"))
    region = shapely.box(140, 0, 280, 200)  # pixel coordinates: the right half's top
    labels = sd.segment(array, helpers.Brightness(), tile_size=64, overlap=16, nodata=0,
                        region=region, normalize="percentile")  # fmt: skip
    lows, spans = normalize_of(labels)
    inside = pixels[0, :200, 140:].astype(np.float64)
    lo, hi = np.percentile(inside, [1, 99.8])
    assert lows[0] == pytest.approx(lo) and lows[0] + spans[0] == pytest.approx(hi)


def test_bad_percentiles_and_empty_samples_are_refused():
    with pytest.raises(OptionError, match=r"0 <= low < high <= 100"):
        sd.segment(image(), helpers.Brightness(), tile_size=64, overlap=16,
                   normalize=("percentile", 99, 1))  # fmt: skip
    with pytest.raises(OptionError, match="no valid pixel"):
        sd.segment(np.zeros((2, 128, 128), "float32"), helpers.Brightness(), tile_size=64,
                   overlap=16, nodata=0, normalize="percentile")  # fmt: skip


def test_the_cli_takes_percentile_with_its_levels(write_scene, tmp_path):
    import support

    scene = write_scene(128)
    out = tmp_path / "labels.zarr"
    code = support.segment_cli(scene, out, "--model", "seamless_dask.testing:brightness",
                               "--normalize", "percentile:1,99", progress=False)  # fmt: skip
    assert code == 0
    written = xr.open_zarr(out)
    lows, spans = normalize_of(written)
    assert len(lows) == 3 and all(s > 0 for s in spans)
