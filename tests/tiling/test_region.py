"""Areas of interest: only the tiles touching the region run, and inside it the result is the whole scene's."""

import threading

import dask
import dask.array as da
import numpy as np
import pytest
import shapely
from pyproj import Transformer

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.demo.scene import write_scene_geotiff
from seamless_dask.exceptions import OptionError

TILE = {"tile_size": 32, "overlap": 8}


def _inside(geometry, shape):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return shapely.contains_xy(geometry, xx + 0.5, yy + 0.5)


def test_a_polygon_region_runs_only_its_tiles_and_equals_the_whole_scene_inside():
    image = helpers.structured_image(3, 150, 170)
    # pixel coordinates: x = column, y = row
    triangle = shapely.Polygon([(20, 10), (120, 40), (40, 130)])
    whole = sd.segment(image, helpers.conv_net(), num_classes=4, **TILE)
    counting = helpers.Counting(helpers.conv_net())
    labels = sd.segment(image, counting, num_classes=4, region=triangle, chunks=50, **TILE)
    grid = sd.TileGrid(image.shape[1:], 32, 8)
    touching = [
        w
        for w in grid.windows()
        if triangle.intersects(shapely.box(w.x.start, w.y.start, w.x.stop, w.y.stop))
    ]
    assert counting.tiles == len(touching) < grid.n_tiles
    inside = _inside(triangle, image.shape[1:])
    np.testing.assert_array_equal(labels[inside], whole[inside])
    assert (labels[~inside] == 255).all()


def test_probabilities_outside_the_region_are_nan():
    image = helpers.structured_image(3, 90, 90)
    probs = sd.segment(
        image, helpers.conv_net(), output="probabilities", region=shapely.box(0, 0, 40, 40), **TILE
    )
    assert np.isnan(probs[:, 50:, :]).all() and np.isfinite(probs[:, :40, :40]).all()


def test_a_geojson_region_in_wgs84_is_reprojected_to_the_scene(tmp_path):
    scene = sd.open_raster(write_scene_geotiff(tmp_path / "scene.tif", size=256))
    to_wgs84 = Transformer.from_crs(scene.rio.crs, "EPSG:4326", always_xy=True)
    x, y = scene.x.values, scene.y.values  # a diamond in the scene's middle, as GeoJSON in lon/lat
    corners = [(x[128], y[40]), (x[220], y[128]), (x[128], y[220]), (x[40], y[128])]
    geojson = {
        "type": "Polygon",
        "coordinates": [[to_wgs84.transform(*c) for c in [*corners, corners[0]]]],
    }
    model = helpers.Brightness()
    labels = sd.segment(
        scene, model, region=geojson, region_crs="EPSG:4326", tile_size=64, overlap=16
    )
    labels = labels.compute().values
    whole = sd.segment(scene, model, tile_size=64, overlap=16).compute().values
    diamond = shapely.Polygon([(128, 40), (220, 128), (128, 220), (40, 128)])  # the same, in pixels
    # reprojection moves edges by a fraction of a pixel
    core = _inside(diamond.buffer(-2), labels.shape)
    np.testing.assert_array_equal(labels[core], whole[core])
    assert (labels[~_inside(diamond.buffer(2), labels.shape)] == 255).all()
    assert "POLYGON" in labels_record(scene, model, geojson)


def labels_record(scene, model, geojson):
    return sd.segment(
        scene, model, region=geojson, region_crs="EPSG:4326", tile_size=64, overlap=16
    ).attrs["seamless_job"]


class ReadLog:
    """A map_blocks function that notes which chunks were read (tokenized by identity, as array-expr asks)."""

    def __init__(self):
        self.read, self.lock = set(), threading.Lock()

    def __call__(self, block, block_info=None):
        with self.lock:
            self.read.add(tuple(block_info[0]["chunk-location"][1:]))
        return block

    def __dask_tokenize__(self):
        return ("ReadLog", id(self))


def test_chunks_the_region_does_not_touch_are_never_read():
    image = helpers.structured_image(3, 300, 300)
    log = ReadLog()
    read = log.read
    lazy = da.from_array(image, chunks=(3, 100, 100)).map_blocks(
        log, meta=np.empty((0, 0, 0), image.dtype)
    )
    with dask.config.set(scheduler="threads"):
        sd.segment(
            lazy, helpers.conv_net(), num_classes=4, region=shapely.box(5, 5, 60, 60), **TILE
        ).compute()
    assert (2, 2) not in read and (0, 2) not in read and (2, 0) not in read
    assert (0, 0) in read


def test_bad_regions_are_refused_naming_the_rule_and_the_fix():
    image = helpers.structured_image(3, 64, 64)
    with helpers.raises_mentioning(OptionError, ["outside the image", "x 100.0..120.0", "x 0..64"]):
        sd.segment(image, helpers.conv_net(), region=shapely.box(100, 0, 120, 10), **TILE)
    with helpers.raises_mentioning(OptionError, ["region_crs", "has none", "pixel coordinates"]):
        sd.segment(
            image,
            helpers.conv_net(),
            region=shapely.box(0, 0, 10, 10),
            region_crs="EPSG:4326",
            **TILE,
        )
    with helpers.raises_mentioning(OptionError, ["area", "polygon"]):
        sd.segment(image, helpers.conv_net(), region=shapely.LineString([(0, 0), (10, 10)]), **TILE)


@pytest.mark.parametrize("chunks", [40, 64, 200])
def test_the_region_result_does_not_depend_on_the_chunking(chunks):
    image = helpers.structured_image(3, 130, 110)
    region = shapely.Polygon([(10, 5), (100, 60), (30, 120)])
    expected = sd.segment(
        image, helpers.conv_net(), num_classes=4, region=region, chunks=1000, **TILE
    )
    got = sd.segment(image, helpers.conv_net(), num_classes=4, region=region, chunks=chunks, **TILE)
    np.testing.assert_array_equal(got, expected)


def test_cli_region_from_a_geojson_file_and_tta(tmp_path):
    import json

    import rasterio

    from seamless_dask.cli import main

    scene = write_scene_geotiff(tmp_path / "scene.tif", size=200)
    image = sd.open_raster(scene)
    x, y = image.x.values, image.y.values
    square = {
        "type": "Polygon",
        "coordinates": [
            [(x[10], y[10]), (x[90], y[10]), (x[90], y[90]), (x[10], y[90]), (x[10], y[10])]
        ],
    }
    doc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": square, "properties": {}}],
    }
    (tmp_path / "aoi.geojson").write_text(json.dumps(doc))
    args = [
        "segment",
        str(scene),
        str(tmp_path / "out.tif"),
        "--model",
        "seamless_dask.testing:brightness",
        "--no-progress",
    ]
    args += [
        "--tile-size",
        "64",
        "--overlap",
        "16",
        "--region",
        str(tmp_path / "aoi.geojson"),
        "--region-crs",
    ]
    assert main([*args, str(image.rio.crs), "--tta", "flips", "--scheduler", "threads"]) == 0
    with rasterio.open(tmp_path / "out.tif") as cog:
        written = cog.read(1)
    whole = (
        sd.segment(image, helpers.Brightness(), tile_size=64, overlap=16, tta="flips")
        .compute()
        .values
    )
    np.testing.assert_array_equal(written[12:88, 12:88], whole[12:88, 12:88])
    assert (written[100:, :] == 255).all() and (written[:, 100:] == 255).all()


def test_a_geojson_in_the_images_crs_without_region_crs_names_the_flag(tmp_path, capsys):
    """The field case: a polygon in UTM metres read as GeoJSON's default lon/lat."""
    import json

    from seamless_dask.cli import main

    scene = write_scene_geotiff(tmp_path / "scene.tif", size=128)
    image = sd.open_raster(scene)
    x, y = image.x.values, image.y.values
    ring = [(x[10], y[10]), (x[90], y[10]), (x[90], y[90]), (x[10], y[90]), (x[10], y[10])]
    (tmp_path / "utm.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    args = ["segment", str(scene), str(tmp_path / "o.tif"), "--model",
            "seamless_dask.testing:brightness", "--tile-size", "64", "--overlap", "16",
            "--region", str(tmp_path / "utm.geojson"), "--scheduler", "threads", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no GEOS or affine text above it
    for words in ("EPSG:4326", "not degrees", "--region-crs EPSG:32631"):
        assert words in err, err
    assert main([*args, "--region-crs", "EPSG:32631"]) == 0  # the flag it names is the fix


def test_a_self_intersecting_region_is_named_so_not_mended_silently():
    image = helpers.structured_image(3, 64, 64)
    bowtie = shapely.Polygon([(0, 0), (40, 40), (40, 0), (0, 40)])
    with helpers.raises_mentioning(
        OptionError, ["not a valid polygon", "Self-intersection", "make_valid"]
    ):
        sd.segment(image, helpers.conv_net(), region=bowtie, **TILE)
