"""An object store under faults (moto's S3 server on loopback): one that goes away mid-write ends the
job in one line, and ``--resume`` once the store is back finishes it, identical; one that answers 500 and
503 now and then (five times running, for two chunks) is retried by botocore as configured
(``io._target.S3_RETRIES``), and the output is identical.
"""

import os
import socket
import threading
import time

import numpy as np
import pytest
import support
import xarray as xr

import seamless_dask as sd
from seamless_dask import testing as helpers
from seamless_dask.graph.layers import array_expr

pytestmark = [
    pytest.mark.integration,
    pytest.mark.chaos,  # a fault: make test-chaos, which CI runs
    pytest.mark.skipif(array_expr(), reason="the store's faults, not the graph: engine-agnostic"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _aws(port: int, monkeypatch) -> dict[str, str]:
    """The AWS_ variables that reach moto on ``port``, set in this process (until the test ends) and
    returned, with the rest of the environment, for the CLI's.
    """
    aws = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def test_a_store_stopped_mid_write_and_started_again_resumes_identically(
    write_scene, tmp_path, monkeypatch
):
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    import s3fs

    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**_aws(port, monkeypatch), "SEAMLESS_TILE_SLEEP": "0.03"}
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("bucket"):  # moto keeps its buckets in this process, server after server
        fs.mkdir("bucket")
    scene = write_scene(288)
    # a key of its own: moto keeps what other modules wrote in this process
    url = "s3://bucket/stopped.zarr"
    args = ["-m", "seamless_dask.cli", "segment", str(scene), url, "--model",
            "seamless_dask.testing:logged_brightness", "--tile-size", "64", "--overlap", "16",
            "--chunks", "96", "--num-classes", "2", "--scheduler", "threads", "--no-progress"]  # fmt: skip
    try:
        job = support.python_process(*args, env=env)

        def some_written() -> bool:
            fs.invalidate_cache()
            return fs.exists(url) and len(fs.find(url)) > 20  # the template and a few chunks

        support.wait_for(some_written, 120, "some chunks written")
        server.stop()
        stopped = time.monotonic()
        output, _ = job.communicate(timeout=300)
        text = output.decode()
        took = time.monotonic() - stopped
        assert job.returncode == 3, text
        assert "Traceback" not in text, text
        last = text.strip().splitlines()[-1]
        assert last.startswith(
            "seamless-dask: error: the store of 's3://bucket/stopped.zarr' stopped"
        )
        assert "--resume" in last, last
        print(f"the job ended {took:.1f} s after the store stopped: {last}")

        server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # moto keeps its buckets in this process: the store is as it was left
        again = support.python_process(*args, "--resume", env=env)
        output, _ = again.communicate(timeout=300)
        assert again.returncode == 0, output.decode()
        expected = sd.segment(sd.open_raster(scene, chunks=None), helpers.Brightness(), tile_size=64,
                              overlap=16, resources=None).compute().values  # fmt: skip
        s3fs.S3FileSystem.clear_instance_cache()
        back = xr.open_zarr(url, mask_and_scale=False)["labels"].compute().values
        np.testing.assert_array_equal(back, expected)
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def _flaky_moto(port: int):
    """moto's S3 server on loopback answering some requests with an error instead: while the returned
    ``state["failing"]`` is set, every ``state["every"]``-th request gets a 503 SlowDown, and the first
    ``state["times"]`` attempts at each of the first ``state["stubborn"]`` chunk objects written get a 500
    InternalError (botocore's default, 5 attempts, gives up on five).
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    state = {"failing": False, "every": 0, "stubborn": 0, "times": 0}
    state.update({"count": 0, "503": 0, "500": 0, "seen": {}})
    lock = threading.Lock()

    def error(environ, start_response, status: str, code: str):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length) if length else None
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>".encode()
        start_response(status, [("Content-Type", "application/xml"),
                                ("Content-Length", str(len(body)))])  # fmt: skip
        return [body]

    def answer(environ, start_response):
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        with lock:
            failing, state["count"] = state["failing"], state["count"] + 1
            seen, every = state["seen"], state["every"]
            name = path.rsplit("/", 1)[-1]
            chunk = method == "PUT" and "/labels/" in path and name[:1].isdigit()  # labels/0.1
            if failing and chunk and (path in seen or len(seen) < state["stubborn"]):
                seen[path] = seen.get(path, 0) + 1
                if seen[path] <= state["times"]:
                    state["500"] += 1
                    return error(
                        environ, start_response, "500 Internal Server Error", "InternalError"
                    )
            if failing and every and state["count"] % every == 0:
                state["503"] += 1
                return error(environ, start_response, "503 Slow Down", "SlowDown")
        return app(environ, start_response)

    app = DomainDispatcherApplication(create_backend_app)

    class Flaky(ThreadedMotoServer):
        def _server_entry(self) -> None:
            self._server = make_server("127.0.0.1", port, answer, True,
                                       request_handler=MotoRequestHandler)  # fmt: skip
            self._server_ready_event.set()
            self._server.serve_forever()

    return Flaky(ip_address="127.0.0.1", port=port, verbose=False), state


@pytest.fixture
def flaky_store(write_scene, monkeypatch):
    """A flaky moto server (``_flaky_moto``'s knobs through ``state``, set before ``run``), the AWS_
    variables that reach it in this process and the CLI's, and ``run(url, *more)``: the CLI segmenting a
    288 px scene into ``url`` on dask's threads.
    """
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import s3fs

    port = _free_port()
    server, state = _flaky_moto(port)
    server.start()
    env = _aws(port, monkeypatch)
    scene = write_scene(288)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("bucket"):  # moto's buckets live as long as this process
        fs.mkdir("bucket")

    def run(url: str, *more: str, extra_env: dict | None = None):
        job = support.python_process("-m", "seamless_dask.cli", "segment", str(scene), url,
                                     "--model", "seamless_dask.testing:logged_brightness",
                                     "--tile-size", "64", "--overlap", "16", "--chunks", "96",
                                     "--num-classes", "2", "--scheduler", "threads",
                                     "--no-progress", *more, env={**env, **(extra_env or {})})  # fmt: skip
        started = time.monotonic()
        output, _ = job.communicate(timeout=300)
        return job.returncode, output.decode(), time.monotonic() - started

    def labels(url: str) -> np.ndarray:
        s3fs.S3FileSystem.clear_instance_cache()
        return xr.open_zarr(url, mask_and_scale=False)["labels"].compute().values

    expected = sd.segment(sd.open_raster(scene, chunks=None), helpers.Brightness(), tile_size=64,
                          overlap=16, resources=None).compute().values  # fmt: skip
    try:
        yield state, run, labels, expected
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_store_answering_500_and_503_now_and_then_is_retried_and_the_output_identical(
    flaky_store,
):
    state, run, labels, expected = flaky_store
    state.update(failing=True, every=20, stubborn=2, times=5)
    code, output, took = run("s3://bucket/flaky.zarr")
    state["failing"] = False
    assert code == 0, output[-3000:]
    assert state["500"] == 2 * 5 and state["503"] > 0, state
    np.testing.assert_array_equal(labels("s3://bucket/flaky.zarr"), expected)
    print(f"{state['503']} SlowDown and {state['500']} InternalError answers of "
          f"{state['count']} requests, all retried; the job took {took:.1f} s")  # fmt: skip


def test_a_store_failing_past_its_retries_ends_in_one_line_and_resume_finishes_it(flaky_store):
    state, run, labels, expected = flaky_store
    state.update(failing=True, every=0, stubborn=1, times=10**6)  # one chunk never taken
    url = "s3://bucket/failing.zarr"
    fewer = {"AWS_MAX_ATTEMPTS": "3", "AWS_RETRY_MODE": "standard"}  # botocore's own: it wins
    code, output, took = run(url, extra_env=fewer)
    assert code == 3, output[-3000:]
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"seamless-dask: error: the store of '{url}' kept answering server "
                           "errors past its retries mid-write"), last  # fmt: skip
    assert "--resume" in last and "InternalError" in last, last
    assert state["500"] == 3, state  # AWS_MAX_ATTEMPTS was taken over the package's default
    state["failing"] = False
    code, output, _ = run(url, "--resume")
    assert code == 0, output[-3000:]
    np.testing.assert_array_equal(labels(url), expected)
    print(f"failed after {took:.1f} s: {last}")
