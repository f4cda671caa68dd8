"""One list of options (options.SEGMENT_OPTIONS): segment's signature, its typed overloads, the
command line's flags and its job request all say the same names and defaults.
"""

import dataclasses
import inspect

import pytest

import seamless_dask as sd
from seamless_dask.cli import entry
from seamless_dask.cli.job import SegmentRequest
from seamless_dask.options import OPTION_NAMES, SEGMENT_OPTIONS, SegmentOptions


def _segment_flags() -> dict[str, object]:
    """``{dest: action}`` of every flag of ``seamless-dask segment``."""
    commands = next(a for a in entry.parser()._actions if a.choices and "segment" in a.choices)
    return {action.dest: action for action in commands.choices["segment"]._actions}


def test_segments_keywords_are_the_list_in_its_order_with_its_defaults():
    params = inspect.signature(sd.segment).parameters
    keywords = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert tuple(keywords) == OPTION_NAMES
    assert keywords == {o.name: o.default for o in SEGMENT_OPTIONS}


def test_the_typed_overloads_take_every_option_of_the_list():
    assert set(SegmentOptions.__annotations__) == set(OPTION_NAMES)


@pytest.mark.parametrize("option", [o for o in SEGMENT_OPTIONS if o.on_cli], ids=lambda o: o.name)
def test_each_option_is_a_flag_of_the_command_line_and_a_field_of_its_request(option):
    action = _segment_flags()[option.name]
    assert option.flag in action.option_strings
    assert option.help in action.help
    fields = {f.name: f.default for f in dataclasses.fields(SegmentRequest)}
    assert fields[option.name] == option.default
    if option.name != "activation":  # spelled "none" on the command line
        assert action.default == option.default


def test_the_command_lines_output_flag_is_output_and_the_file_is_the_target():
    flags = _segment_flags()
    assert "--output" in flags["output"].option_strings
    assert flags["target"].metavar == "OUTPUT"
