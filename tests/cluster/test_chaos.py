"""Chaos: a worker SIGKILLed at a dozen moments of a job, from its first 0.2 s to its last write, each
time with a replacement started, against a real ``dask scheduler``; every run's output equals a local
run's bit for bit. Marked ``chaos`` (and ``integration``): ``make test-chaos``, run by CI after
``make test``.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import support
import xarray as xr
import zarr
from distributed import Client

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
]

OPTIONS = ["--model", "seamless_dask.testing:logged_brightness", "--tile-size", "64", "--overlap",
           "16", "--chunks", "96", "--num-classes", "2", "--no-progress"]  # fmt: skip
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _done(store) -> int:
    try:
        return int(np.asarray(zarr.open_array(store, path=io.DONE, mode="r")[...]).sum())
    except (FileNotFoundError, KeyError, ValueError):
        return 0


class Cluster:
    """A scheduler and two single-threaded workers, as processes; workers replaced when killed."""

    def __init__(self, folder, env):
        self.file, self.env = folder / "scheduler.json", env
        self.common = ["--scheduler-file", str(self.file), "--no-dashboard"]
        self.scheduler = support.dask_process("scheduler", "--host",
                                                "127.0.0.1", "--port", "0", *self.common, env=env)  # fmt: skip
        support.wait_for(self.file.exists, 30, "the scheduler file")
        self.workers = [self._worker(), self._worker()]
        with Client(scheduler_file=str(self.file)) as client:
            client.wait_for_workers(2, timeout=60)
            self.address = client.scheduler.address

    def _worker(self):
        return support.dask_process("worker", *self.common,
                                      "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                                      env=self.env)  # fmt: skip

    def kill_one_and_replace(self, which: int) -> None:
        victim = self.workers.pop(which % len(self.workers))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.workers.append(self._worker())

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            process.kill()
            process.wait()


def test_a_worker_killed_at_any_moment_of_a_job_leaves_the_output_identical(write_scene, tmp_path):
    scene = write_scene(288)
    expected = (
        sd.segment(
            sd.open_raster(scene, chunks=None),
            helpers.Brightness(),
            tile_size=64,
            overlap=16,
            resources=None,
        )
        .compute()
        .values
    )
    env = {**os.environ, "SEAMLESS_TILE_SLEEP": "0.04"}
    cluster = Cluster(tmp_path, env)
    moments: list[str] = []
    try:

        def run(name: str, kill_at=None, kill_when=None):
            store = tmp_path / f"{name}.zarr"
            started = time.monotonic()
            job = support.python_process("-m", "seamless_dask.cli", "segment", str(scene),
                                         str(store), *OPTIONS, "--scheduler", cluster.address,
                                         env=env)  # fmt: skip
            try:
                if kill_at is not None:
                    time.sleep(max(0.0, kill_at - (time.monotonic() - started)))
                if kill_when is not None:
                    support.wait_for(lambda: kill_when(store), 120, f"the moment of {name}")
                if kill_at is not None or kill_when is not None:
                    killed = time.monotonic() - started
                    cluster.kill_one_and_replace(len(moments))
                    moments.append(f"{name}: {killed:.1f} s")
                output, _ = job.communicate(timeout=240)
            finally:
                job.kill()
            assert job.returncode == 0, output.decode()[-3000:]
            back = xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values
            np.testing.assert_array_equal(back, expected, err_msg=name)
            assert io.is_complete(store)
            return time.monotonic() - started

        whole = run("undisturbed")  # the job's length, on this machine, now
        run("first-0.2s", kill_at=0.2)  # the CLI still starting: connect, plugins, model
        run("first-batch", kill_when=lambda store: (tmp_path / "scheduler.json").exists()
            and _done(store) == 0 and store.exists())  # fmt: skip
        for fraction in FRACTIONS:
            run(f"at-{fraction:.0%}", kill_at=fraction * whole)
        rows, cols = sd.plan(expected.shape, tile_size=64, overlap=16, chunks=96).chunks
        regions = len(rows) * len(cols)
        run("last-write", kill_when=lambda store: _done(store) >= regions - 1)
    finally:
        cluster.close()
        print("killed at:", "; ".join(moments))
    assert len(moments) >= 10
