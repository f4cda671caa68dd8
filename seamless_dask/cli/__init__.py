"""The command line: the parser and its entry point (:mod:`.entry`, ``seamless_dask.cli:main``), the
commands beside ``segment`` (:mod:`.commands`) and a ``segment`` job from arguments to a written
output (:mod:`.job`).

The top of the house: may import anything of seamless_dask.
"""

from .entry import main

__all__ = ["main"]
