"""What the output tests share: a real S3 API on loopback."""

import os

import pytest


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on 127.0.0.1, with the environment any AWS client (s3fs, boto) reads."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # filesystems cached for another module's server
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("bucket"):  # moto keeps its buckets in this process, server after server
        fs.mkdir("bucket")
    try:
        yield fs
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()
