"""The distributed runtime: models once per worker, torch threads, GPU routing, faults survived (I3, I8)."""

import itertools
import os
import pickle
import signal
import sys
import time

import dask
import dask.array as da
import distributed
import numpy as np
import pytest
import support
import torch
import xarray as xr
import zarr
from distributed import Client, Scheduler, SchedulerPlugin, SpecCluster, Worker

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers
from seamless_dask.cluster.workers import local_cluster
from seamless_dask.graph.layers import array_expr

TILE = {"tile_size": 32, "overlap": 8, "num_classes": 2}


@pytest.fixture
def mixed_cluster():
    """Two in-process workers: one advertises GPU=1, one does not (the model runs on CPU either way)."""
    workers = {
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}, "name": "gpu"}},
        "cpu": {"cls": Worker, "options": {"nthreads": 2, "name": "cpu"}},
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


def test_model_tasks_land_only_on_gpu_workers_with_the_default_optimisation(mixed_cluster):
    image = da.from_array(helpers.structured_image(3, 400, 400), chunks=(3, 100, 100))
    helpers.RAN_ON.clear()
    # device "auto" on a cluster with a GPU worker: model tasks need GPU=1, as they would with device="cuda".
    out = sd.segment(image, helpers.WhereRun(), chunks=96, **TILE)
    result = out.compute()  # default graph optimisation, which drops layer annotations (dask#7036)
    ran_on = dict(helpers.RAN_ON)
    assert ran_on == {"gpu": sd.TileGrid((400, 400), 32, 8).n_tiles}, ran_on
    expected = sd.segment(image, helpers.Brightness(), chunks=96, resources=None, **TILE).compute()
    np.testing.assert_array_equal(result, expected)


def test_a_volumes_model_tasks_land_only_on_gpu_workers_too(mixed_cluster, tmp_path):
    volume = np.random.default_rng(0).random((1, 24, 48, 48)).astype(np.float32)
    helpers.RAN_ON.clear()
    tile = {"tile_size": (12, 16, 16), "overlap": 4, "chunks": (12, 16, 16), "num_classes": 3}
    data = xr.DataArray(da.from_array(volume, chunks=(1, 12, 24, 24)), dims=("band", "z", "y", "x"))
    out = sd.segment(data, helpers.WhereRun(helpers.conv3d_net()), **tile)
    seen = []  # the tile bar on a cluster: the scheduler's events for the volume's model tasks
    sd.to_zarr(out, tmp_path / "v.zarr", progress=lambda done, total: seen.append((done, total)))
    result = xr.open_zarr(tmp_path / "v.zarr")["labels"].to_numpy()
    n_tiles = sd.VolumeTiler(volume.shape[1:], tile["tile_size"], 4).n_tiles
    assert seen[-1] == (n_tiles, n_tiles) and len(seen) > 2
    # every tile on the GPU worker ("client": the receptive-field check's probe, before the graph)
    assert helpers.RAN_ON["gpu"] == n_tiles and "cpu" not in helpers.RAN_ON, dict(helpers.RAN_ON)
    helpers.RAN_ON.clear()
    sd.segment(volume, helpers.WhereRun(helpers.conv3d_net()), resources=None, **tile)
    assert helpers.RAN_ON["cpu"] > 0 or helpers.RAN_ON["client"] > 0  # the resource's doing
    np.testing.assert_array_equal(result, sd.segment(volume, helpers.conv3d_net(), **tile))


def test_without_resources_both_workers_take_model_tasks(mixed_cluster):
    image = da.from_array(helpers.structured_image(3, 400, 400), chunks=(3, 100, 100))
    helpers.RAN_ON.clear()
    sd.segment(image, helpers.WhereRun(), chunks=96, resources=None, **TILE).compute()
    assert helpers.RAN_ON["cpu"] > 0  # the routing above is the resource's doing, not chance


def _graph_bytes(collection) -> int:
    graph = dict(collection.__dask_graph__())
    return len(pickle.dumps(graph, protocol=5))


def test_graph_size_does_not_grow_with_the_model(mixed_cluster):
    image = da.from_array(helpers.structured_image(3, 300, 300), chunks=(3, 100, 100))
    small, heavy = helpers.Brightness(), _HeavyBrightness()
    heavy_bytes = sum(p.numel() * p.element_size() for p in heavy.parameters())
    assert heavy_bytes > 20e6
    sizes = [
        _graph_bytes(sd.segment(image, m, chunks=96, resources=None, **TILE))
        for m in (small, heavy)
    ]
    assert abs(sizes[1] - sizes[0]) < 10_000, sizes  # the model travels once, as a worker plugin
    out = sd.segment(image, heavy, chunks=96, resources=None, **TILE).compute()
    local = dask.compute(
        sd.segment(image, heavy, chunks=96, resources=None, **TILE), scheduler="sync"
    )
    np.testing.assert_array_equal(out, local[0])


class _HeavyBrightness(torch.nn.Module):
    """Brightness plus 32 MB of unused parameters."""

    def __init__(self):
        super().__init__()
        self.inner = helpers.Brightness()
        self.ballast = torch.nn.Parameter(torch.zeros(8_000_000))

    def forward(self, x):
        return self.inner(x)


def test_a_model_that_raises_fails_the_job_with_its_error(mixed_cluster):
    image = da.from_array(helpers.structured_image(3, 200, 200), chunks=(3, 100, 100))
    out = sd.segment(image, helpers.raising_model(), chunks=96, resources=None, **TILE)
    with pytest.raises(RuntimeError, match="out of memory"):
        out.compute()


def test_string_specs_load_once_per_worker_process_and_torch_gets_its_threads(
    tmp_path, monkeypatch
):
    log = tmp_path / "tiles.log"
    monkeypatch.setenv("SEAMLESS_TILE_LOG", str(log))
    image = da.from_array(helpers.structured_image(3, 400, 400), chunks=(3, 100, 100))
    with local_cluster(
        n_workers=2, threads_per_worker=1, torch_threads=2, dashboard=False
    ) as client:
        assert set(client.run(torch.get_num_threads).values()) == {2}  # not the nanny's 1
        out = sd.segment(
            image, "seamless_dask.testing:logged_brightness", chunks=96, **TILE
        ).compute()
        worker_pids = set(client.run(os.getpid).values())
        client.cluster.close()
    loads, tiles = support.read_tile_log(log)
    assert sum(tiles.values()) == sd.TileGrid((400, 400), 32, 8).n_tiles
    assert set(tiles) <= worker_pids and all(n == 1 for n in loads.values())  # one load per process
    np.testing.assert_array_equal(
        out, sd.segment(image, helpers.Brightness(), chunks=96, **TILE).compute()
    )


def _mapped_after_a_4_mib_array() -> int:
    """Bytes glibc holds in mmapped blocks while a 4 MiB array lives (``mallinfo2().hblkhd``)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd
    block = np.ones(2**22, np.uint8)
    grown = libc.mallinfo2().hblkhd - before
    del block
    return int(grown)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize(("configured", "mapped"), [(None, False), (2**20, True)])
def test_workers_get_the_clients_mmap_threshold(configured, mapped):
    # distributed's nannies set MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold at 128 KiB:
    # every array past it mapped afresh (a CPU model's activations: 1.6-1.8x slower). The setup
    # fixes it at the client's seamless_dask.mmap_threshold (16 MiB): a 4 MiB array comes from the
    # heap, and at 1 MiB it is mapped.
    with (
        dask.config.set({"seamless_dask.mmap_threshold": configured}),
        local_cluster(n_workers=1, threads_per_worker=1, dashboard=False) as client,
    ):
        grown = set(client.run(_mapped_after_a_4_mib_array).values())
    if mapped:
        assert min(grown) >= 2**22, grown  # its own mapping (a page more for glibc's header)
    else:
        assert grown == {0}


def test_an_mmap_threshold_below_glibcs_floor_is_refused_with_the_rule():
    from seamless_dask.cluster.workers import WorkerSetup, mmap_threshold_bytes

    with dask.config.set({"seamless_dask.mmap_threshold": "64 MiB"}):
        assert mmap_threshold_bytes() == 64 * 2**20 == WorkerSetup().mmap_threshold
    with (
        dask.config.set({"seamless_dask.mmap_threshold": 4096}),
        pytest.raises(sd.OptionError, match=r"at least 128 KiB.*4096.*16 MiB"),
    ):
        WorkerSetup()


# --------------------------------------------------------------------------------- real processes


_python, _wait_for = support.python_process, support.wait_for


def _regions_done(store) -> int:
    try:
        return int(np.asarray(zarr.open_array(store, path=io.DONE, mode="r")[...]).sum())
    except (FileNotFoundError, KeyError, ValueError):
        return 0


@pytest.fixture(scope="module")
def scene(write_scene):
    return write_scene(480)


def _expected_labels(scene) -> np.ndarray:
    image = sd.open_raster(scene, chunks=None)
    return (
        sd.segment(image, helpers.Brightness(), tile_size=64, overlap=16, resources=None)
        .compute()
        .values
    )


CLI = ["-m", "seamless_dask.cli", "segment"]
OPTIONS = [
    "--model",
    "seamless_dask.testing:logged_brightness",
    "--tile-size",
    "64",
    "--overlap",
    "16",
    "--chunks",
    "96",
    "--num-classes",
    "2",
]


@pytest.mark.integration
def test_killing_a_worker_mid_run_still_gives_the_full_output(scene, tmp_path):
    started = time.monotonic()
    env = {
        **os.environ,
        "SEAMLESS_TILE_LOG": str(tmp_path / "tiles.log"),
        "SEAMLESS_TILE_SLEEP": "0.03",
    }
    sched_file = tmp_path / "scheduler.json"
    common = ["--scheduler-file", str(sched_file), "--no-dashboard"]
    scheduler = support.dask_process(
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *common,
        env=env,
    )
    workers = []
    try:
        _wait_for(sched_file.exists, 30, "the scheduler file")
        for name in ("w1", "w2"):
            args = ["--nthreads", "1", "--no-nanny", "--name", name, "--host", "127.0.0.1"]
            workers.append(support.dask_process("worker", *common, *args, env=env))
        with Client(scheduler_file=str(sched_file)) as client:
            client.wait_for_workers(2, timeout=60)
            address = client.scheduler.address
        store = tmp_path / "out.zarr"
        cli = _python(
            *CLI, str(scene), str(store), *OPTIONS, "--scheduler", address, "--no-progress", env=env
        )
        _wait_for(lambda: _regions_done(store) >= 2, 90, "two regions written")
        killed_at = time.monotonic() - started
        workers[0].send_signal(signal.SIGKILL)
        output, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, output.decode()
        back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
        np.testing.assert_array_equal(back, _expected_labels(scene))
        assert io.is_complete(store)
        print(
            f"worker killed {killed_at:.1f} s in; job done {time.monotonic() - started:.1f} s after start"
        )
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_an_interrupted_run_resumes_without_recomputing_written_regions(scene, tmp_path, capsys):
    log = tmp_path / "tiles.log"
    env = {**os.environ, "SEAMLESS_TILE_LOG": str(log), "SEAMLESS_TILE_SLEEP": "0.02"}
    store = tmp_path / "out.zarr"
    cli = _python(
        *CLI, str(scene), str(store), *OPTIONS, "--scheduler", "threads", "--no-progress", env=env
    )
    try:
        _wait_for(lambda: _regions_done(store) >= 3, 90, "three regions written")
    finally:
        cli.send_signal(signal.SIGKILL)  # as a preempted machine would: no clean-up at all
        cli.wait()
    done = np.asarray(zarr.open_array(store, path=io.DONE, mode="r")[...]).astype(bool)
    assert 0 < done.sum() < done.size and not io.is_complete(store)

    os.environ["SEAMLESS_TILE_LOG"] = str(tmp_path / "resume.log")
    try:
        from seamless_dask.cli import main

        args = [
            str(scene),
            str(store),
            *OPTIONS,
            "--scheduler",
            "threads",
            "--resume",
            "--no-progress",
        ]
        assert main(["segment", *args]) == 0
    finally:
        del os.environ["SEAMLESS_TILE_LOG"]
    back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
    np.testing.assert_array_equal(back, _expected_labels(scene))
    assert io.is_complete(store)
    # Tiles run on resume: those of missing regions, plus done neighbours' tiles that reach into them.
    plan = sd.plan(back.shape, tile_size=64, overlap=16, chunks=96)
    missing = [(j, k) for j, k in zip(*np.nonzero(~done), strict=True)]
    valid = (sd.open_raster(scene).compute().values != 0).any(axis=0)
    _, tiles = support.read_tile_log(tmp_path / "resume.log")
    assert sum(tiles.values()) == support.tiles_needed_on_resume(plan, missing, valid)


def test_chunk_rows_follow_keys_then_dependencies_then_dependents():
    from types import SimpleNamespace

    from seamless_dask.cluster.workers import chunk_rows

    def task(key, priority, *deps):
        ts = SimpleNamespace(
            key=key, priority=(0, 0, priority), dependencies=list(deps), dependents=[]
        )
        for d in deps:
            d.dependents.append(ts)
        return ts

    source = task("rechunk-a", 0)  # upstream of rows 1 and 2: goes with row 1
    w1, w2 = (
        task(("seamless-window-x", 0, 1, 0), 1, source),
        task(("seamless-window-x", 0, 2, 0), 2, source),
    )
    out1, out2 = task(("seamless-labels-x", 1, 0), 3, w1), task(("seamless-labels-x", 2, 0), 4, w2)
    write = task("store-map-y", 5, out1, out2)  # downstream of rows 1 and 2: after row 2
    model = task("TileInference-z", 6)  # in no row
    rows = chunk_rows([source, w1, w2, out1, out2, write, model])
    assert [rows[t.key] for t in (source, w1, w2, out1, out2, write, model)] == [
        1,
        1,
        2,
        1,
        2,
        2,
        None,
    ]


def test_a_seamless_graph_is_scheduled_row_of_chunks_by_row_of_chunks():
    from distributed import LocalCluster

    from seamless_dask.cluster.workers import ensure_scheduler_plugins

    image = da.from_array(helpers.structured_image(3, 400, 400), chunks=(3, 100, 100))
    out = sd.segment(image, helpers.Brightness(), chunks=64, **TILE)
    with (
        LocalCluster(
            n_workers=0, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        ensure_scheduler_plugins(client)
        # no worker yet: the graph waits on the scheduler with its priorities
        future = client.compute(out)

        def infer_tasks():
            return [
                ts
                for key, ts in cluster.scheduler.tasks.items()
                if str(key[0]).startswith("seamless-infer-")
            ]

        def settled():  # priorities are final once the scheduler has moved the tasks on from "released"
            tasks = infer_tasks()
            return tasks and all(ts.state != "released" for ts in tasks)

        deadline = time.monotonic() + 30
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = [ts.key[-2] for ts in sorted(infer_tasks(), key=lambda ts: ts.priority)]
        cluster.scale(1)
        result = future.result()
    # every row's model tasks before the next row's
    assert len(set(rows)) > 3 and rows == sorted(rows)
    np.testing.assert_array_equal(
        result, sd.segment(image, helpers.Brightness(), chunks=64, **TILE).compute()
    )


def test_segment_under_a_users_client_registers_the_scheduler_plugins_or_warns(monkeypatch):
    from distributed import LocalCluster

    from seamless_dask.cluster.workers import ensure_scheduler_plugins

    image = da.from_array(helpers.structured_image(3, 100, 100), chunks=(3, 50, 50))
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        sd.segment(image, helpers.Brightness(), **TILE)
        assert {"seamless-row-order", "seamless-resource-routing"} <= set(cluster.scheduler.plugins)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        register = client.register_plugin

        def refuse(
            plugin, *args, **kwargs
        ):  # a scheduler without the package cannot take our plugins
            if isinstance(plugin, SchedulerPlugin):
                raise ModuleNotFoundError("No module named 'seamless_dask'")
            return register(plugin, *args, **kwargs)

        monkeypatch.setattr(client, "register_plugin", refuse)
        with pytest.warns(
            RuntimeWarning, match="dask's order.*install seamless_dask where the scheduler runs"
        ):
            out = sd.segment(image, helpers.Brightness(), **TILE)
        np.testing.assert_array_equal(
            out.compute(), sd.segment(image, helpers.Brightness(), **TILE).compute()
        )
        client.__dict__.pop("_seamless_plugins")
        with pytest.raises(
            ModuleNotFoundError
        ):  # tasks that need a GPU cannot be routed without them: an error
            ensure_scheduler_plugins(client, required=True)


def _cluster(tmp_path, env, name):
    """A real ``dask scheduler`` and one worker, as processes; ``(scheduler, worker, address)``."""
    sched_file = tmp_path / f"{name}.json"
    common = ["--scheduler-file", str(sched_file), "--no-dashboard"]
    scheduler = support.dask_process("scheduler", "--host", "127.0.0.1", "--port",
                        "0", *common, env=env)  # fmt: skip
    _wait_for(sched_file.exists, 30, "the scheduler file")
    worker = support.dask_process("worker", *common, "--nthreads", "2",
                     "--no-nanny", "--host", "127.0.0.1", env=env)  # fmt: skip
    with Client(scheduler_file=str(sched_file)) as client:
        client.wait_for_workers(1, timeout=60)
        return scheduler, worker, client.scheduler.address


def _slow_env(folder) -> dict:
    return {**os.environ, "SEAMLESS_TILE_LOG": str(folder / "t.log"), "SEAMLESS_TILE_SLEEP": "0.03"}


def _job_under_way(folder, env, name, scene, store, processes, *extra):
    """A cluster of processes and a CLI job on it that has written a region: the moment to strike."""
    scheduler, worker, address = _cluster(folder, env, name)
    processes += [scheduler, worker]
    cli = _python(*CLI, str(scene), str(store), *OPTIONS, "--scheduler", address, *extra,
                  "--no-progress", env=env)  # fmt: skip
    processes.append(cli)
    _wait_for(lambda: _regions_done(store) >= 1, 90, "a region written")
    return scheduler, worker, address, cli


@pytest.mark.chaos  # the cluster's faults: make test-chaos, which CI runs
@pytest.mark.integration
@pytest.mark.skipif(array_expr(), reason="the CLI's handling of a lost scheduler: engine-agnostic")
def test_a_lost_scheduler_ends_the_job_in_one_line_and_resume_on_a_new_one_finishes_it(
    scene, tmp_path
):
    env, store, processes = _slow_env(tmp_path), tmp_path / "out.zarr", []
    try:
        # the reconnect window is the connect timeout: 5 s here, dask's 30 s by default
        scheduler, worker, address, cli = _job_under_way(
            tmp_path, env, "first", scene, store, processes, "--connect-timeout", "5"
        )
        scheduler.send_signal(signal.SIGKILL)
        lost_at = time.monotonic()
        output, _ = cli.communicate(timeout=180)
        took = time.monotonic() - lost_at
        text = output.decode()
        last = text.strip().splitlines()[-1]
        assert cli.returncode == 3, text
        assert address in last and "--resume" in last and last.startswith("seamless-dask: error:")
        assert "Traceback" not in text, text
        print(f"the lost scheduler was named {took:.1f} s after it was killed")
        assert took < 30  # bounded by --connect-timeout

        scheduler, worker, address = _cluster(tmp_path, env, "second")
        processes += [scheduler, worker]
        again = _python(*CLI, str(scene), str(store), *OPTIONS, "--scheduler", address, "--resume",
                        "--no-progress", env=env)  # fmt: skip
        processes.append(again)
        output, _ = again.communicate(timeout=180)
        assert again.returncode == 0, output.decode()
        back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
        np.testing.assert_array_equal(back, _expected_labels(scene))
        assert io.is_complete(store)
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.mark.chaos  # the cluster's faults: make test-chaos, which CI runs
@pytest.mark.integration
@pytest.mark.skipif(array_expr(), reason="the cluster's workers, not the graph: engine-agnostic")
@pytest.mark.parametrize("comes_back", [False, True], ids=["none-comes", "one-comes-back"])
def test_a_job_left_without_workers_says_so_and_waits_for_one(scene, tmp_path, comes_back):
    env, store, processes = _slow_env(tmp_path), tmp_path / "out.zarr", []
    try:
        _, worker, _, cli = _job_under_way(
            tmp_path, env, "alone", scene, store, processes, "--worker-wait", "12"
        )
        worker.send_signal(signal.SIGKILL)
        lost_at = time.monotonic()
        if comes_back:
            time.sleep(8)  # past the warning, within the wait
            processes.append(support.dask_process("worker", "--scheduler-file",
                                     str(tmp_path / "alone.json"), "--nthreads", "2", "--no-nanny",
                                     "--host", "127.0.0.1", "--no-dashboard", env=env))  # fmt: skip
        output, _ = cli.communicate(timeout=180)
        text = output.decode()
        assert "no worker is connected to the scheduler" in text and "waits up to 12 s" in text, (
            text
        )
        assert "Traceback" not in text, text
        if comes_back:
            assert cli.returncode == 0, text
            assert "a worker joined" in text
            back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
            np.testing.assert_array_equal(back, _expected_labels(scene))
        else:
            last = text.strip().splitlines()[-1]
            assert cli.returncode == 3, text
            assert "no worker was connected" in last and "--resume" in last, last
            assert time.monotonic() - lost_at < 60
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_a_gpu_worker_runs_two_model_tasks_side_by_side(monkeypatch):
    # gpus=1 on a machine without one: the worker's resources and its model tasks are the GPU
    # layout's (the model runs on the CPU, device "auto"); each model task sleeps so that their
    # times overlap only when two run at once
    monkeypatch.setenv("SEAMLESS_TILE_SLEEP", "0.05")
    image = da.from_array(helpers.structured_image(3, 256, 256), chunks=(3, 128, 128))
    with local_cluster(gpus=1, threads_per_worker=4, dashboard=False) as client:
        (info,) = client.scheduler_info()["workers"].values()
        assert info["resources"] == {"GPU": 2} and info["nthreads"] == 4
        with distributed.get_task_stream(client) as stream:
            out = sd.segment(image, "seamless_dask.testing:logged_brightness", **TILE).compute()
        client.cluster.close()
    # the model tasks that finished (a retried attempt, after a worker was lost, is not a third)
    infer = [t for t in stream.data if "seamless-infer" in str(t["key"]) and t["status"] == "OK"]
    spans = [(s["start"], s["stop"]) for t in infer for s in t["startstops"]
             if s["action"] == "compute"]  # fmt: skip
    assert len(spans) == 4
    # a worker stamps a task's stop after it has let the next one start: 20 ms of slack a side
    events = sorted(
        [(start + 0.02, 1) for start, _ in spans] + [(stop - 0.02, -1) for _, stop in spans]
    )
    running = list(itertools.accumulate(step for _, step in events))
    assert max(running) == 2  # two model tasks at once on the one GPU, never three
    np.testing.assert_array_equal(out, sd.segment(image, helpers.Brightness(), **TILE).compute())
