"""``seamless-dask segment ... --instances IDS --vector FILE``: the objects of the class map just
written, read back from it, next to it; paths checked before the model runs.
"""

import numpy as np
import pytest
import zarr
from support import error_line, segment_cli

import seamless_dask as sd

MODEL = ["--model", "seamless_dask.testing:brightness"]


@pytest.mark.parametrize("ids_suffix", ["zarr", "ome.zarr", "tif"])
def test_segment_writes_the_objects_of_its_class_map_beside_it(
    write_scene, tmp_path, capsys, ids_suffix
):
    pyogrio = pytest.importorskip("pyogrio")
    scene = write_scene(128)
    labels, ids_path, vector = (
        tmp_path / "labels.tif",
        tmp_path / f"ids.{ids_suffix}",
        tmp_path / "o.gpkg",
    )
    code = segment_cli(
        scene, labels, *MODEL, "--instances", ids_path, "--vector", vector, progress=False
    )
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    written = sd.open_raster(labels).isel(band=0)
    expected = sd.instances(written).compute().values
    got = sd.open_raster(ids_path).isel(band=0).compute().values
    np.testing.assert_array_equal(got, expected)
    frame = pyogrio.read_dataframe(vector)
    assert len(frame) == len(np.unique(expected)) - 1 and f"{len(frame):,} objects" in out
    assert frame.crs == written.rio.crs
    if ids_suffix == "ome.zarr":
        label = zarr.open_group(str(ids_path), mode="r").attrs["image-label"]
        assert len(label["properties"]) == len(frame)


def test_object_outputs_are_checked_before_the_model_runs(write_scene, tmp_path, capsys):
    scene = write_scene(64)
    labels = tmp_path / "labels.zarr"
    assert segment_cli(scene, labels, *MODEL, "--vector", tmp_path / "o.shp", progress=False) == 2
    assert ".parquet (GeoParquet), .gpkg" in error_line(capsys) and not labels.exists()
    assert segment_cli(scene, labels, *MODEL, "--instances", scene, progress=False) == 2
    assert "INPUT" in error_line(capsys)
    assert segment_cli(scene, labels, *MODEL, "--output", "probabilities", "--vector",
                       tmp_path / "o.gpkg", progress=False) == 2  # fmt: skip
    assert "takes the objects of a class map" in error_line(capsys)
    (tmp_path / "o.gpkg").write_text("someone's")
    assert segment_cli(scene, labels, *MODEL, "--vector", tmp_path / "o.gpkg", progress=False) == 2
    assert "--overwrite" in error_line(capsys)
    assert (tmp_path / "o.gpkg").read_text() == "someone's"
    assert segment_cli(scene, labels, *MODEL, "--vector", tmp_path / "nowhere" / "o.gpkg",
                       progress=False) == 2  # fmt: skip
    assert "does not exist" in error_line(capsys)


def test_overwrite_replaces_only_polygons_seamless_dask_wrote(write_scene, tmp_path, capsys):
    pytest.importorskip("pyogrio")
    scene = write_scene(64)
    labels, vector = tmp_path / "labels.zarr", tmp_path / "o.gpkg"
    assert segment_cli(scene, labels, *MODEL, "--vector", vector, progress=False) == 0
    again = ["--vector", vector, "--overwrite"]
    assert segment_cli(scene, labels, *MODEL, *again, progress=False) == 0  # ours: replaced
    theirs = tmp_path / "theirs.gpkg"
    sd.to_vector(sd.polygons(np.eye(4, dtype="uint8")).drop(columns="area_px"), theirs)
    before = theirs.read_bytes()
    code = segment_cli(scene, labels, *MODEL, "--vector", theirs, "--overwrite", progress=False)
    assert code == 2 and "is not polygons seamless_dask wrote" in error_line(capsys)
    assert theirs.read_bytes() == before
    assert "wrote" not in capsys.readouterr().out  # refused before the job ran
