"""Geometry before pixels: the tile lattice (:mod:`.grid`), trust maps (:mod:`.weights`), regions
(:mod:`.region`).

Pure values and numpy: this subpackage imports neither dask nor torch, and nothing of seamless_dask
but
:mod:`seamless_dask.exceptions` and :mod:`seamless_dask.options`.
"""
