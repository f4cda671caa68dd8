"""Polygons and the object table, merged across chunk borders: the objects of
``rasterio.features.shapes`` on the whole map, areas that add up to the pixels, holes kept, no sliver;
GeoParquet, GeoPackage and FlatGeobuf that pyogrio reads back with the CRS and class names; the table
against scipy's measurements.
"""

import dask.array as da
import numpy as np
import pytest
import shapely
import xarray as xr
from affine import Affine
from rasterio import features
from scipy import ndimage
from test_instances import class_map

import seamless_dask as sd
from seamless_dask.exceptions import OptionError

geopandas = pytest.importorskip("geopandas")
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0)  # 10 m pixels, UTM


def georeferenced(labels, chunks):
    h, w = labels.shape
    array = xr.DataArray(
        da.from_array(labels, chunks),
        dims=("y", "x"),
        coords={
            "y": TRANSFORM.f + TRANSFORM.e * (np.arange(h) + 0.5),
            "x": TRANSFORM.c + TRANSFORM.a * (np.arange(w) + 0.5),
        },
    )
    return array.rio.write_crs("EPSG:32633").rio.write_transform(TRANSFORM)


@pytest.mark.parametrize("chunks", [(160, 150), (64, 64), (23, 41)])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_polygons_are_rasterios_shapes_of_the_whole_map_with_areas_that_add_up(
    chunks, connectivity
):
    labels = class_map(5, (160, 150), smooth=2.5)
    frame = sd.polygons(georeferenced(labels, chunks), connectivity=connectivity)
    whole = list(features.shapes(labels, mask=labels > 0, connectivity=4 * connectivity,
                                 transform=TRANSFORM))  # fmt: skip
    assert len(frame) == len(whole)
    assert frame.crs.to_epsg() == 32633 and frame.geometry.is_valid.all()
    for value in (1, 2):
        mine = frame[frame["class"] == value]
        assert mine.area.sum() == pytest.approx((labels == value).sum() * 100.0, rel=1e-12)
        assert mine["area_px"].sum() == (labels == value).sum()
    if connectivity == 1:
        assert (frame.geometry.geom_type == "Polygon").all()
    # no sliver, no overlap: the polygons tile the objects' pixels exactly
    assert frame.union_all().area == pytest.approx(frame.area.sum(), rel=1e-12)


def test_a_ring_across_four_chunks_keeps_its_hole_and_is_one_polygon():
    labels = np.zeros((40, 40), "uint8")
    labels[8:32, 8:32] = 1
    labels[14:26, 14:26] = 0  # the hole, centred on the corner of four chunks
    labels[18:22, 18:22] = 2  # an island of another class in the hole
    frame = sd.polygons(georeferenced(labels, 20))
    ring = frame[frame["class"] == 1].geometry.iloc[0]
    assert len(frame[frame["class"] == 1]) == 1 and len(ring.interiors) == 1
    assert ring.area == pytest.approx((24 * 24 - 12 * 12) * 100.0)


def test_the_ids_are_those_of_instances_and_class_names_travel():
    labels = class_map(6, (80, 90))
    array = georeferenced(labels, 32)
    array.attrs["class_names"] = ["background", "field", "forest"]
    frame = sd.polygons(array)
    ids = sd.instances(array).compute().values
    assert set(frame["id"]) == set(np.unique(ids[ids > 0]))
    assert set(frame["class_name"]) == {"field", "forest"}


def test_vectors_open_in_gdal_with_their_crs_and_classes(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    labels = class_map(7, (60, 70))
    array = georeferenced(labels, 25)
    array.attrs["class_names"] = ["background", "field", "forest"]
    frame = sd.polygons(array)
    for suffix in ("parquet", "gpkg", "fgb"):
        path = sd.to_vector(frame, tmp_path / f"objects.{suffix}")
        back = geopandas.read_parquet(path) if suffix == "parquet" else pyogrio.read_dataframe(path)
        assert len(back) == len(frame) and back.crs.to_epsg() == 32633
        assert sorted(set(back["class_name"])) == ["field", "forest"]
        assert back.area.sum() == pytest.approx(frame.area.sum())
    with pytest.raises(OptionError, match=r"\.parquet.*\.gpkg.*\.fgb"):
        sd.to_vector(frame, tmp_path / "objects.shp")


def test_the_object_table_agrees_with_scipys_measurements():
    labels = class_map(8, (90, 100))
    image = np.random.default_rng(8).normal(size=(2, 90, 100))
    table = sd.object_table(georeferenced(labels, 30), image=image)
    assert hasattr(table, "dask")  # lazy: a dask DataFrame
    table = table.compute().sort_index()
    ids = sd.instances(labels).compute().values
    index = np.unique(ids[ids > 0])
    assert list(table.index) == list(index)
    counts = ndimage.sum_labels(np.ones_like(ids), ids, index)
    np.testing.assert_array_equal(table["area_px"], counts)
    np.testing.assert_allclose(table["area"], counts * 100.0)
    rows, cols = np.array(ndimage.center_of_mass(np.ones_like(ids), ids, index)).T
    np.testing.assert_allclose(table["x"], TRANSFORM.c + 10.0 * (cols + 0.5))
    np.testing.assert_allclose(table["y"], TRANSFORM.f - 10.0 * (rows + 0.5))
    np.testing.assert_allclose(table["mean_0"], ndimage.mean(image[0], ids, index))
    boxes = ndimage.find_objects(
        np.searchsorted(index, ids) + 1 - (ids == 0) * (np.searchsorted(index, ids) + 1)
    )
    first = boxes[0]
    assert table["xmin"].iloc[0] == TRANSFORM.c + 10.0 * first[1].start
    assert table["ymax"].iloc[0] == TRANSFORM.f - 10.0 * first[0].start
    np.testing.assert_array_equal(table["class"], [labels.ravel()[i - 1] for i in index])


def test_an_empty_scene_gives_an_empty_table_and_no_polygon():
    empty = georeferenced(np.zeros((50, 50), "uint8"), 20)
    assert len(sd.object_table(empty).compute()) == 0
    assert len(sd.polygons(empty)) == 0


def test_the_cli_vectorizes_a_written_class_map(write_scene, tmp_path, capsys):
    pyogrio = pytest.importorskip("pyogrio")
    from seamless_dask.cli import main

    scene = write_scene(128)
    labels = tmp_path / "labels.tif"
    assert main(["segment", str(scene), str(labels), "--model", "seamless_dask.testing:brightness",
                 "--tile-size", "64", "--overlap", "16", "--scheduler", "threads",
                 "--no-progress"]) == 0  # fmt: skip
    out = tmp_path / "objects.gpkg"
    assert main(["vectorize", str(labels), str(out)]) == 0
    back = pyogrio.read_dataframe(out)
    written = sd.open_raster(labels).isel(band=0).compute().values
    whole = list(features.shapes(written, mask=written == 1, connectivity=4))
    assert len(back) == len(whole) and back.crs == sd.open_raster(labels).rio.crs
    assert main(["vectorize", str(labels), str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["vectorize", str(labels), str(labels)]) == 2


def whole_map_polygons(labels, connectivity=1):
    """``rasterio.features.shapes`` of the whole map's instances: each object's polygon, by id (made
    valid: with 8-connectivity rasterio's rings touch themselves at corners).
    """
    ids = sd.instances(labels, connectivity=connectivity).compute().values
    local, names = np.unique(ids, return_inverse=True)[1].reshape(ids.shape), np.unique(ids)
    found = features.shapes(local.astype(np.int32), mask=ids > 0, connectivity=4 * connectivity)
    by_id = {}
    for geometry, value in found:
        polygon = shapely.make_valid(shapely.geometry.shape(geometry), method="structure")
        by_id.setdefault(int(names[int(value)]), []).append(polygon)
    return {k: shapely.union_all(v) for k, v in by_id.items()}


@pytest.mark.parametrize("chunks", [(160, 150), (23, 41), (7, 5), (1, 150)])
@pytest.mark.parametrize("connectivity", [1, 2])
def test_each_polygon_is_the_whole_maps_with_every_hole(chunks, connectivity):
    labels = class_map(9, (160, 150), smooth=2.5)
    frame = sd.polygons(da.from_array(labels, chunks), connectivity=connectivity)
    whole = whole_map_polygons(labels, connectivity)
    assert set(frame["id"]) == set(whole)
    holes = 0
    for key, geometry in zip(frame["id"], frame.geometry, strict=True):
        assert shapely.equals(geometry, whole[int(key)]), key
        holes += sum(len(p.interiors) for p in shapely.get_parts(geometry))
    assert holes > 20  # the maps have objects with holes, some crossing borders


@pytest.mark.parametrize("chunks", [(64, 64), (23, 41)])
def test_the_lazy_frame_is_the_computed_one_a_partition_a_chunk_and_one_merged(chunks, tmp_path):
    pytest.importorskip("dask_geopandas")
    labels = georeferenced(class_map(10, (160, 150), smooth=2.5), chunks)
    eager = sd.polygons(labels)
    lazy = sd.polygons(labels, lazy=True)
    assert lazy.npartitions == np.prod(labels.data.numblocks) + 1
    computed = lazy.compute().sort_values("id", ignore_index=True)
    assert computed.crs == eager.crs
    assert list(computed["id"]) == list(eager["id"])
    assert shapely.equals(computed.geometry.to_numpy(), eager.geometry.to_numpy()).all()
    import dask_geopandas

    for suffix, read in (("gpkg", geopandas.read_file), ("parquet", dask_geopandas.read_parquet)):
        back = read(sd.to_vector(lazy, tmp_path / f"lazy.{suffix}"))
        back = back.compute() if hasattr(back, "compute") else back
        assert len(back) == len(eager) and back.crs.to_epsg() == 32633
        assert back.area.sum() == pytest.approx(eager.area.sum(), rel=1e-12)


@pytest.mark.parametrize("scene", ["objects", "empty", "one across every chunk"])
@pytest.mark.parametrize("suffix", ["parquet", "gpkg", "fgb"])
def test_a_lazy_frame_is_written_chunk_by_chunk_into_one_file(scene, suffix, tmp_path):
    pytest.importorskip("dask_geopandas")
    from seamless_dask.objects.vector import written_count

    labels = class_map(12, (120, 100), smooth=2.5)
    if scene == "empty":
        labels[:] = 0
    elif scene == "one across every chunk":  # no chunk holds a whole object: every part empty
        labels[:] = 0
        labels[10:110, 10:90] = 2
    array = georeferenced(labels, (30, 25))
    eager = sd.polygons(array)
    path = sd.to_vector(sd.polygons(array, lazy=True), tmp_path / f"objects.{suffix}")
    assert written_count(path) == len(eager)
    back = (geopandas.read_parquet if suffix == "parquet" else geopandas.read_file)(path)
    assert list(back.columns) == list(eager.columns) and back.crs.to_epsg() == 32633
    back = back.sort_values("id", ignore_index=True)
    assert list(back["id"]) == list(eager["id"]) and back.area.sum() == pytest.approx(
        eager.area.sum(), rel=1e-12
    )
    assert shapely.equals(back.geometry.to_numpy(), eager.geometry.to_numpy()).all()
    if suffix == "parquet":  # the class map's type kept, whatever part came first
        assert back["class"].dtype == np.uint8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".seamless-parts-")]


@pytest.mark.parametrize("suffix", ["gpkg", "fgb"])
def test_any_other_lazy_frame_is_appended_a_partition_at_a_time(suffix, tmp_path):
    dask_geopandas = pytest.importorskip("dask_geopandas")
    from seamless_dask.objects.vector import written_count

    eager = sd.polygons(georeferenced(class_map(14, (90, 80), smooth=2.5), (30, 40)))
    frame = dask_geopandas.from_geopandas(eager, npartitions=3)  # not a polygons(lazy=True) frame
    path = sd.to_vector(frame, tmp_path / f"objects.{suffix}")
    assert written_count(path) == len(eager)
    back = geopandas.read_file(path).sort_values("id", ignore_index=True)
    assert shapely.equals(back.geometry.to_numpy(), eager.geometry.to_numpy()).all()


class HeldPieces:
    """A scheduler plugin: the most chunks' pieces (``one_chunk`` results) held at once."""

    name = "held-pieces"

    def __init__(self):
        self.now, self.most = 0, 0

    def transition(self, key, start, finish, *args, **kwargs):
        from dask.utils import key_split

        if key_split(key) != "one_chunk":
            return
        self.now += (finish == "memory") - (start == "memory")
        self.most = max(self.most, self.now)


def test_on_a_cluster_each_chunks_pieces_are_let_go_once_written(tmp_path):
    """dask orders a lazy frame's graph to reach the merge first: written as it is, every chunk's
    pieces (the scene's polygons) waited for it (59 of 64 chunks held at 8,192 px).
    """
    pytest.importorskip("dask_geopandas")
    from distributed import Client, LocalCluster, SchedulerPlugin

    plugin = type("Held", (HeldPieces, SchedulerPlugin), {})()
    labels = georeferenced(class_map(13, (256, 256), smooth=2.0), (32, 32))  # 64 chunks
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
        as cluster, Client(cluster) as client,
    ):  # fmt: skip
        client.register_plugin(plugin)
        path = sd.to_vector(sd.polygons(labels, lazy=True), tmp_path / "objects.parquet")
        most = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["held-pieces"].most
        )
    assert 1 <= most <= 8
    assert len(geopandas.read_parquet(path)) == len(sd.polygons(labels))


def test_a_worker_that_does_not_see_the_parts_folder_is_told_the_fix(tmp_path):
    """On a cluster without a shared folder the workers write the parts elsewhere: said, not lost."""
    from seamless_dask.objects.vector import _write_merged

    with pytest.raises(OSError, match=r"does not see .*gone.*object store \(s3://"):
        _write_merged([], None, str(tmp_path / "gone" / "part.0000001.parquet"))


def test_simplified_neighbours_still_share_their_edges_whatever_the_chunking():
    labels = class_map(11, (160, 150), smooth=2.5)
    frames = [sd.polygons(georeferenced(labels, c), simplify=15.0) for c in ((160, 150), (23, 41))]
    plain = sd.polygons(georeferenced(labels, (23, 41)))
    simple = frames[0].geometry.to_numpy()
    assert shapely.equals_exact(simple, frames[1].geometry.to_numpy(), 0).all()
    assert shapely.coverage_is_valid(simple) and shapely.is_valid(simple).all()
    assert (
        shapely.get_num_coordinates(simple).sum()
        < shapely.get_num_coordinates(plain.geometry.to_numpy()).sum() / 2
    )
    # no gap opened and no overlap made between neighbours: the union's area is the areas' sum
    assert shapely.union_all(simple).area == pytest.approx(shapely.area(simple).sum(), rel=1e-9)
    with pytest.raises(OptionError, match=r"simplify=15\.0 with lazy=True"):
        sd.polygons(georeferenced(labels, 40), simplify=15.0, lazy=True)


def test_a_region_cuts_objects_at_its_edge_in_the_maps_crs():
    labels = class_map(12, (160, 150), smooth=2.5)
    array = georeferenced(labels, 40)
    # the region: columns 30..120 and rows 20..130, in the map's CRS (UTM metres)
    x0, y0 = TRANSFORM * (30, 20)
    x1, y1 = TRANSFORM * (120, 130)
    region = shapely.box(x0, y1, x1, y0)
    frame = sd.polygons(array, region=region)
    inside = np.zeros_like(labels)
    inside[20:130, 30:120] = labels[20:130, 30:120]
    expected = sd.polygons(georeferenced(inside, 40))
    assert len(frame) == len(expected)
    assert shapely.equals(frame.geometry.to_numpy(), expected.geometry.to_numpy()).all()
    assert frame.union_all().within(region.buffer(1e-6))
    ids = sd.instances(array, region=region).compute().values
    assert (ids[:20] == 0).all() and (ids[:, 120:] == 0).all()
    table = sd.object_table(array, region=region).compute()
    assert table["area_px"].sum() == (inside > 0).sum()


def test_the_table_has_a_partition_a_chunk_row_with_known_divisions_and_its_units():
    labels = class_map(14, (160, 150), smooth=2.5)
    table = sd.object_table(georeferenced(labels, (40, 50)))
    assert table.npartitions == 4 and table.known_divisions
    whole = table.compute()
    assert whole.index.is_monotonic_increasing and whole.index.is_unique
    ids = sd.instances(labels).compute().values
    assert list(whole.index) == list(np.unique(ids[ids > 0]))
    in_pixels = sd.object_table(georeferenced(labels, 40), units="px").compute()
    np.testing.assert_array_equal(in_pixels["area"], in_pixels["area_px"])
    with pytest.raises(OptionError, match="units='crs', and the map has no CRS"):
        sd.object_table(labels, units="crs")
