"""Writes on a distributed cluster go wave of chunk rows by wave: the scheduler holds what two waves need, not
the scene's whole graph, each tile still runs once, and the result is the same as one submission's.
"""

import threading

import dask
import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from distributed import Client, LocalCluster, SchedulerPlugin

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers
from seamless_dask.cluster import wave_plan, waves
from seamless_dask.cluster.workers import ensure_scheduler_plugins
from seamless_dask.graph.layers import array_expr

TILE = {"tile_size": 32, "overlap": 8, "num_classes": 2, "chunks": 64}


class PeakTasks(SchedulerPlugin):
    """Counts the graphs the scheduler is sent and the most tasks it held at once."""

    name = "test-peak-tasks"

    def __init__(self, scheduler):
        self.scheduler, self.peak, self.graphs = scheduler, 0, 0

    def update_graph(self, scheduler, **kwargs):
        self.graphs += 1

    def transition(self, key, start, finish, *args, **kwargs):
        self.peak = max(self.peak, len(self.scheduler.tasks))


class CountingBrightness(torch.nn.Module):
    """Brightness that counts its tiles in the class (the in-process workers share it) and fails past a limit."""

    tiles = 0
    fail_after: float = float("inf")
    lock = threading.Lock()

    def forward(self, x):
        with CountingBrightness.lock:
            CountingBrightness.tiles += x.shape[0]
            if CountingBrightness.tiles > CountingBrightness.fail_after:
                raise RuntimeError("CUDA out of memory (simulated, after some waves)")
        return helpers.Brightness()(x)


@pytest.fixture
def cluster():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as local,
        Client(local) as client,
    ):
        ensure_scheduler_plugins(client)
        plugin = PeakTasks(local.scheduler)
        local.scheduler.add_plugin(plugin)
        yield client, plugin


def _scene(height, width=320):
    return xr.DataArray(helpers.structured_image(3, height, width), dims=("band", "y", "x"))


def _write(result, store, wave_chunks, plugin, **options):
    plugin.peak, plugin.graphs, CountingBrightness.tiles = 0, 0, 0
    with dask.config.set({waves.CONFIG: wave_chunks}):
        return sd.to_zarr(result, store, **options)


def test_a_banded_write_runs_each_tile_once_and_equals_the_local_result(cluster, tmp_path):
    client, plugin = cluster
    out = sd.segment(_scene(640, 640), CountingBrightness(), **TILE)
    expected = out.compute(scheduler="threads").values
    tiles = sd.TileGrid((640, 640), 32, 8).n_tiles

    rows, cols = out.data.numblocks
    assert _write(out, tmp_path / "banded.zarr", cols, plugin) == rows * cols
    banded_peak, banded_graphs = plugin.peak, plugin.graphs
    # halo strips handed from wave to wave, never recomputed
    assert CountingBrightness.tiles == tiles
    np.testing.assert_array_equal(sd.open_raster(tmp_path / "banded.zarr").values[0], expected)
    assert io.is_complete(tmp_path / "banded.zarr")

    _write(out, tmp_path / "whole.zarr", 10**6, plugin)
    assert plugin.graphs == 1 and banded_graphs >= rows
    assert banded_peak < 0.6 * plugin.peak, (banded_peak, plugin.peak)
    assert not client.futures  # nothing held once the write returns


def test_tasks_held_stay_flat_as_the_scene_grows(cluster, tmp_path):
    _, plugin = cluster
    peaks = {}
    for height in (320, 1280):
        out = sd.segment(_scene(height), CountingBrightness(), **TILE)
        _write(out, tmp_path / f"{height}.zarr", 5, plugin)
        peaks[height] = plugin.peak
        _write(out, tmp_path / f"{height}-whole.zarr", 10**6, plugin)
        peaks[height, "whole"] = plugin.peak
    assert peaks[1280, "whole"] > 3 * peaks[320, "whole"]  # one submission holds the scene's graph
    # waves hold two waves' tasks, whatever the scene's height (the scheduler forgets a wave's tasks a little late)
    assert peaks[1280] <= 1.5 * peaks[320] and peaks[1280] < 0.3 * peaks[1280, "whole"], peaks


def test_a_failing_band_fails_the_write_with_its_error_and_the_written_bands_resume(
    cluster, tmp_path
):
    client, plugin = cluster
    model = CountingBrightness()
    out = sd.segment(_scene(640), model, **TILE)
    store = tmp_path / "labels.zarr"
    CountingBrightness.fail_after = 200
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            _write(out, store, 5, plugin)
    finally:
        CountingBrightness.fail_after = float("inf")
    done = np.asarray(zarr.open_array(store, path=io.DONE, mode="r")[...]).astype(bool)
    # written waves kept, never zeros for the rest
    assert 0 < done.sum() < done.size and not io.is_complete(store)
    assert not client.futures

    assert _write(out, store, 5, plugin, resume=True) == int((~done).sum())
    np.testing.assert_array_equal(
        sd.open_raster(store).values[0], out.compute(scheduler="threads").values
    )
    assert io.is_complete(store)


def test_cog_and_ome_zarr_writes_go_by_bands_too(cluster, tmp_path):
    _, plugin = cluster
    out = sd.segment(_scene(640), CountingBrightness(), **TILE)
    expected = out.compute(scheduler="threads").values
    with dask.config.set({waves.CONFIG: 5}):
        plugin.graphs = 0
        sd.to_cog(out, tmp_path / "labels.tif")
        assert plugin.graphs > 5
        np.testing.assert_array_equal(sd.open_raster(tmp_path / "labels.tif").values[0], expected)
        plugin.graphs = 0
        sd.to_ome_zarr(out, tmp_path / "labels.ome.zarr")
        assert plugin.graphs > 5
    level0 = zarr.open_array(tmp_path / "labels.ome.zarr", path="0", mode="r")[...]
    np.testing.assert_array_equal(np.squeeze(level0), expected)


def test_each_task_is_planned_into_one_band_and_held_until_the_last_band_that_needs_it():
    out = sd.segment(_scene(320, 192), helpers.Brightness(), **TILE)
    writes = io.to_zarr(out, "memory://waves-plan.zarr", compute=False)
    rows, cols = out.data.numblocks
    plan = wave_plan.plan_waves(writes.__dask_graph__(), writes.key, cols)
    assert plan is not None and len(plan.waves) == rows > 2  # a row a wave
    seen: set = set()
    for b, wave in enumerate(plan.waves):
        assert not seen & set(wave.tasks)  # no task in two waves: no tile computed twice
        seen |= set(wave.tasks)
        assert {key[-2] for key in wave.writes} == {b}
        for key in wave.release:
            assert any(key in earlier.hold for earlier in plan.waves[:b])
    blocks = {key for row in out.data.__dask_keys__() for key in row}
    # each output block runs in its write
    assert seen == set(dict(writes.__dask_graph__())) - {writes.key} - blocks
    assert all(block not in wave.tasks for wave in plan.waves for block in blocks)


@pytest.mark.skipif(array_expr(), reason="that engine's graphs are planned whole (plan_waves)")
@pytest.mark.parametrize(
    ("height", "width", "wave_chunks"), [(320, 192, 3), (640, 320, 2), (330, 200, 7)]
)
def test_bands_made_as_they_are_submitted_are_those_planned_from_the_whole_graph(
    height, width, wave_chunks
):
    out = sd.segment(_scene(height, width), helpers.Brightness(), **TILE)
    writes = io.to_zarr(out, f"memory://lazy-{height}-{wave_chunks}.zarr", compute=False)
    whole = wave_plan.plan_waves(writes.__dask_graph__(), writes.key, wave_chunks)
    lazy = wave_plan.lazy_waves(writes.__dask_graph__(), writes.key, wave_chunks)
    assert whole is not None and lazy is not None and len(whole.waves) >= 2
    made = list(lazy)
    assert len(made) == len(whole.waves)
    for one, other in zip(made, whole.waves, strict=True):
        assert (sorted(one.writes, key=str), one.tasks.keys(), one.hold, one.release) == (
            sorted(other.writes, key=str),
            other.tasks.keys(),
            other.hold,
            other.release,
        )


def test_writes_that_read_other_writes_are_planned_from_the_whole_graph():
    out = sd.segment(_scene(320, 192), helpers.Brightness(), **TILE)
    writes = io.to_ome_zarr(out, "memory://lazy-pyramid.ome.zarr", levels=2, compute=False)
    # its levels read level 0
    assert wave_plan.lazy_waves(writes.__dask_graph__(), writes.key, 3) is None
    assert wave_plan.plan_waves(writes.__dask_graph__(), writes.key, 3) is not None


@pytest.mark.skipif(array_expr(), reason="that engine's graphs are planned whole (plan_waves)")
@pytest.mark.parametrize("wave_chunks", [2, 4])
def test_bands_over_an_input_chunked_across_the_result_run_each_task_once_and_find_what_they_read(
    wave_chunks,
):
    image = _scene(448, 640).chunk({"y": 100, "x": 100})  # the input's chunks across the result's
    out = sd.segment(image, helpers.Brightness(), **TILE)
    writes = io.to_zarr(out, f"memory://once-{wave_chunks}.zarr", compute=False)
    held: set = set()
    seen: set = set()
    for wave in wave_plan.lazy_waves(writes.__dask_graph__(), writes.key, wave_chunks):
        assert not seen & wave.tasks.keys()  # no task runs twice
        assert all(
            d in wave.tasks or d in held for node in wave.tasks.values() for d in node.dependencies
        )
        seen |= wave.tasks.keys()
        held = (held | wave.hold) - wave.release
    assert not held and out.data.numblocks[1] % wave_chunks
