"""Volumes through ``segment``: ``(C, Z, Y, X)`` arrays and ``(band, z, y, x)`` DataArrays with a tile
of three sizes, lazily, as an overlap-add over every axis. Each tile runs once; the result is the same
for every chunking (chunks that cut tiles in every axis); it equals whole-volume inference where
"trim"'s margins cover the model's field, MONAI's ``sliding_window_inference`` on a MONAI 3-D UNet with
MONAI's maps, and :class:`~seamless_dask.VolumeTiler` in memory; a voxel without data is nodata, never
class 0.
"""

import warnings

import dask.array as da
import numpy as np
import pytest
import support
import torch
import xarray as xr

import seamless_dask as sd
from seamless_dask import TileWeights
from seamless_dask import testing as helpers
from seamless_dask.tiling.lattice import Lattice
from seamless_dask.tiling.weights import MONAI_FLOOR

TILE, OVERLAP = (12, 16, 16), 4


def conv3d(bands=1, classes=3):
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(bands, 4, 3, padding=1), torch.nn.Tanh(),
        torch.nn.Conv3d(4, classes, 3, padding=1),
    )  # fmt: skip
    return net.eval()


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(3).random((1, 30, 41, 37)).astype(np.float32)


def test_a_volume_equals_whole_volume_inference_for_every_chunking(volume):
    net = conv3d()
    with torch.no_grad():
        whole = net(torch.from_numpy(volume)[None])[0].numpy()
    runs = [
        sd.segment(da.from_array(volume, chunks=(1, 10, 20, 20)), net, tile_size=TILE,
                   overlap=OVERLAP, output="logits", chunks=chunks).compute()
        for chunks in [(30, 41, 37), (8, 12, 12), (16, 32, 16), (12, 16, 40)]
    ]  # fmt: skip
    for run in runs:  # margins (overlap // 2 = 2) cover the field (2 voxels each way)
        np.testing.assert_allclose(run, whole, rtol=0, atol=1e-6)
        np.testing.assert_allclose(run, runs[0], rtol=0, atol=5e-7)
    labels = sd.segment(volume, net, tile_size=TILE, overlap=OVERLAP, chunks=(8, 12, 12))
    np.testing.assert_array_equal(labels, whole.argmax(0))


def test_float64_parts_are_kept_exact_across_chunkings(volume):
    # a neighbour's part waits in float32, as a plane's halos (a gaussian map's weighted sums round
    # by ~3e-8 there); dtype="float64" keeps every part float64: chunkings agree to 1e-12 (one tile
    # a batch: a batch's make-up moves a float32 convolution by ~2e-7)
    net = conv3d()
    runs = [
        sd.segment(da.from_array(volume), net, tile_size=TILE, overlap=OVERLAP, output="logits",
                   weights="gaussian", dtype="float64", batch_size=1, chunks=chunks).compute()
        for chunks in [(30, 41, 37), (8, 12, 12), (12, 16, 40)]
    ]  # fmt: skip
    assert runs[0].dtype == np.float64
    for run in runs[1:]:
        np.testing.assert_allclose(run, runs[0], rtol=0, atol=1e-12)


def test_each_tile_runs_once_and_a_window_runs_only_its_chunks(volume):
    net = helpers.Counting(conv3d())
    lazy = sd.segment(
        da.from_array(volume), net, tile_size=TILE, overlap=OVERLAP, chunks=(8, 12, 12)
    )
    n_tiles = Lattice.build(volume.shape[1:], TILE, OVERLAP).n_tiles
    net.reset()
    lazy.compute()
    assert net.tiles == n_tiles
    net.reset()
    lazy[:10, :12, :12].compute()  # a corner: its chunk and the chunks whose tiles reach it
    assert 0 < net.tiles < n_tiles / 2


@pytest.mark.parametrize(
    ("mode", "weights"),
    [
        ("constant", TileWeights("constant", border_aware=False)),
        ("gaussian", TileWeights("gaussian", sigma=0.125, border_aware=False, floor=MONAI_FLOOR)),
    ],
)
def test_a_monai_3d_unet_equals_monai_s_sliding_window_inference(mode, weights):
    monai_inferers = pytest.importorskip("monai.inferers")
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    volume = np.random.default_rng(2).random((2, 40, 56, 48), np.float32)
    roi = (16, 32, 32)
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(
            torch.from_numpy(volume)[None], roi, 4, net, 0.25, mode=mode, sigma_scale=0.125
        )[0].numpy()
    ours = sd.segment(da.from_array(volume, chunks=(2, 20, 28, 24)), net, tile_size=roi,
                      overlap=0.25, weights=weights, output="logits", chunks=(24, 48, 24))  # fmt: skip
    np.testing.assert_allclose(ours.compute(), theirs, rtol=0, atol=2e-6)
    tiler = sd.VolumeTiler(volume.shape[1:], roi, 0.25, weights=weights)  # the in-memory path
    with torch.no_grad():
        np.testing.assert_allclose(
            ours.compute(), tiler.run(torch.from_numpy(volume)[None], net)[0].numpy(), atol=2e-6
        )


def test_voxels_without_data_are_nodata_never_class_zero(volume):
    net = helpers.Counting(conv3d())
    holed = volume.copy()
    holed[:, :12, :16, :16] = np.nan  # a whole tile of no data: never given to the model
    holed[:, 20, 30, 30] = np.nan
    labels = sd.segment(holed, net, tile_size=TILE, overlap=OVERLAP, chunks=(12, 16, 16),
                        num_classes=3)  # fmt: skip
    assert labels.dtype == np.uint8
    assert (labels[:12, :16, :16][:10, :14, :14] == 255).all() and labels[20, 30, 30] == 255
    valid = ~np.isnan(holed[0])
    assert (labels[valid] < 3).all()
    n_tiles = Lattice.build(volume.shape[1:], TILE, OVERLAP).n_tiles
    assert net.tiles < n_tiles  # the empty tile never ran


def test_dataarrays_keep_their_coords_and_tensors_come_back_as_tensors(volume):
    net = conv3d()
    data = xr.DataArray(
        volume, dims=("band", "z", "y", "x"),
        coords={"z": np.arange(30) * 2.0, "y": np.arange(41) * 0.5, "x": np.arange(37) * 0.5},
    )  # fmt: skip
    out = sd.segment(data, net, tile_size=TILE, overlap=OVERLAP, output="probabilities")
    assert out.dims == ("class", "z", "y", "x") and isinstance(out.data, da.Array)
    np.testing.assert_array_equal(out["z"].values, data["z"].values)
    np.testing.assert_allclose(out.compute().sum("class").values, 1, rtol=1e-5)
    single = sd.segment(data.isel(band=0), net, tile_size=TILE, overlap=OVERLAP)  # (z, y, x)
    assert single.dims == ("z", "y", "x")
    stack = data.transpose("z", "band", "y", "x")  # as an OME-Zarr z-stack opens
    np.testing.assert_array_equal(
        sd.segment(stack, net, tile_size=TILE, overlap=OVERLAP).to_numpy(), single.to_numpy()
    )
    with helpers.raises_mentioning(sd.DimensionError, ["'z' is spatial", "tile_size=(d, h, w)"]):
        sd.segment(data, net, tile_size=16, overlap=4)  # one size: a 2-D model's z-stack?
    tensor = sd.segment(torch.from_numpy(volume), net, tile_size=TILE, overlap=OVERLAP)
    assert isinstance(tensor, torch.Tensor) and tuple(tensor.shape) == (30, 41, 37)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        (
            {"region": "POLYGON ((0 0, 1 0, 1 1, 0 0))"},
            sd.OptionError,
            ["region=", "not for volumes yet"],
        ),
        ({"output": "uncertainty"}, sd.OptionError, ["uncertainty", "not for volumes yet"]),
        ({"tile_size": (12, 16)}, sd.DimensionError, ["'z' is spatial", "tile_size=(d, h, w)"]),
    ],
)
def test_what_volumes_do_not_take_yet_is_refused_with_the_fix(volume, options, error, words):
    data = xr.DataArray(volume, dims=("band", "z", "y", "x"))
    kwargs = {"tile_size": TILE, "overlap": OVERLAP, **options}
    with helpers.raises_mentioning(error, words):
        sd.segment(data, conv3d(), **kwargs)


def test_a_volume_of_the_wrong_rank_names_the_shapes_it_takes():
    with helpers.raises_mentioning(sd.DimensionError, ["(C, Z, Y, X) or (Z, Y, X)"]):
        sd.segment(np.zeros((2, 1, 8, 8, 8)), conv3d(), tile_size=(4, 4, 4))


def test_a_volume_writes_to_zarr_region_by_region_and_resumes(volume, tmp_path):
    data = xr.DataArray(volume, dims=("band", "z", "y", "x"))
    net = helpers.Counting(conv3d())
    labels = sd.segment(data, net, tile_size=TILE, overlap=OVERLAP, chunks=(12, 16, 16))
    store = tmp_path / "v.zarr"
    n_regions = int(np.prod([len(c) for c in labels.chunks]))
    assert sd.to_zarr(labels, store) == n_regions
    back = xr.open_zarr(store)["labels"]
    np.testing.assert_array_equal(back.to_numpy(), labels.to_numpy())
    assert sd.io.is_complete(store)
    with helpers.raises_mentioning(sd.RasterError, ["exists", "resume=True"]):
        sd.to_zarr(labels, store)
    net.reset()
    assert sd.to_zarr(labels, store, resume=True) == 0 and net.tiles == 0  # all done: nothing runs
    import zarr

    done = zarr.open_array(str(store), path="_seamless/done", mode="r+")
    done[0, 0, 0] = 0  # a region lost, as a run stopped before its marker
    first = tuple(slice(0, c[0]) for c in labels.chunks)  # the first region, as written
    zarr.open_array(str(store), path="labels", mode="r+")[first] = 0
    assert sd.to_zarr(labels, store, resume=True) == 1
    n_tiles = Lattice.build(volume.shape[1:], TILE, OVERLAP).n_tiles
    assert 0 < net.tiles < n_tiles  # only the tiles that region needs
    np.testing.assert_array_equal(xr.open_zarr(store)["labels"].to_numpy(), labels.to_numpy())
    probabilities = sd.segment(
        data, conv3d(), tile_size=TILE, overlap=OVERLAP, output="probabilities"
    )
    sd.to_zarr(probabilities, tmp_path / "p.zarr")
    np.testing.assert_allclose(
        xr.open_zarr(tmp_path / "p.zarr")["probabilities"].to_numpy(), probabilities.to_numpy()
    )
    # a GeoTIFF has no z: refused (OME-Zarr takes volumes: tests/io/test_volume_pyramids.py)
    with helpers.raises_mentioning(sd.RasterError, ["writes planes", "sd.to_zarr(result, store)"]):
        sd.to_cog(labels, tmp_path / "v.tif")
    assert not (tmp_path / "v.tif").exists()


def _write_stack(path, volume):
    return support.write_ngff_stack(path, volume)


def test_an_ome_zarr_z_stack_opens_and_segments_as_a_volume(volume, tmp_path):
    path = _write_stack(tmp_path / "stack.ome.zarr", volume)
    stack = sd.open_raster(path)
    assert set(stack.dims) == {"band", "z", "y", "x"}
    labels = sd.segment(stack, conv3d(), tile_size=TILE, overlap=OVERLAP, chunks=(12, 16, 16))
    np.testing.assert_array_equal(
        labels.to_numpy(), sd.segment(volume, conv3d(), tile_size=TILE, overlap=OVERLAP)
    )
    np.testing.assert_allclose(labels["z"].values[:2], [0.0, 2.0])  # physical z kept


@pytest.mark.parametrize("target", ["labels.zarr", "out.ome.zarr"])
def test_the_command_line_segments_a_z_stack_into_zarr_or_ome_zarr(volume, tmp_path, target):
    import zarr

    from seamless_dask.cli import main

    stack = _write_stack(tmp_path / "stack.ome.zarr", volume)
    out = tmp_path / target
    args = ["segment", str(stack), str(out), "--model", "seamless_dask.testing:conv3d_net",
            "--tile-size", "12,16,16", "--overlap", "4", "--chunks", "16", "--no-progress",
            "--scheduler", "threads"]  # fmt: skip
    assert main(args) == 0
    expected = sd.segment(volume, helpers.conv3d_net(), tile_size=TILE, overlap=OVERLAP)
    written = (
        zarr.open_array(str(out), path="0", mode="r")[...]  # the pyramid's level 0
        if target.endswith(".ome.zarr")
        else xr.open_zarr(out)["labels"].to_numpy()
    )
    np.testing.assert_array_equal(written, expected)
    assert zarr.open_group(str(out), mode="r").attrs["seamless_complete"] is True
    assert main([*args, "--resume"]) == 0  # finished: nothing to do


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"OUT": "labels.tif"}, ["written to a .zarr or .ome.zarr store"]),
        ({"--quicklook": "q.png"}, ["--quicklook is for planes"]),
        ({"SOURCE": "plane"}, ["has no z axis", "--tile-size N or Y,X"]),
    ],
)
def test_the_command_line_refuses_what_a_volume_cannot_take(volume, tmp_path, write_scene, change, words,
                                                           capsys):  # fmt: skip
    from seamless_dask.cli import main

    source = (
        write_scene(120) if change.get("SOURCE") else _write_stack(tmp_path / "s.ome.zarr", volume)
    )
    args = ["segment", str(source), str(tmp_path / change.get("OUT", "labels.zarr")), "--model",
            "seamless_dask.testing:conv3d_net", "--tile-size", "12,16,16", "--overlap", "4"]  # fmt: skip
    if "--quicklook" in change:
        args += ["--quicklook", str(tmp_path / change["--quicklook"])]
    assert main(args) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_a_volume_store_resumes_only_as_the_same_job(volume, tmp_path):
    data = xr.DataArray(volume, dims=("band", "z", "y", "x"))
    store = tmp_path / "v.zarr"
    sd.to_zarr(sd.segment(data, conv3d(), tile_size=TILE, overlap=OVERLAP), store)
    other = conv3d()
    with torch.no_grad():
        other[0].weight.mul_(2)  # the same architecture, other weights
    changed = sd.segment(data, other, tile_size=TILE, overlap=OVERLAP)
    with helpers.raises_mentioning(sd.RasterError, ["another job", "model.weights"]):
        sd.to_zarr(changed, store, resume=True)


@pytest.mark.parametrize("kind", ["ome", "imagej"])
def test_a_tiff_stack_opens_lazily_with_its_z_spacing_and_segments_as_a_volume(
    volume, tmp_path, kind
):
    import tifffile

    planes = np.moveaxis(volume, 0, 1)  # (z, c, y, x), as microscopes write them
    if kind == "ome":
        path = tmp_path / "stack.ome.tif"
        meta = {"axes": "ZCYX", "PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5}
        tifffile.imwrite(path, planes, metadata=meta, ome=True)
        stack = sd.open_raster(path)
    else:
        path = tmp_path / "stack.tif"
        tifffile.imwrite(path, planes, imagej=True, metadata={"axes": "ZCYX", "spacing": 2.0})
        stack = sd.open_raster(path, engine="tifffile")
    assert stack.dims == ("z", "band", "y", "x") and isinstance(stack.data, da.Array)
    np.testing.assert_allclose(stack["z"].values[:3], [0.0, 2.0, 4.0])
    labels = sd.segment(stack, conv3d(), tile_size=TILE, overlap=OVERLAP)
    np.testing.assert_array_equal(
        labels.to_numpy(), sd.segment(volume, conv3d(), tile_size=TILE, overlap=OVERLAP)
    )


def test_trim_warns_when_its_margins_miss_the_field_and_not_when_they_cover_it(volume):
    net = helpers.Counting(conv3d())  # two 3x3x3 convolutions: 2 voxels each way
    with pytest.warns(
        sd.ReceptiveFieldWarning, match=r"reaches 2 x 2 x 2 voxels.*overlap=\(4,4,4\)"
    ):
        sd.segment(volume, net, tile_size=TILE, overlap=2, num_classes=3)
    assert net.tiles == Lattice.build(volume.shape[1:], TILE, 2).n_tiles  # the probe is not a tile
    with warnings.catch_warnings():
        warnings.simplefilter("error", sd.ReceptiveFieldWarning)
        sd.segment(volume, conv3d(), tile_size=TILE, overlap=OVERLAP)  # margins 2 cover it


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_the_progress_bar_counts_every_tile_of_a_volume_once(volume, tmp_path, output):
    seen = []
    data = xr.DataArray(da.from_array(volume, chunks=(1, 10, 20, 20)), dims=("band", "z", "y", "x"))
    lazy = sd.segment(data, conv3d(), tile_size=TILE, overlap=OVERLAP, chunks=(8, 12, 12),
                      output=output)  # fmt: skip
    sd.to_zarr(lazy, tmp_path / "v.zarr", progress=lambda done, total: seen.append((done, total)))
    n_tiles = Lattice.build(volume.shape[1:], TILE, OVERLAP).n_tiles
    assert seen[0] == (0, n_tiles) and seen[-1] == (n_tiles, n_tiles)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # one count a chunk, never back
    assert len(seen) > 2  # chunk by chunk, not all at the end
