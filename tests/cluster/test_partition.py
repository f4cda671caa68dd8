"""A worker cut off, not killed: the scheduler, two workers and the job's client each on a host of
their own (Linux network namespaces joined by veth pairs to a bridge, iproute2's ``ip netns``), one
worker's link cut in the middle of a run (or slowed by seconds: ``tc netem``, or a
token bucket where the kernel lacks netem). The job finishes on
the other worker with the output identical to a local run, and once the link is back the cut-off
worker's late results and writes change nothing in the store. Marked ``chaos``: ``make test-chaos``,
which CI runs on both dask engines; skipped where the machine does not allow namespaces (not root).

The scheduler is started with ``distributed.scheduler.worker-ttl`` at 10 s: a cut link sends no reset,
so the scheduler learns of it only when the worker's heartbeats stop (docs/cluster.md: the default is
5 minutes, which is how long such a job would wait).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import support
import xarray as xr
import zarr

import seamless_dask as sd
from seamless_dask import io
from seamless_dask import testing as helpers

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

SUBNET = "10.231.7"
HOSTS = {"scheduler": 2, "worker-a": 3, "worker-b": 4, "client": 5}
OPTIONS = ["--model", "seamless_dask.testing:logged_brightness", "--tile-size", "64", "--overlap",
           "16", "--chunks", "96", "--num-classes", "2", "--no-progress"]  # fmt: skip


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Network:
    """Hosts in network namespaces on one bridge (itself in a namespace: nothing on the machine's own
    network changes); ``cut``/``mend`` take a host's link down and up, ``delay`` slows it.
    """

    def __init__(self) -> None:
        self.tag = f"sd{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        self.spaces = [self.switch]
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for name, last in HOSTS.items():
            space, port, inside = f"{self.tag}-{name}", self.port(name), f"v{self.tag}{last}"
            _ip("netns", "add", space)
            self.spaces.append(space)
            _ip("link", "add", inside, "type", "veth", "peer", "name", port)
            _ip("link", "set", inside, "netns", space)
            _ip("link", "set", port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", space, "addr", "add", f"{SUBNET}.{last}/24", "dev", inside)
            _ip("-n", space, "link", "set", inside, "up")
            _ip("-n", space, "link", "set", "lo", "up")

    def port(self, name: str) -> str:
        return f"p{self.tag}{HOSTS[name]}"

    def address(self, name: str) -> str:
        return f"{SUBNET}.{HOSTS[name]}"

    def start(
        self, name: str, *args: str, env: dict[str, str], log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """``python ARGS`` on host ``name``, its output into ``log`` (a process that runs on, a
        scheduler or a worker: a pipe no one reads would block it once its logs filled 64 KiB) or a
        pipe read when it ends.
        """
        command = ["ip", "netns", "exec", f"{self.tag}-{name}", sys.executable, *args]
        if log is None:
            return subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
            )
        with log.open("ab") as sink:
            return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def cut(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.port(name), "down")

    def mend(self, name: str) -> None:
        _ip("-n", self.switch, "link", "set", self.port(name), "up")

    def slow(self, name: str) -> str:
        """Slow host ``name``'s link both ways: ``tc netem`` delaying every packet by 2 s where the
        kernel has it, else (a kernel built without sch_netem, as on this project's CI machines) a
        token bucket at 256 kbit/s that holds a message of 64 KiB for 2 s; says which.
        """
        devices = (
            (self.switch, self.port(name)),
            (f"{self.tag}-{name}", f"v{self.tag}{HOSTS[name]}"),
        )
        shapes = (["netem", "delay", "2000ms"],
                  ["tbf", "rate", "256kbit", "burst", "16kb", "latency", "60s"])  # fmt: skip
        for shape in shapes:
            done = [subprocess.run(["tc", "-n", space, "qdisc", "add", "dev", device, "root", *shape],
                                   capture_output=True, timeout=30, check=False).returncode == 0
                    for space, device in devices]  # fmt: skip
            if all(done):
                return " ".join(shape)
        raise AssertionError(f"tc could not slow {name}'s link")

    def close(self) -> None:
        for space in reversed(self.spaces):
            subprocess.run(
                ["ip", "netns", "del", space], capture_output=True, timeout=30, check=False
            )


@pytest.fixture
def network():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    try:
        made = Network()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"this machine does not allow network namespaces: {error}")
    try:
        yield made
    finally:
        made.close()


def network_probe(address: str) -> str:
    """A script printing the scheduler's and the workers' task states (a worker that does not answer
    in 10 s is said so).
    """
    return f"""
from collections import Counter
from distributed import Client
client = Client({address!r}, timeout=20)
def scheduler_view(dask_scheduler):
    tasks = dask_scheduler.tasks.values()
    return {{"states": dict(Counter(ts.state for ts in tasks)),
             "waiting": sorted(str(ts.key) + " on " + str(sorted(str(d.key) for d in ts.waiting_on))
                               for ts in tasks if ts.state in ("waiting", "no-worker"))[:20],
             "processing": {{ws.name: sorted(str(ts.key) for ts in ws.processing)
                             for ws in dask_scheduler.workers.values()}}}}
print("scheduler:", client.run_on_scheduler(scheduler_view))
def worker_view(dask_worker):
    state = dask_worker.state
    return {{"states": dict(Counter(ts.state for ts in state.tasks.values())),
             "executing": sorted(str(ts.key) for ts in state.executing),
             "not done": sorted(str(ts.key) + ": " + ts.state for ts in state.tasks.values()
                                if ts.state not in ("memory", "released"))[:20]}}
for worker, view in client.run(worker_view, on_error="return").items():
    print(worker, view)
"""


def _digest(store: Path) -> dict[str, str]:
    return {
        str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(store.rglob("*"))
        if path.is_file()
    }


class PartitionedJob:
    """A scheduler and two single-threaded workers on their own hosts; the job run from a fourth."""

    def __init__(self, network: Network, folder: Path) -> None:
        self.network, self.folder = network, folder
        self.env = {
            **os.environ,
            "SEAMLESS_TILE_SLEEP": "0.05",
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "10s",
        }
        self.scheduler_address = f"tcp://{network.address('scheduler')}:8786"
        scheduler = ["-m", "distributed.cli.dask_scheduler", "--host", network.address("scheduler"),
                     "--port", "8786", "--no-dashboard"]  # fmt: skip
        self.processes = [
            network.start("scheduler", *scheduler, env=self.env, log=self.log("scheduler"))
        ]
        for name in ("worker-a", "worker-b"):
            self.processes.append(
                network.start(name, *self._worker(name), env=self.env, log=self.log(name))
            )
        waited = network.start("client", "-c", "from distributed import Client; "
                               f"Client('{self.scheduler_address}', timeout=60)"
                               ".wait_for_workers(2, timeout=60)", env=self.env)  # fmt: skip
        output, _ = waited.communicate(timeout=120)
        assert waited.returncode == 0, output.decode()[-2000:]

    def _worker(self, name: str) -> list[str]:
        return ["-m", "distributed.cli.dask_worker", self.scheduler_address, "--nthreads", "1",
                "--no-nanny", "--no-dashboard", "--name", name, "--host",
                self.network.address(name)]  # fmt: skip

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def logs(self) -> str:
        """The last lines each of the scheduler and the workers logged."""
        return "\n".join(
            f"--- {name}:\n"
            + "\n".join(self.log(name).read_text(errors="replace").splitlines()[-25:])
            for name in ("scheduler", "worker-a", "worker-b")
        )

    def states(self) -> str:
        """What the scheduler and each worker still reachable hold, task states counted, and the
        tasks not yet done by name: what a job that stopped moving waits on.
        """
        probe = network_probe(self.scheduler_address)
        asked = self.network.start("client", "-c", probe, env=self.env)
        try:
            output, _ = asked.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            asked.kill()
            output, _ = asked.communicate()
        return "--- cluster state:\n" + output.decode(errors="replace")[-6000:]

    def worker(self, name: str) -> subprocess.Popen[bytes]:
        return self.processes[1 + ["worker-a", "worker-b"].index(name)]

    def run(self, scene: Path, store: Path) -> subprocess.Popen[bytes]:
        return self.network.start("client", "-m", "seamless_dask.cli", "segment", str(scene),
                                  str(store), *OPTIONS, "--scheduler", self.scheduler_address,
                                  env=self.env)  # fmt: skip

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


@pytest.fixture
def expected(write_scene):
    scene = write_scene(288)
    labels = sd.segment(
        sd.open_raster(scene, chunks=None),
        helpers.Brightness(),
        tile_size=64,
        overlap=16,
        resources=None,
    )
    return scene, labels.compute().values


def _labels(store: Path) -> np.ndarray:
    return xr.open_zarr(store, mask_and_scale=False)["labels"].compute().values


def _finish(
    job: subprocess.Popen[bytes], store: Path, expected: np.ndarray, cluster: PartitionedJob
) -> float:
    started = time.monotonic()
    try:
        output, _ = job.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        job.kill()
        output, _ = job.communicate()
        raise AssertionError(
            f"the job did not finish in 300 s; it printed:\n{output.decode()[-3000:]}\n"
            f"{cluster.states()}\n{cluster.logs()}"
        ) from None
    assert job.returncode == 0, output.decode()[-3000:]
    np.testing.assert_array_equal(_labels(store), expected)
    assert io.is_complete(store)
    return time.monotonic() - started


@pytest.fixture
def cluster(network, tmp_path):
    made = PartitionedJob(network, tmp_path)
    try:
        yield made
    finally:
        made.close()


def _started(cluster: PartitionedJob, scene: Path, store: Path, regions: int):
    """The job under way, once ``regions`` regions of its output are written."""
    job = cluster.run(scene, store)
    support.wait_for(lambda: store.exists() and _regions_done(store) >= regions, 120, "writes")
    return job


def test_a_worker_cut_off_mid_run_changes_nothing_when_it_comes_back(network, expected, cluster):
    scene, labels = expected
    store = cluster.folder / "cut.zarr"
    job = _started(cluster, scene, store, 2)
    network.cut("worker-a")
    cut_at = time.monotonic()
    _finish(job, store, labels, cluster)
    finished_after = time.monotonic() - cut_at
    written = _digest(store)
    network.mend("worker-a")
    # the cut-off worker learns it was dropped (its heartbeat answered "missing") and closes;
    # whatever it still had running has landed by then
    deadline = time.monotonic() + 90
    while cluster.worker("worker-a").poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    gone = cluster.worker("worker-a").poll() is not None
    time.sleep(2)
    assert _digest(store) == written, "the cut-off worker's late writes changed the store"
    np.testing.assert_array_equal(_labels(store), labels)
    print(f"cut worker-a; the job finished {finished_after:.1f} s later; "
          f"worker-a {'closed' if gone else 'still running'} after the link came back")  # fmt: skip


def test_a_worker_slowed_by_seconds_of_delay_leaves_the_output_identical(
    network, expected, cluster
):
    scene, labels = expected
    store = cluster.folder / "slow.zarr"
    job = _started(cluster, scene, store, 1)
    how = network.slow("worker-b")
    took = _finish(job, store, labels, cluster)
    print(f"worker-b's link slowed ({how}); the job finished {took:.1f} s later")


def _regions_done(store: Path) -> int:
    try:
        return int(np.asarray(zarr.open_array(store, path=io.DONE, mode="r")[...]).sum())
    except (FileNotFoundError, KeyError, ValueError):
        return 0
