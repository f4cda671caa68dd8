"""Rasters in and out: ``open_raster``, ``to_zarr`` (region writes, resumable), ``to_ome_zarr`` and
``to_cog``.

Both writers turn a lazy result into one dask task per output chunk, so the pixels are computed and
written on whichever scheduler is active (threads, processes or a ``distributed`` cluster) and never
gathered in the client. Both write local paths and fsspec URLs, take an exclusive claim on their
target while they write, and never replace or delete anything seamless_dask did not write
(``_target.py``). One module per job, as odc-geo's ``cog/`` package: ``_open`` (reading; ``_slide``
and ``_ngff`` for whole-slide files and OME-Zarr), ``_zarr``, ``_ome_zarr``, ``_cog``, ``_target``.
"""

from ._cog import discard_partial_cog, to_cog
from ._ome_zarr import labels_target, mark_ome_zarr_complete, to_ome_zarr
from ._open import is_zarr, open_raster
from ._pam import category_names
from ._slide import is_slide as read_by_level
from ._target import S3_RETRIES, Claim, Target, as_target, check_not_an_input, claim
from ._zarr import DONE, is_complete, mark_complete, to_zarr

__all__ = [
    "DONE",
    "S3_RETRIES",
    "Claim",
    "Target",
    "as_target",
    "category_names",
    "check_not_an_input",
    "claim",
    "discard_partial_cog",
    "is_complete",
    "is_zarr",
    "labels_target",
    "mark_complete",
    "mark_ome_zarr_complete",
    "open_raster",
    "read_by_level",
    "to_cog",
    "to_ome_zarr",
    "to_zarr",
]
