"""STAC scenes in: a pystac item over local COGs, loaded with odc-stac, segmented like the raster it came from."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.demo.scene import write_scene_geotiff
from seamless_dask.graph.layers import array_expr

pytest.importorskip("odc.stac")
pytest.importorskip("pystac")
_spec = importlib.util.spec_from_file_location(
    "stac_scene", Path(__file__).parents[2] / "examples/stac_scene.py"
)
assert _spec is not None and _spec.loader is not None
stac_scene = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stac_scene)  # the example itself, as a user runs it


@pytest.mark.skipif(
    array_expr(),
    reason="odc-stac 0.5.3 builds its arrays with da.Array(..., dtype=), not on array-expr",
)
def test_a_stac_item_loaded_with_odc_stac_segments_like_its_raster(tmp_path):
    raster = write_scene_geotiff(tmp_path / "scene.tif", size=300)
    item = stac_scene.write_item(raster, tmp_path / "assets")
    labels = stac_scene.segment_item(item, tile_size=64, overlap=16, nodata=0)
    assert labels.dims == ("time", "y", "x") and labels.sizes["time"] == 1
    assert labels.rio.crs == "EPSG:32631"
    from seamless_dask.demo.scene import context_model

    direct = sd.segment(
        sd.open_raster(raster), context_model(), tile_size=64, overlap=16, normalize=(0, 255)
    )
    np.testing.assert_array_equal(labels.isel(time=0).compute().values, direct.compute().values)
    with rasterio.open(raster) as src:
        assert labels.isel(time=0).rio.transform().almost_equals(src.transform)


def test_a_time_stack_is_mapped_over_lazily_one_image_per_step():
    image = helpers.structured_image(2, 60, 70) * 255
    stack = xr.DataArray(np.stack([image, image[:, ::-1]]), dims=("time", "band", "y", "x"),
                         coords={"time": [1, 2], "band": ["red", "nir"]})  # fmt: skip
    out = sd.segment(stack, helpers.Brightness(), tile_size=32, overlap=8, bands=["nir"])
    assert out.dims == ("time", "y", "x") and out.chunks is not None  # lazy
    for t, step in enumerate((image, image[:, ::-1])):
        np.testing.assert_array_equal(
            out.isel(time=t).compute().values,
            sd.segment(step[1:], helpers.Brightness(), tile_size=32, overlap=8),
        )
    ds = xr.Dataset({"red": (("y", "x"), image[0]), "nir": (("y", "x"), image[1])})
    with helpers.raises_mentioning(sd.DimensionError, ["swir", "red", "nir"]):
        sd.segment(ds, helpers.Brightness(), bands=["swir"])


@pytest.mark.skipif(array_expr(), reason="odc-stac builds its arrays with da.Array(..., dtype=)")
def test_the_example_runs_as_the_guide_says_without_a_raster(tmp_path):
    import subprocess
    import sys

    example = Path(__file__).parents[2] / "examples/stac_scene.py"
    done = subprocess.run([sys.executable, str(example), "--out", "stac-output"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "stac-output" / "labels.tif").exists()
