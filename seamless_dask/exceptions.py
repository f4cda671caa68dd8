"""Exceptions raised by seamless_dask.

Every user-facing error is a :class:`SeamlessError`, and also a subclass of the builtin exception a
caller would expect (``ValueError`` for bad arguments, ``TypeError`` for wrong types), so that both
``except SeamlessError`` and ``except ValueError`` work. Messages name the rule, the value and the
fix.
"""

from __future__ import annotations


class SeamlessError(Exception):
    """Base class of every error raised by seamless_dask."""


class ClusterError(SeamlessError, RuntimeError):
    """The cluster could not finish the job: its scheduler is gone, or no worker came in time. The
    message says whether and how the job can be resumed.
    """


class StorageError(SeamlessError, OSError):
    """The store written to stopped answering mid-write; the message says how to finish the job."""


class SeamlessWarning(UserWarning):
    """Base class of the warnings seamless_dask gives (the CLI prints them as one line each)."""


class IgnoreIndexWarning(SeamlessWarning):
    """``ignore_index`` matched no pixel of the truth: most often a value the truth does not use."""


class ClusterWarning(SeamlessWarning):
    """The cluster cannot run the job yet (no worker connected); it waits, and says how long."""


class TilingError(SeamlessError, ValueError):
    """Tile size, overlap or chunking that cannot form a valid tile grid."""


class DimensionError(SeamlessError, ValueError):
    """Input whose dimensions, order or size cannot be segmented."""


class WeightsError(SeamlessError, ValueError):
    """A blending weight specification that is unknown or invalid."""


class ModelSpecError(SeamlessError, TypeError):
    """A model specification that cannot be turned into a callable model."""


class ModelError(SeamlessError, RuntimeError):
    """The model's own code tried to end the process (``sys.exit``) instead of raising an exception."""


class ModelOutputError(SeamlessError, ValueError):
    """A model output whose type or shape cannot be blended."""


class OptionError(SeamlessError, ValueError):
    """An option value outside the accepted set (output, activation, device, normalize...)."""


class RasterError(SeamlessError, ValueError):
    """A raster that cannot be opened or written: missing file, unknown format, wrong bands, bad
    target.
    """
