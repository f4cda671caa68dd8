"""Every fenced Python and shell block of README.md, CONTRIBUTING.md and docs/ runs as a reader would
run it, in order, a document at a time, in a folder holding the files its placeholders name
(``doc_fixtures.py``, the one fixture file: ``scene.tif``, ``scan.svs``, ``my_pkg.models:build``...).

- A Python block runs in the document's namespace (blocks share it, as a reader's session does),
  which starts from the fixture's names (``model``, ``image``, ``slide``, ...); a block marked
  ``<!-- run as a script -->`` on the line above it is saved as a file and run by ``python`` (its
  ``if __name__ == "__main__":`` guard is what a script needs); ``>>>`` blocks are pytest's doctests.
- A shell block runs line by line (``\\`` continues a line, ``#`` starts a comment), with the
  project's ``.venv/bin`` first on the PATH.
- A block a machine here cannot run (another host's address, Kubernetes, a GPU, the set-up commands
  CI runs itself) is marked ``<!-- not run by the suite: REASON -->``, and the reason must name where
  it is tested or why it cannot be.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import doc_fixtures
import pytest

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?:<!-- (?P<mark>[^\n]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M
)
SKIP = "not run by the suite: "


def blocks(document: Path) -> list[tuple[int, str, str, str]]:
    """``(line, language, mark, code)`` of each fenced block of Python or shell."""
    text = document.read_text()
    found = []
    for match in FENCE.finditer(text):
        lang = match.group("lang")
        if lang in ("python", "bash", "sh", "shell"):
            line = text[: match.start("code")].count("\n")
            found.append((line, lang, match.group("mark") or "", match.group("code")))
    return found


def _commands(code: str) -> list[list[str]]:
    joined = re.sub(r"\\\n\s*", " ", code)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def _env(folder: Path) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


def _run(command: list[str], folder: Path, where: str) -> None:
    done = subprocess.run(command, cwd=folder, env=_env(folder), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, (
        f"{where}: {shlex.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_block_runs_as_written(document, tmp_path, monkeypatch):
    found = blocks(document)
    if not found:
        pytest.skip("no Python or shell block")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))  # the README's .venv/bin/seamless-dask
    namespace = doc_fixtures.prepare(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # my_pkg, in this process too
    ran = skipped = 0
    for line, lang, mark, code in found:
        where = f"{document.name}:{line + 1}"
        if mark.startswith(SKIP):
            assert len(mark) > len(SKIP) + 10, f"{where}: say why it is not run"
            skipped += 1
            continue
        if code.lstrip().startswith(">>>"):
            continue  # a doctest: pytest runs it (--doctest-glob)
        if lang != "python":
            for command in _commands(code):
                _run(command, tmp_path, where)
        elif mark == "run as a script":
            (tmp_path / "block.py").write_text(code)
            _run([sys.executable, "block.py"], tmp_path, where)
        else:
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"{where} failed: {type(error).__name__}: {error}") from error
        ran += 1
    print(f"{document.name}: {ran} blocks run, {skipped} marked not run")
