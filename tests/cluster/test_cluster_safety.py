"""Safe in the field, clusters: a scheduler that never answers, answers in another protocol or has no workers
fails in bounded time with a clear error; the tile bar ends at N/N on every scheduler; TLS clusters work end to
end, with real ``dask scheduler`` and ``dask worker`` processes."""

import http.server
import json
import os
import re
import socket
import threading
import time

import dask
import numpy as np
import pytest
import rasterio
import support
from distributed import Client
from distributed.security import Security

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.cluster import progress
from seamless_dask.graph.layers import array_expr

MODEL = "seamless_dask.testing:brightness"


def cli(*args) -> int:
    return support.segment_cli(*args, scheduler=None)


error_line = support.error_line


# ---- class 8: schedulers that do not answer, answer in another protocol, or have no workers


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def http_server():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("server", ["silent_server", "http_server"])
def test_a_scheduler_address_that_does_not_speak_dask_fails_in_bounded_time(
    scene, tmp_path, capsys, request, server
):
    address = request.getfixturevalue(server)
    started = time.monotonic()
    args = (
        scene,
        tmp_path / "o.tif",
        "--model",
        MODEL,
        "--scheduler",
        address,
        "--connect-timeout",
        "2",
    )
    assert cli(*args) == 2
    assert time.monotonic() - started < 60  # it hung for minutes, or allocated exabytes, before
    line = error_line(capsys)
    assert (
        "cannot reach a dask scheduler" in line and address in line and "--connect-timeout" in line
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_a_scheduler_without_workers_warns_then_fails_after_the_wait(scene, tmp_path, capsys):
    file = tmp_path / "scheduler.json"
    scheduler = support.dask_process("scheduler", "--host", "127.0.0.1", "--port", "0", "--scheduler-file", str(file),
                              "--no-dashboard")  # fmt: skip
    try:
        support.wait_for(file.exists, 30, "the scheduler file")
        with Client(scheduler_file=str(file)) as client:
            address = client.scheduler.address
        assert (
            cli(
                scene,
                tmp_path / "o.tif",
                "--model",
                MODEL,
                "--scheduler",
                address,
                "--worker-wait",
                "2",
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "has no worker yet; waiting up to 2 s" in err
        assert "no worker joined the scheduler" in err.strip().splitlines()[-1]
    finally:
        scheduler.kill()
        scheduler.wait()


# ---- class 9: the tile bar reaches N/N on every scheduler


def _final_count(err: str) -> tuple[int, int]:
    counts = re.findall(r"(\d+)/(\d+) \[", err)
    assert counts, err
    return int(counts[-1][0]), int(counts[-1][1])


@pytest.mark.parametrize("scheduler", ["threads", "local cluster"])
def test_the_tile_bar_ends_at_the_number_of_tiles(scene, tmp_path, capsys, scheduler):
    where = ["--scheduler", "threads"] if scheduler == "threads" else []
    assert cli(scene, tmp_path / "o.tif", "--model", MODEL, "--chunks", "96", *where) == 0
    result = sd.segment(sd.open_raster(scene), MODEL, tile_size=64, overlap=16, chunks=96)
    expected = sum(progress.tile_counts(result.data).values())
    assert _final_count(capsys.readouterr().err) == (expected, expected)


def test_a_stage1_task_fused_with_its_output_task_still_counts(capsys):
    import dask

    # one chunk: its output block waits for no neighbour's halo, so the legacy engine fuses the two tasks
    image = helpers.structured_image(3, 100, 100) * 255
    result = sd.segment(
        image, helpers.Brightness(), tile_size=64, overlap=16, chunks=100, num_classes=2
    )
    lazy = sd.segment(dask.array.from_array(image, chunks=(3, 100, 100)), helpers.Brightness(), tile_size=64,
                      overlap=16, chunks=100, num_classes=2)  # fmt: skip
    (optimised,) = dask.optimize(lazy)
    fused = [
        k
        for k in dict(optimised.__dask_graph__())
        if str(k[0]).startswith("seamless-infer-seamless-labels-")
    ]
    assert array_expr() or len(fused) == 1
    if fused:
        assert progress.keys.inference_key(fused[0]) in progress.tile_counts(lazy)
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(progress.compute(lazy), result)
    expected = sum(progress.tile_counts(lazy).values())
    assert _final_count(capsys.readouterr().err) == (expected, expected)


@pytest.mark.parametrize("scheduler", ["threads", "local cluster"])
def test_a_progress_callback_hears_every_tile_once_in_order(scene, tmp_path, scheduler):
    """``progress=callable`` (issue 32: a library's own progress, not a tqdm bar): called with (done,
    total) from 0 up to total, never backwards, whatever the scheduler."""
    import threading

    calls, lock = [], threading.Lock()

    def heard(done, total):
        with lock:
            calls.append((done, total))

    labels = sd.segment(sd.open_raster(scene), MODEL, tile_size=64, overlap=16, chunks=96)
    total = sum(progress.tile_counts(labels.data).values())
    if scheduler == "threads":
        with dask.config.set(scheduler="threads"):
            sd.to_zarr(labels, tmp_path / "o.zarr", progress=heard)
    else:
        from seamless_dask.cluster import local_cluster

        with local_cluster(n_workers=1, threads_per_worker=2, dashboard=False):
            sd.to_zarr(labels, tmp_path / "o.zarr", progress=heard)
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done) > 2


def test_a_second_cluster_on_the_machine_does_not_warn_of_port_8787(recwarn):
    """The CLI's local cluster has no dashboard; its scheduler's HTTP server took distributed's default
    8787 anyway, so a job beside another cluster printed "Port 8787 is already in use" (seen in CI)."""
    import contextlib
    import socket
    import warnings

    from seamless_dask.cluster import local_cluster

    warnings.simplefilter("always")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # in use already: the case itself
            taken.bind(("", 8787))
            taken.listen()
        with local_cluster(n_workers=1, threads_per_worker=1, dashboard=False):
            pass
    assert not [w for w in recwarn if "8787" in str(w.message)]


# ---- class 12: TLS end to end


def _parses(path) -> bool:
    try:
        return "address" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


@pytest.fixture
def tls_files(tmp_path):
    security = Security.temporary()
    files = {}
    for name, pem in (
        ("ca", security.tls_ca_file),
        ("cert", security.tls_client_cert),
        ("key", security.tls_client_key),
    ):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text(pem)
    return files


@pytest.mark.integration
def test_a_tls_cluster_of_real_processes_end_to_end(scene, tmp_path, tls_files, capsys):
    tls = ["--tls-ca-file", str(tls_files["ca"]), "--tls-cert", str(tls_files["cert"]), "--tls-key",
           str(tls_files["key"])]  # fmt: skip
    file = tmp_path / "scheduler.json"
    scheduler = support.dask_process("scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", "tls",
                              "--scheduler-file", str(file), "--no-dashboard", *tls)  # fmt: skip
    worker = None
    try:
        # written, not only created
        support.wait_for(lambda: _parses(file), 30, "the scheduler file")
        address = json.loads(file.read_text())["address"]
        assert address.startswith("tls://")
        worker = support.dask_process(
            "worker", address, "--nthreads", "2", "--no-nanny", "--host", "127.0.0.1", *tls
        )
        target = tmp_path / "o.tif"
        # without certificates: refused before any connection
        assert cli(scene, target, "--model", MODEL, "--scheduler", address) == 2
        assert "--tls-ca-file" in error_line(capsys)
        assert (
            cli(scene, target, "--model", MODEL, "--scheduler", address, *tls, "--no-progress") == 0
        )
        with rasterio.open(target) as cog:
            labels = cog.read(1)
        expected = (
            sd.segment(sd.open_raster(scene), helpers.Brightness(), tile_size=64, overlap=16)
            .compute()
            .values
        )
        np.testing.assert_array_equal(labels, expected)
        # certificates from dask's configuration, as the Kubernetes manifests set it (seamless_dask.cluster.kube)
        env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
               "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(tls_files["ca"]),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(tls_files["cert"]),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(tls_files["key"])}  # fmt: skip
        job = support.python_process("-m", "seamless_dask.cli", "segment", str(scene), str(tmp_path / "k.tif"),
                                     "--model", MODEL, "--tile-size", "64", "--overlap", "16", "--scheduler",
                                     address, "--no-progress", env=env)  # fmt: skip
        output, _ = job.communicate(timeout=120)
        assert job.returncode == 0, output.decode()
        # the same cluster over plain TCP is refused by the scheduler
        plain = address.replace("tls://", "tcp://")
        assert (
            cli(
                scene,
                tmp_path / "p.tif",
                "--model",
                MODEL,
                "--scheduler",
                plain,
                "--connect-timeout",
                "3",
            )
            == 2
        )
        assert "cannot reach" in error_line(capsys)
    finally:
        for process in (p for p in (worker, scheduler) if p is not None):
            process.kill()
            process.wait()


@pytest.mark.integration
def test_the_local_cluster_speaks_tls_when_given_certificates(scene, tmp_path, tls_files):
    from seamless_dask.cluster.workers import local_cluster

    with local_cluster(dashboard=False, security=Security.temporary()) as client, client.cluster:
        assert client.scheduler.address.startswith("tls://")
        result = sd.segment(sd.open_raster(scene), MODEL, tile_size=64, overlap=16)
        sd.to_cog(result, tmp_path / "a.tif")
    tls = [
        "--tls-ca-file",
        tls_files["ca"],
        "--tls-cert",
        tls_files["cert"],
        "--tls-key",
        tls_files["key"],
    ]
    assert cli(scene, tmp_path / "b.tif", "--model", MODEL, *tls, "--no-progress") == 0
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
