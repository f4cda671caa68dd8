"""An object store that goes away mid-write: the job ends in one line, and ``--resume`` once the
store is back finishes it, identical (moto's S3 server on loopback, stopped and started again).
"""

import os
import socket
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


def test_a_store_stopped_mid_write_and_started_again_resumes_identically(write_scene, tmp_path):
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    import s3fs

    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "SEAMLESS_TILE_SLEEP": "0.03"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env if k.startswith("AWS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bucket")
    scene = write_scene(288)
    url = "s3://bucket/labels.zarr"
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
            "seamless-dask: error: the store of 's3://bucket/labels.zarr' stopped"
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
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3fs.S3FileSystem.clear_instance_cache()
