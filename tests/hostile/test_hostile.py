"""The hostile corpus: field cases kept as data (cases.jsonl beside this file), run through the CLI.

Each line is one case: ``id``, ``category``, ``input`` (a builder below makes it in the case's own
folder), ``args`` (the command after ``seamless-dask``; ``{input}``, ``{dir}`` and ``{other}`` are
filled in), the ``exit`` code it must end with and ``words`` its last line on stderr must contain.
Every case also checks that nothing outside its OUTPUT changed (every file's size and mtime), that a
failed run leaves no OUTPUT and no claim behind, and that no traceback reaches the terminal.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from rasterio.transform import from_origin

from seamless_dask.cli import main
from seamless_dask.demo import write_scene_geotiff, write_slide_ome_tiff
from seamless_dask.graph.layers import array_expr
from seamless_dask.io import is_complete

# The CLI's refusals do not depend on dask's array engine: the corpus runs once, on the legacy one.
pytestmark = pytest.mark.skipif(array_expr(), reason="the CLI's refusals: engine-agnostic")
CASES = [json.loads(line) for line in (Path(__file__).parent / "cases.jsonl").read_text().splitlines()
         if line.strip() and not line.startswith("//")]  # fmt: skip
MODEL = "seamless_dask.testing:brightness"


def _geotiff(path: Path, data: np.ndarray, **profile) -> Path:
    bands, height, width = data.shape
    meta = {"driver": "GTiff", "height": height, "width": width, "count": bands,
            "dtype": data.dtype.name, "crs": "EPSG:32631",
            "transform": from_origin(500_000, 5_700_000, 10, 10), **profile}  # fmt: skip
    with rasterio.open(path, "w", **meta) as out:
        out.write(data)
    return path


def _scene(folder: Path) -> Path:
    return write_scene_geotiff(folder / "scene.tif", size=96)


def _bytes(name: str, content: bytes):
    def build(folder: Path) -> Path:
        (folder / name).write_bytes(content)
        return folder / name

    return build


def _truncated(fraction: float):
    def build(folder: Path) -> Path:
        whole = _scene(folder).read_bytes()
        path = folder / "truncated.tif"
        path.write_bytes(whole[: int(len(whole) * fraction)])
        (folder / "scene.tif").unlink()
        return path

    return build


def _array(name: str, fill, shape=(3, 64, 64), dtype="float32", **profile):
    def build(folder: Path) -> Path:
        return _geotiff(folder / name, np.full(shape, fill, dtype=dtype), **profile)

    return build


def _zarr_two_variables(folder: Path) -> Path:
    import xarray as xr

    data = xr.Dataset({n: (("band", "y", "x"), np.zeros((1, 32, 32), "uint8")) for n in ("a", "b")})
    data.to_zarr(folder / "two.zarr", zarr_format=2)
    return folder / "two.zarr"


def _zarr_time_first(folder: Path) -> Path:
    import xarray as xr

    xr.Dataset({"v": (("time", "y", "x"), np.zeros((2, 32, 32), "uint8"))}).to_zarr(
        folder / "time.zarr", zarr_format=2
    )
    return folder / "time.zarr"


def _zarr_without_metadata(folder: Path) -> Path:
    (folder / "bare.zarr").mkdir()
    (folder / "bare.zarr" / "junk").write_text("not zarr")
    return folder / "bare.zarr"


def _zarr_corrupt_array(folder: Path) -> Path:
    root = zarr.open_group(folder / "broken.zarr", mode="w", zarr_format=2)
    root.create_array("v", shape=(1, 32, 32), dtype="uint8", chunks=(1, 16, 16))
    (folder / "broken.zarr" / "v" / ".zarray").write_text("{not json")
    return folder / "broken.zarr"


def _ome_zarr_corrupt(folder: Path) -> Path:
    root = zarr.open_group(folder / "bad.ome.zarr", mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{"version": "0.4", "axes": "nonsense", "datasets": []}]
    return folder / "bad.ome.zarr"


def _ome_zarr_missing_level(folder: Path) -> Path:
    root = zarr.open_group(folder / "gone.ome.zarr", mode="w", zarr_format=2)
    root.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n, "type": "space" if n in "yx" else "channel"} for n in "cyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
    }]  # fmt: skip
    return folder / "gone.ome.zarr"


def _slide(folder: Path) -> Path:
    return write_slide_ome_tiff(folder / "slide.ome.tif", size=(96, 128))


def _folder_named(name: str):
    def build(folder: Path) -> Path:
        (folder / name).mkdir()
        return folder / name

    return build


def _geojson(name: str, text: str):
    def build(folder: Path) -> Path:
        (folder / name).write_text(text)
        return _scene(folder)

    return build


def _labels_pair(folder: Path, *, shift=0, crs="EPSG:32631", dtype="uint8", fill=None) -> Path:
    pred = np.random.default_rng(0).integers(0, 2, (1, 64, 64)).astype("uint8")
    _geotiff(folder / "pred.tif", pred)
    truth = pred if fill is None else np.full_like(pred, fill)
    _geotiff(folder / "truth.tif", truth.astype(dtype), crs=crs,
             transform=from_origin(500_000 + 10 * shift, 5_700_000, 10, 10))  # fmt: skip
    return folder / "pred.tif"


def _symlink_to_input(folder: Path) -> Path:
    scene = _scene(folder)
    os.symlink(scene, folder / "link.tif")
    return scene


def _foreign_folder(folder: Path) -> Path:
    (folder / "mine.zarr").mkdir()
    (folder / "mine.zarr" / "notes.txt").write_text("my own files")
    return _scene(folder)


BUILDERS = {
    "scene": _scene,
    "none": lambda folder: folder / "missing.tif",
    "empty_file": _bytes("empty.tif", b""),
    "random_bytes": _bytes("noise.tif", np.random.default_rng(1).bytes(4096)),
    "text_as_tif": _bytes("text.tif", b"this is not a raster\n" * 20),
    "png_as_tif": _bytes("image.tif", b"\x89PNG\r\n\x1a\n" + bytes(200)),
    "truncated_header": _truncated(0.002),
    "truncated_half": _truncated(0.5),
    "folder_as_tif": _folder_named("dir.tif"),
    "nan_scene": _array("nan.tif", np.nan),
    "inf_scene": _array("inf.tif", np.inf),
    "constant_scene": _array("constant.tif", 7, dtype="uint8"),
    "all_nodata": _array("nodata.tif", 0, dtype="uint8", nodata=0),
    "one_pixel": _array("one.tif", 100, shape=(3, 1, 1), dtype="uint8"),
    "one_row": _array("row.tif", 100, shape=(3, 1, 300), dtype="uint8"),
    "one_column": _array("column.tif", 100, shape=(3, 300, 1), dtype="uint8"),
    "complex_pixels": _array("complex.tif", 1 + 2j, shape=(1, 32, 32), dtype="complex64"),
    "one_band": _array("gray.tif", 100, shape=(1, 64, 64), dtype="uint8"),
    "zarr_two_variables": _zarr_two_variables,
    "zarr_time_first": _zarr_time_first,
    "zarr_without_metadata": _zarr_without_metadata,
    "zarr_corrupt_array": _zarr_corrupt_array,
    "ome_zarr_corrupt": _ome_zarr_corrupt,
    "ome_zarr_missing_level": _ome_zarr_missing_level,
    "slide": _slide,
    "region_utm": _geojson(
        "aoi.geojson",
        json.dumps(
            {
                "type": "Polygon",
                "coordinates": [
                    [[500100, 5699900], [500500, 5699900], [500500, 5699500], [500100, 5699900]]
                ],
            }
        ),
    ),
    "region_bowtie": _geojson(
        "aoi.geojson",
        json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}),
    ),
    "region_empty": _geojson(
        "aoi.geojson", json.dumps({"type": "FeatureCollection", "features": []})
    ),
    "region_not_json": _geojson("aoi.geojson", "{ this is not json"),
    "region_far_away": _geojson(
        "aoi.geojson",
        json.dumps(
            {"type": "Polygon", "coordinates": [[[10, 10], [10.1, 10], [10.1, 10.1], [10, 10]]]}
        ),
    ),
    "labels_aligned": _labels_pair,
    "labels_shifted": lambda folder: _labels_pair(folder, shift=100),
    "labels_other_crs": lambda folder: _labels_pair(folder, crs="EPSG:32632"),
    "labels_float": lambda folder: _labels_pair(folder, dtype="float32"),
    "labels_out_of_classes": lambda folder: _labels_pair(folder, fill=7),
    "symlink_to_input": _symlink_to_input,
    "foreign_folder": _foreign_folder,
}


def _snapshot(folder: Path, skip: set[str]) -> dict[str, tuple[int, int]]:
    seen = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(rel == s or rel.startswith(s + "/") or rel.startswith(s + ".") for s in skip):
            continue
        stat = path.lstat()
        seen[rel] = (stat.st_size, stat.st_mtime_ns)
    return seen


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_case(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = BUILDERS[case["input"]](tmp_path)
    fill = {"input": str(source), "dir": str(tmp_path), "other": str(tmp_path / "truth.tif")}
    args = [a.format(**fill) for a in case["args"]]
    output = case.get("output")
    skip = {output} if output and not case.get("output_existed") else set()
    before = _snapshot(tmp_path, skip)
    try:
        code = main(args)
    except SystemExit as usage:  # argparse's own refusals: exit 2 and a usage line
        code = usage.code
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == case["exit"], f"exit {code}, expected {case['exit']}: {err[-800:]}"
    assert "Traceback" not in err, err[-2000:]
    for word in case.get("words", []):
        assert word in last, f"{word!r} not in the last line: {last!r}"
    if code != 0 and output and not case.get("output_existed"):
        left = tmp_path / output
        if output.endswith(".zarr") and left.exists():  # kept to be resumed, never marked done
            assert not is_complete(left), "a failed run marked its OUTPUT complete"
        else:
            assert not left.exists(), "a failed run left its OUTPUT"
    assert not list(tmp_path.glob("*.seamless-lock")), "a claim was left behind"
    assert _snapshot(tmp_path, skip) == before, "a file outside OUTPUT changed"
    shutil.rmtree(tmp_path, ignore_errors=True)
