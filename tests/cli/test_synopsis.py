"""docs/guide.md's command-line synopsis names every flag of every command, and no flag the parser
lacks (issue 32: nine flags were documented nowhere, and the synopsis left out twelve more).
"""

import argparse
import re
from pathlib import Path

import pytest

from seamless_dask.cli.entry import parser

GUIDE = Path(__file__).parents[2] / "docs" / "guide.md"


def synopsis() -> str:
    text = GUIDE.read_text()
    start = text.index("seamless-dask segment INPUT")
    return text[start : text.index("```", start)]


def commands() -> dict[str, argparse.ArgumentParser]:
    found = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(found.choices)


@pytest.mark.parametrize("name", sorted(commands()))
def test_the_guides_synopsis_names_each_flag_of(name):
    line = re.search(rf"seamless-dask {name}\b(.*?)(?=\nseamless-dask |\Z)", synopsis(), re.S)
    assert line, f"the synopsis has no line for seamless-dask {name}"
    shown = set(re.findall(r"--[a-z][a-z0-9-]*", line.group(1)))
    flags = {o for a in commands()[name]._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == shown
