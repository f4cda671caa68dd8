import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Test helper models are importable as "seamless_dask.testing:..." model specs, here and in the worker processes,
# scheduler and CLI runs that the tests start.
TESTS = str(Path(__file__).parent)
sys.path.insert(0, TESTS)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (TESTS, os.environ.get("PYTHONPATH", "")) if p
)

settings.register_profile(
    "default", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
# CI derandomises so that a landing is reproducible; run locally to explore new examples.
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# `make test-slow` explores far more shapes: --hypothesis-profile=thorough.
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def write_scene(tmp_path_factory):
    """``write_scene(size)``: the demo's georeferenced 3-band GeoTIFF of ``size`` px (UTM 31N, a
    nodata border), written once a session per size.
    """
    from seamless_dask.demo import write_scene_geotiff

    written: dict[int, Path] = {}

    def write(size: int = 240) -> Path:
        if size not in written:
            folder = tmp_path_factory.mktemp(f"scene{size}")
            written[size] = write_scene_geotiff(folder / "scene.tif", size=size)
        return written[size]

    return write


@pytest.fixture(scope="session")
def scene(write_scene):
    """A 240 px demo scene (a module needing another size overrides ``scene`` with ``write_scene``)."""
    return write_scene(240)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
