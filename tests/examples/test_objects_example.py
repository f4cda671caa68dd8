"""examples/objects.py runs end to end: a scene segmented, vectorized for a GIS, counted and drawn."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "objects.py"


def test_the_objects_example_counts_vectorizes_and_draws(tmp_path):
    pyogrio = pytest.importorskip("pyogrio")
    done = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path), "--size", "512"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "objects" in done.stdout and (tmp_path / "objects.png").stat().st_size > 0
    frame = pyogrio.read_dataframe(tmp_path / "objects.gpkg")
    assert len(frame) > 0 and frame.crs.to_epsg() == 32631
    assert set(frame["class_name"]) <= {"water", "land", "built-up"}
    assert "Warning" not in done.stderr, done.stderr
