"""dask's next array engine (``array.query-planning``, array-expr): the same graph, the same pixels.

The engine is chosen when ``dask.array`` is first imported, so each check runs in a fresh process with
``DASK_ARRAY__QUERY_PLANNING=True`` and its results are compared here, with those of the legacy engine.
"""

import json
import os
import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.graph.layers import array_expr

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dask.array as da, numpy as np, xarray as xr
    import seamless_dask as sd
    from seamless_dask import testing as helpers
    from seamless_dask.cluster import progress
    from seamless_dask.graph.layers import array_expr

    out, scene = sys.argv[1], sys.argv[2]
    image = helpers.structured_image(3, 150, 170)
    counting = helpers.Counting(helpers.conv_net())
    lazy = sd.segment(da.from_array(image, chunks=(3, 50, 60)), counting, tile_size=32, overlap=8, num_classes=4)
    report = {"engine": type(lazy).__module__, "array_expr": array_expr()}
    np.save(out + "/dask.npy", lazy.compute())
    report["tiles_run"] = counting.tiles
    report["tiles_counted"] = sum(progress.tile_counts(lazy).values())
    xarr = sd.segment(xr.DataArray(image, dims=("band", "y", "x")), helpers.conv_net(), tile_size=32, overlap=8)
    np.save(out + "/xarray.npy", xarr.compute().values)
    labels = sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16, chunks=96)
    sd.to_cog(labels, out + "/labels.tif")
    sd.to_zarr(labels, out + "/labels.zarr")
    print(json.dumps(report))
    """
)


def test_segment_and_both_writers_give_the_same_pixels_on_array_expr(tmp_path, scene):
    env = {**os.environ, "DASK_ARRAY__QUERY_PLANNING": "True"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(scene)], check=False, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["array_expr"] and "_array_expr" in report["engine"]  # the other engine, really
    image = helpers.structured_image(3, 150, 170)
    expected = sd.segment(image, helpers.conv_net(), tile_size=32, overlap=8, num_classes=4)
    # I3
    assert report["tiles_run"] == report["tiles_counted"] == sd.TileGrid((150, 170), 32, 8).n_tiles
    np.testing.assert_array_equal(np.load(tmp_path / "dask.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "xarray.npy"), expected)
    labels = sd.segment(
        sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16, chunks=96
    )
    # compute first: array-expr arrays have no __array__ (dask#11922)
    labels = labels.compute().values
    back = xr.open_zarr(tmp_path / "labels.zarr", mask_and_scale=False)["labels"].compute().values
    np.testing.assert_array_equal(back, labels)
    assert sd.io.is_complete(tmp_path / "labels.zarr")
    import rasterio

    with rasterio.open(tmp_path / "labels.tif") as cog:
        np.testing.assert_array_equal(cog.read(1), labels)


@pytest.mark.skipif(
    array_expr(), reason="this run is the array-expr pass (DASK_ARRAY__QUERY_PLANNING=True)"
)
def test_the_legacy_engine_is_the_default_here():
    assert type(da.ones(1)).__module__ == "dask.array.core"
