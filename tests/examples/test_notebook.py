"""The example notebook runs from top to bottom (nbclient, a real Jupyter kernel), and is kept without outputs."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "examples" / "segment_a_scene.ipynb"
VOLUME = NOTEBOOK.with_name("segment_a_volume.ipynb")


def test_the_notebooks_are_committed_without_outputs():
    for path in (NOTEBOOK, VOLUME):
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_end_to_end(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "dashboard: http" in text and "of the pixels lie in the region" in text
    assert "objects of class 1" in text and "opens in QGIS" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)  # the quicklook, inline


def test_the_volume_notebook_shows_slices_before_and_after(tmp_path):
    notebook = nbformat.read(VOLUME, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3",
        resources={"metadata": {"path": str(VOLUME.parent)}},
    ).execute()  # fmt: skip
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs)
    assert "labels equal whole-volume inference: True" in text and "nuclei found" in text
    assert "regions written to labels.zarr" in text
    assert any("image/png" in out.get("data", {}) for out in outputs)  # the slices, inline
