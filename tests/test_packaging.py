"""Bounds that hold: every ``>=`` bound pyproject.toml declares for the package and its extras is what
``make test-lowest`` (CI) installs from constraints-lowest.txt, so the suite's pass there proves it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# the test tools (pinned as in constraints.txt) and torch (only the CPU wheel of 2.13.0 is here)
NOT_AT_THE_BOUND = {"torch", "pytest", "hypothesis", "ruff", "mypy", "jsonschema", "moto",
                    "python-dateutil", "nbclient", "nbformat", "ipykernel"}  # fmt: skip


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _bounds() -> dict[str, Version]:
    project = _project()
    wanted = list(project["dependencies"])
    for extra in ("kubernetes", "slides", "openslide", "remote", "stac", "test"):
        wanted += project["optional-dependencies"][extra]
    bounds = {}
    for line in wanted:
        requirement = Requirement(line)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        if requirement.name != "seamless_dask" and lower:
            bounds[requirement.name.lower()] = Version(lower[0])
    return bounds


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.strip())
        if found:
            pins[found[1].lower().replace("_", "-")] = Version(found[2])
    return pins


def test_every_declared_lower_bound_is_the_version_the_lowest_ci_step_installs():
    pins = _pins()
    bounds = {name.replace("_", "-"): bound for name, bound in _bounds().items()}
    assert "dask" in bounds and "zarr" in bounds and "s3fs" in bounds
    wrong = {
        name: f">={bound}, constraints-lowest.txt pins {pins.get(name)}"
        for name, bound in bounds.items()
        if name not in NOT_AT_THE_BOUND and pins.get(name) != bound
    }
    assert not wrong, f"a bound that the lowest step does not try: {wrong}"
    assert pins["torch"] >= bounds["torch"]


def test_the_lowest_constraints_pin_no_gpu_build():
    assert not [name for name in _pins() if name.startswith(("nvidia-", "cuda-", "triton"))]
