"""A worker lost while the job sets up is no reason to fail it (issue: a spot worker SIGKILLed 2.5 s
into a job, while its plugins were registered, ended the job with CommClosedError).
"""

import os
import sys

import pytest
import support
from distributed import Client, WorkerPlugin

from seamless_dask.cluster.workers import register_worker_plugin
from seamless_dask.graph.layers import array_expr

# plugins and the scheduler's registry know nothing of dask's array engines: run once, on the legacy one
pytestmark = [
    pytest.mark.chaos,  # the cluster's faults: make test-chaos, which CI runs
    pytest.mark.skipif(array_expr(), reason="engine-agnostic; run on the legacy engine"),
]


class _DieOnSetup(support.DieOnSetup, WorkerPlugin):
    pass


@pytest.fixture
def marked_cluster(tmp_path):
    """A scheduler and two workers, as processes; the second dies in the plugin's setup."""
    file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    scheduler = support.dask_process("scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(file),
                      "--no-dashboard", env=env)  # fmt: skip
    common = ["--scheduler-file", str(file), "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    workers = [support.dask_process("worker", *common, env=env),
               support.dask_process("worker", *common, env={**env, "SEAMLESS_DIE_ON_PLUGIN": "1"})]  # fmt: skip
    try:
        support.wait_for(file.exists, 30, "the scheduler file")
        with Client(scheduler_file=str(file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            yield client, lambda: workers.append(support.dask_process("worker", *common, env=env))
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait()


@pytest.mark.integration
def test_a_worker_lost_during_a_plugins_broadcast_does_not_fail_the_registration(marked_cluster):
    client, add_worker = marked_cluster
    with pytest.raises(OSError):  # what dask itself does: the whole registration raises
        client.register_plugin(_DieOnSetup(), name="plain")
    client.wait_for_workers(1, timeout=30)
    add_worker()  # a replacement joins
    register_worker_plugin(client, _DieOnSetup())  # ours: the dying worker is gone by now
    client.wait_for_workers(2, timeout=60)
    has = client.run(lambda dask_worker: getattr(dask_worker, "seamless_test_plugin", False))
    assert len(has) == 2 and all(has.values()), has  # the survivor and the replacement


@pytest.mark.integration
def test_registration_survives_a_worker_dying_inside_it(marked_cluster):
    client, _ = marked_cluster
    register_worker_plugin(client, _DieOnSetup())  # the marked worker dies in its setup
    has = client.run(lambda dask_worker: getattr(dask_worker, "seamless_test_plugin", False))
    assert list(has.values()) == [True], has  # the survivor has it; the job goes on
