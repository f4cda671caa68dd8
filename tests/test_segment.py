import dask
import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

import seamless_dask as sd
from seamless_dask import DimensionError, ModelOutputError, OptionError, TileGrid, WeightsError
from seamless_dask import testing as helpers
from seamless_dask.graph.chunk_size import in_memory_chunk

NET = helpers.conv_net(bands=2, classes=3)
WHOLE = 10**6  # one chunk: the in-memory reference


def run(image, model=NET, **kwargs):
    kwargs.setdefault("num_classes", 3)
    return sd.segment(image, model, **kwargs)


@st.composite
def cases(draw):
    height, width = draw(st.integers(1, 70)), draw(st.integers(1, 70))
    tile = (draw(st.integers(1, 32)), draw(st.integers(1, 32)))
    overlap = tuple(draw(st.integers(0, t - 1)) for t in tile)
    input_chunks = (draw(st.integers(1, 70)), draw(st.integers(1, 70)))
    return (height, width), tile, overlap, input_chunks


@given(cases(), st.one_of(st.none(), st.integers(1, 80)))
def test_i2_chunk_invariance_over_shapes_tiles_overlaps_and_chunkings(case, chunks):
    (height, width), tile, overlap, input_chunks = case
    image = helpers.structured_image(2, height, width)
    opts = {"tile_size": tile, "overlap": overlap}
    ref_probs = run(image, output="probabilities", chunks=WHOLE, **opts)
    ref_labels = run(image, output="labels", chunks=WHOLE, **opts)
    # bands split too: segment must rechunk them
    lazy = da.from_array(image, chunks=(1, *input_chunks))
    probs = run(lazy, output="probabilities", chunks=chunks, **opts).compute()
    labels = run(lazy, output="labels", chunks=chunks, **opts).compute()
    np.testing.assert_allclose(probs, ref_probs, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((61, 89), 1),
        ((61, 89), 7),
        ((61, 89), 23),
        ((61, 89), (11, 50)),
        ((5, 7), 3),
        ((127, 3), 2),
        ((97, 101), 40),
    ],
)
def test_i2_awkward_cases_match_the_in_memory_path(shape, chunks):
    image = helpers.structured_image(2, *shape, seed=3)
    ref = run(image, output="probabilities", tile_size=(16, 24), overlap=(9, 5), chunks=WHOLE)
    out = run(image, output="probabilities", tile_size=(16, 24), overlap=(9, 5), chunks=chunks)
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("chunks", [None, 1, 8, 17, 33, (9, 64), WHOLE])
def test_i3_every_tile_reaches_the_model_exactly_once_whatever_the_chunking(chunks):
    image = helpers.structured_image(2, 83, 71)
    counting = helpers.Counting(NET)
    result = run(image, counting, tile_size=16, overlap=6, chunks=chunks)
    assert result.shape == (83, 71)
    # ceil((83-16)/10)+1 by ceil((71-16)/10)+1
    assert counting.tiles == TileGrid((83, 71), 16, 6).n_tiles == 8 * 7


def test_i3_a_small_window_of_the_lazy_result_runs_only_the_tiles_near_it():
    image = da.from_array(helpers.structured_image(2, 400, 400), chunks=(2, 100, 100))
    counting = helpers.Counting(NET)
    lazy = run(image, counting, tile_size=32, overlap=8)
    assert counting.tiles == 0  # building the graph runs nothing
    lazy[:10, :10].compute()
    grid = TileGrid((400, 400), 32, 8)
    plan = grid.plan_chunks(100)
    assert counting.tiles == len(plan.owned(0, 0)) < grid.n_tiles / 10
    counting.reset()
    lazy[200:210, 200:210].compute()  # an inner window: its chunk and the three before it
    j, k = (np.searchsorted(plan.y_bounds, 200, side="right") - 1,) * 2
    near = {i for dj in (0, 1) for dk in (0, 1) for i in plan.owned(j - dj, k - dk)}
    assert counting.tiles == len(near) < grid.n_tiles / 3


def test_i5_identity_model_reconstructs_the_input():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (3, 123, 157)).astype(np.float32)
    for weights in ("trust", "spline", "gaussian", "constant"):
        out = sd.segment(
            image,
            helpers.Identity(),
            tile_size=32,
            overlap=12,
            output="logits",
            chunks=50,
            weights=weights,
        )
        error = np.abs(out - image).max() / np.ptp(image)
        assert error <= 1e-6, (weights, error)


def test_blending_removes_seams_that_naive_tiling_leaves():
    image = helpers.structured_image(2, 96, 96, seed=5)
    whole = NET(torch.from_numpy(image)[None]).softmax(1)[0].detach().numpy()
    blended = run(image, output="probabilities", tile_size=32, overlap=16, chunks=40)
    naive = run(image, output="probabilities", tile_size=32, overlap=0, weights="constant")
    blended_err, naive_err = np.abs(blended - whole).max(), np.abs(naive - whole).max()
    assert blended_err < naive_err / 3, (blended_err, naive_err)


def _paths(image):
    """The same image as numpy, torch, dask, and numpy- and dask-backed DataArrays."""
    xarr = xr.DataArray(image, dims=("band", "y", "x"))
    return {
        "numpy": image,
        "torch": torch.from_numpy(image),
        "dask": da.from_array(image, chunks=(2, 30, 30)),
        "xarray": xarr,
        "xarray-dask": xarr.chunk({"y": 25, "x": 40}),
    }


def test_numpy_torch_dask_and_xarray_paths_agree():
    image = helpers.structured_image(2, 70, 90)
    outs = {
        name: run(data, output="probabilities", tile_size=24, overlap=8)
        for name, data in _paths(image).items()
    }
    assert isinstance(outs["numpy"], np.ndarray)
    assert isinstance(outs["torch"], torch.Tensor)
    assert isinstance(outs["dask"], da.Array)
    assert isinstance(outs["xarray"].data, da.Array) and isinstance(
        outs["xarray-dask"].data, da.Array
    )
    for name, out in outs.items():
        # np.asarray does not compute array-expr
        computed = out.compute() if hasattr(out, "compute") else out
        np.testing.assert_allclose(np.asarray(computed), outs["numpy"], atol=1e-6, err_msg=name)


def test_xarray_output_keeps_coords_and_attrs():
    image = helpers.structured_image(2, 40, 50)
    data = xr.DataArray(
        image,
        dims=("band", "y", "x"),
        coords={
            "band": [1, 2],
            "y": np.arange(40) * -10.0 + 500,
            "x": np.arange(50) * 10.0,
            "spatial_ref": 0,
        },
        attrs={"long_name": "scene", "_FillValue": 0, "source": "test"},
    )
    labels = run(data, tile_size=16, overlap=4)
    assert labels.dims == ("y", "x") and labels.dtype == np.uint8 and labels.name == "labels"
    np.testing.assert_array_equal(labels.y, data.y)
    np.testing.assert_array_equal(labels.x, data.x)
    assert "spatial_ref" in labels.coords and "band" not in labels.coords
    # The input's nodata (0) is not the labels' nodata: labels get their own, 255 for uint8.
    assert labels.attrs["source"] == "test" and labels.rio.nodata == 255
    assert labels.attrs["seamless_tile_size"] == [16, 16]
    probs = run(data, tile_size=16, overlap=4, output="probabilities")
    assert probs.dims == ("class", "y", "x") and list(probs["class"].values) == [0, 1, 2]
    assert np.isnan(probs.rio.nodata)
    np.testing.assert_array_equal(probs.compute().argmax("class").values, labels.compute().values)


def test_two_dimensional_inputs_are_single_band():
    image = helpers.structured_image(1, 40, 30)[0]
    net = helpers.conv_net(bands=1, classes=3)
    out = sd.segment(xr.DataArray(image, dims=("y", "x")), net, tile_size=16, overlap=4)
    np.testing.assert_array_equal(
        out.compute().values, sd.segment(image, net, tile_size=16, overlap=4)
    )


def test_probe_call_finds_the_classes_when_num_classes_is_omitted():
    counting = helpers.Counting(helpers.conv_net(bands=2, classes=5))
    lazy = sd.segment(
        da.zeros((2, 50, 50), chunks=25), counting, tile_size=16, overlap=4, output="probabilities"
    )
    assert lazy.shape == (5, 50, 50) and counting.batches == [1]


def test_dict_and_tuple_output_models_segment_like_the_plain_model():
    image = helpers.structured_image(2, 50, 60)
    plain = run(image, tile_size=20, overlap=6, output="probabilities")
    for wrapped in (helpers.DictOut(NET), helpers.TupleOut(NET)):
        np.testing.assert_allclose(
            run(image, wrapped, tile_size=20, overlap=6, output="probabilities"), plain
        )


def test_labels_use_the_smallest_unsigned_dtype():
    image = helpers.structured_image(2, 20, 20)
    many = torch.nn.Conv2d(2, 300, 1)
    labels = sd.segment(image, many, tile_size=8, overlap=2)
    assert labels.dtype == np.uint16 and labels.max() < 300


def test_binary_sigmoid_model_labels_are_the_thresholded_probability():
    image = helpers.structured_image(2, 40, 40)
    one = helpers.conv_net(bands=2, classes=1)
    probs = sd.segment(
        image, one, tile_size=16, overlap=4, activation="sigmoid", output="probabilities"
    )
    labels = sd.segment(image, one, tile_size=16, overlap=4, activation="sigmoid")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (probs[0] >= 0.5).astype(np.uint8))


def test_a_failing_model_fails_the_job_instead_of_leaving_zeros():
    def flaky(x):
        if x.mean() > 0.3:
            raise RuntimeError("model exploded")
        return NET(x)

    lazy = run(
        da.from_array(helpers.structured_image(2, 64, 64), chunks=32),
        flaky,
        tile_size=16,
        overlap=4,
    )
    with pytest.raises(RuntimeError, match="model exploded"):
        lazy.compute()


def test_a_model_whose_channel_count_disagrees_with_num_classes_is_an_error():
    lazy = run(da.zeros((2, 30, 30), chunks=15), num_classes=4, tile_size=16, overlap=4)
    with pytest.raises(
        ModelOutputError, match=r"returned 3 channels but 4 were expected.*num_classes"
    ):
        lazy.compute()


def test_graph_keys_are_deterministic():
    image = da.zeros((2, 64, 64), chunks=32)
    a = run(image, tile_size=16, overlap=4)
    b = run(image, tile_size=16, overlap=4)
    c = run(image, tile_size=16, overlap=6)
    assert a.name == b.name != c.name


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            xr.DataArray(np.zeros((8, 8)), dims=("lat", "lon")),
            ["got ('lat', 'lon')", "rename({'lat': 'y', 'lon': 'x'})"],
        ),
        # leading dims are mapped over (tests/test_batches.py); the bands come just before y, x
        (
            xr.DataArray(np.zeros((2, 2, 8, 8)), dims=("band", "level", "y", "x")),
            ["put 'band' before 'level'", "transpose('level', 'band', 'y', 'x')"],
        ),
        (np.zeros((64, 64, 2)), ["channels-last", "channel_axis=-1"]),
        (np.zeros((2, 2, 2, 8, 8)), ["(N, bands, H, W)", "5 dims", "reshape"]),
        (np.zeros((2, 0, 8)), ["empty", "(0, 8)"]),
        (np.zeros((2, 8, 8), dtype=complex), ["complex pixels (complex128)", "data.real"]),
        ([[1, 2], [3, 4]], ["must be an xarray.DataArray", "list"]),
    ],
)
def test_bad_inputs_name_rule_value_and_fix(data, words):
    with helpers.raises_mentioning(DimensionError, words):
        run(data, tile_size=4, overlap=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"output": "mask"}, OptionError, "output must be one of"),
        ({"num_classes": 0}, OptionError, "num_classes must be a positive int"),
        ({"num_classes": "3"}, OptionError, "num_classes must be a positive int"),
        ({"weights": np.ones((5, 5))}, WeightsError, "tile's shape (8, 8)"),
        ({"tile_size": 8, "overlap": 8}, sd.TilingError, "overlap must be smaller than tile_size"),
        ({"chunks": 0}, sd.TilingError, "chunks must be positive"),
    ],
)
def test_bad_options_name_rule_value_and_fix(kwargs, error, words):
    kwargs = {"tile_size": 8, "overlap": 2, **kwargs}
    with pytest.raises(error) as info:
        run(np.zeros((2, 16, 16), np.float32), **kwargs)
    assert words in str(info.value)


def test_segment_runs_on_the_synchronous_scheduler_too():
    image = helpers.structured_image(2, 50, 50)
    with dask.config.set(scheduler="synchronous"):
        out = run(image, tile_size=16, overlap=4, chunks=20)
    np.testing.assert_array_equal(out, run(image, tile_size=16, overlap=4))


def test_tta_views_are_mapped_back_and_each_is_one_model_call():
    image = helpers.structured_image(2, 48, 48)
    identity = helpers.Counting(helpers.Identity())
    out = sd.segment(
        image, identity, tile_size=16, overlap=4, output="logits", tta="d4", num_classes=2
    )
    np.testing.assert_allclose(out, image, atol=1e-6)
    assert identity.tiles == 8 * TileGrid((48, 48), 16, 4).n_tiles
    # a model that is not flip-equivariant: "flips" is the mean of the four mirrored predictions
    x = torch.from_numpy(image)[None]
    views = [(), (3,), (2,), (2, 3)]
    expected = (
        sum(
            NET(x.flip(d) if d else x).softmax(1).flip(d) if d else NET(x).softmax(1) for d in views
        )
        / 4
    )
    out = run(image, output="probabilities", tile_size=48, overlap=0, tta="flips")
    np.testing.assert_allclose(out, expected[0].detach().numpy(), atol=1e-5)


def test_tta_must_be_a_known_mode():
    with pytest.raises(OptionError, match="tta must be one of"):
        run(np.zeros((2, 8, 8), np.float32), tile_size=4, overlap=1, tta="rot")


def test_xarray_accessor_is_the_same_api():
    image = xr.DataArray(helpers.structured_image(2, 40, 60), dims=("band", "y", "x")).chunk(
        {"y": 20}
    )
    via_accessor = image.seamless.segment(NET, tile_size=16, overlap=4, num_classes=3)
    np.testing.assert_array_equal(
        via_accessor.compute().values, run(image, tile_size=16, overlap=4).compute().values
    )
    chunk_plan = image.seamless.plan(tile_size=16, overlap=4)
    assert chunk_plan.grid.shape == (40, 60) and chunk_plan.chunks[0] == (24, 16)


def test_the_model_is_one_key_of_the_graph_not_a_copy_per_task():
    import pickle

    model = helpers.Heavy()  # 4 MB of weights
    image = da.zeros((2, 640, 640), chunks=(2, 64, 64), dtype=np.float32)
    lazy = run(image, model, tile_size=32, overlap=8, chunks=64)
    n_chunks = len(lazy.chunks[0]) * len(lazy.chunks[1])
    assert n_chunks >= 80
    size = len(pickle.dumps(dict(lazy.__dask_graph__())))
    assert 4_000_000 < size < 6_000_000  # one copy of the model, not one per chunk
    # tasks grow with chunks, never with tiles: 16 times more tiles, the same graph
    many_tiles = run(image, model, tile_size=8, overlap=2, chunks=72)
    assert many_tiles.chunks == lazy.chunks
    assert len(many_tiles.__dask_graph__()) == len(lazy.__dask_graph__())


@pytest.mark.slow
def test_i2_large_image_many_chunks_match_one_chunk():
    image = helpers.structured_image(2, 1500, 1300, seed=7)
    ref = run(image, output="probabilities", tile_size=128, overlap=32, chunks=WHOLE)
    for chunks in (100, 300, (250, 700)):
        out = run(
            da.from_array(image, chunks=(2, 333, 257)),
            output="probabilities",
            tile_size=128,
            overlap=32,
            chunks=chunks,
        )
        np.testing.assert_allclose(out.compute(), ref, atol=1e-6)


@pytest.mark.parametrize("chunks", [None, 40])
def test_i6_trim_matches_whole_image_inference_when_the_margin_covers_the_receptive_field(chunks):
    """Two 3x3 convs see 2 px each way; with overlap 8 (a 4 px margin) each pixel comes from a tile in which
    it lies at least 4 px from any edge but the image's, so the result is the whole-image result."""
    image = helpers.structured_image(3, 150, 122) / 255
    net = helpers.conv_net(bands=3, classes=4)
    with torch.inference_mode():
        whole = net(torch.from_numpy(image)[None].float())[0].numpy()
    trim = sd.segment(
        image, net, tile_size=32, overlap=8, output="logits", weights="trim", chunks=chunks
    )
    np.testing.assert_allclose(trim, whole, atol=2e-5)
    trust = sd.segment(
        image, net, tile_size=32, overlap=8, output="logits", weights="trust", chunks=chunks
    )
    # blending keeps edge errors
    assert np.abs(trust - whole).max() > 100 * np.abs(trim - whole).max()


@pytest.mark.parametrize(
    ("side", "stride", "batch", "expected"),
    [
        (2048, 192, 8, 768),  # three chunks a side, each at least two batches (4 x 4 tiles)
        (4096, 192, 8, 1024),  # capped at 1024 px
        (500, 192, 8, 768),  # a small image: one chunk (two batches of tiles do not fit)
        (4096, 192, 32, 1536),  # bigger batches, bigger chunks: 8 x 8 tiles hold two batches of 32
        (40000, 448, 8, 1792),
    ],
)
def test_in_memory_images_get_chunks_that_keep_every_core_busy(side, stride, batch, expected):
    assert in_memory_chunk(side, stride, batch) == expected


def test_an_in_memory_image_is_split_so_that_cores_share_it_and_the_result_does_not_change():
    image = np.random.default_rng(0).random((3, 2048, 2048), dtype=np.float32) * 255
    lazy = sd.segment(
        xr.DataArray(image, dims=("band", "y", "x")), helpers.Brightness(), tile_size=256
    )
    assert lazy.data.numblocks == (3, 3)
    whole = sd.segment(image, helpers.Brightness(), tile_size=256, chunks=4096)
    np.testing.assert_array_equal(lazy.compute().values, whole)


def test_i4_a_chunk_holds_a_strip_of_sums_never_its_whole_accumulator():
    """Stage 1 sums a tile's height of rows at a time and settles them as they come: a 1024 px chunk's peak
    allocation stays far below the float64 accumulator of the whole chunk (what it held before), and the
    labels equal those of a small chunking.
    """
    import tracemalloc

    image = (helpers.structured_image(3, 1024, 1024) * 255).astype(np.uint8)
    options = {"tile_size": 64, "overlap": 16, "num_classes": 2}
    lazy = sd.segment(
        da.from_array(image, chunks=(3, 1024, 1024)), helpers.Brightness(), chunks=1024, **options
    )
    expected = sd.segment(image, helpers.Brightness(), chunks=192, **options)
    tracemalloc.start()
    try:
        with dask.config.set(scheduler="synchronous"):
            labels = lazy.compute()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    accumulator = 3 * 1024 * 1024 * 8  # two classes and the weight, float64, over the chunk alone
    assert peak < accumulator / 4, f"{peak / 2**20:.1f} MiB"  # 34.0 MiB before, 5.4 now
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(("weights", "rows"), [("trim", 8), ("trust", 16), ("constant", 16)])
def test_halo_strips_hold_only_the_rows_and_columns_the_weights_reach(weights, rows):
    """A chunk hands its neighbours the sums its tiles' weights reach: the whole overlap for maps that are never
    zero, half of it for "trim", whose margins are zero (the strips waiting a row of chunks are half as large).
    """
    image = helpers.structured_image(2, 120, 130, seed=5)
    lazy = run(
        da.from_array(image, chunks=(2, 50, 50)),
        tile_size=48,
        overlap=16,
        weights=weights,
        chunks=64,
    )
    graph = dict(lazy.__dask_graph__())
    halos = sorted(k for k in graph if str(k[0]).startswith("seamless-halo-"))
    # the last row and column owe nothing
    assert [k[-2:] for k in halos] == [
        (0, 0),
        (0, 1),
        (1, 0),
    ]
    parts = dask.get(graph, halos[0])
    assert (
        parts.bottom.shape[1] == rows
        and parts.right.shape[2] == rows
        and parts.corner.shape[1:] == (rows, rows)
    )
    reference = run(image, tile_size=48, overlap=16, weights=weights, chunks=WHOLE)
    np.testing.assert_array_equal(lazy.compute(), reference)


def test_model_tasks_side_by_side_share_the_batch():
    """``batch_size`` tiles are in the model at once in a process: two stage-1 tasks running together take
    half a batch each (each model call holds its batch's activations), one alone a whole batch.
    """
    import threading
    import time

    from seamless_dask.blend.accumulate import ModelShare

    share = ModelShare()
    assert share.batch(8) == 8
    with share.joined():
        assert share.batch(8) == 8
        with share.joined():
            assert share.batch(8) == 4 and share.batch(1) == 1
        # a task ended, the next one is on its way: no whole batch in between
        assert share.batch(8) == 4
    # idle: the next task alone takes a whole batch
    assert share.running == 0 and share.batch(8) == 8

    calls: list[int] = []
    lock = threading.Lock()

    class Slow(helpers.Brightness):
        def forward(self, x):
            with lock:
                calls.append(len(x))
            time.sleep(0.005)  # long enough for the two threads' tasks to overlap
            return super().forward(x)

    image = helpers.structured_image(3, 600, 600) * 255
    options = {"tile_size": 64, "overlap": 16, "num_classes": 2, "batch_size": 8, "chunks": 200}
    with dask.config.set(scheduler="threads", num_workers=2):
        shared = sd.segment(da.from_array(image, chunks=(3, 200, 200)), Slow(), **options).compute()
    with dask.config.set(scheduler="synchronous"):
        alone = sd.segment(
            da.from_array(image, chunks=(3, 200, 200)), helpers.Brightness(), **options
        ).compute()
    assert max(calls) == 8 and 4 in calls  # whole batches alone, halves side by side
    np.testing.assert_array_equal(shared, alone)


def test_an_image_in_memory_is_computed_with_one_malloc_arena_unless_told_not_to(monkeypatch):
    import importlib

    # the module, not the function of that name
    front = importlib.import_module("seamless_dask.segment")

    calls = []
    monkeypatch.setattr(front, "_one_malloc_arena", lambda: calls.append(1))
    image = helpers.structured_image(3, 64, 64) * 255
    options = {"tile_size": 32, "overlap": 8, "num_classes": 2}
    sd.segment(image, helpers.Brightness(), **options)
    with dask.config.set({"seamless_dask.one_malloc_arena": False}):
        sd.segment(image, helpers.Brightness(), **options)
    # lazy: the caller computes it
    sd.segment(da.from_array(image), helpers.Brightness(), **options)
    assert calls == [1]


def test_the_batch_size_changes_no_label_and_the_scores_only_by_float_noise():
    """docs/design.md says the batch size is left out of the job record because it does not change
    pixels (issue 32: threads on other tools show outputs drifting with the batch size). MONAI's
    BasicUNet (batch norm in eval mode, so no batch statistics) on CPU."""
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = BasicUNet(
        spatial_dims=2, in_channels=3, out_channels=3, features=(8, 8, 16, 16, 32, 8)
    ).eval()
    image = np.random.default_rng(0).normal(size=(3, 200, 190)).astype("float32")
    runs = {
        b: sd.segment(image, net, tile_size=64, overlap=16, batch_size=b, output="probabilities")
        for b in (1, 3, 8)
    }
    for b in (3, 8):
        np.testing.assert_array_equal(runs[b].argmax(0), runs[1].argmax(0))
        assert np.abs(runs[b] - runs[1]).max() < 1e-5  # float32 noise of a differently sized GEMM
