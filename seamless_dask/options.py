"""The option values ``segment`` takes, as ``Literal`` types: one source for the type checker, the
runtime checks (``get_args``) and the command line's choices, so the three never drift. The
weights' kinds are the registry's (:mod:`seamless_dask.tiling.weights`), re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

from .tiling.weights import WEIGHTS_KINDS, WeightsKind

if TYPE_CHECKING:
    import numpy as np

    from .tiling.weights import TileWeights

__all__ = [
    "ACTIVATIONS",
    "AMP",
    "AMP_MODES",
    "OUTPUTS",
    "TTA",
    "TTA_MODES",
    "WEIGHTS_KINDS",
    "Activation",
    "Output",
    "SegmentOptions",
    "WeightsKind",
]

Output = Literal["labels", "probabilities", "logits", "uncertainty"]
Activation = Literal["softmax", "sigmoid"]
TTA = Literal["flips", "d4"]
AMP = Literal["bf16", "fp16"]

OUTPUTS: tuple[str, ...] = get_args(Output)
ACTIVATIONS: tuple[str | None, ...] = (*get_args(Activation), None)
TTA_MODES: tuple[str | None, ...] = (None, *get_args(TTA))
AMP_MODES: tuple[str | None, ...] = (None, *get_args(AMP))


class SegmentOptions(TypedDict, total=False):
    """The keyword options of :func:`~seamless_dask.segment`, for its typed overloads (one per input
    type).
    """

    tile_size: int | tuple[int, int]
    overlap: int | tuple[int, int]
    batch_size: int
    output: Output
    weights: WeightsKind | TileWeights | np.ndarray
    device: str
    normalize: tuple[Any, Any] | Literal["imagenet"] | None
    activation: Activation | None
    num_classes: int | None
    chunks: int | tuple[int, int] | None
    tta: TTA | None
    amp: AMP | None
    nodata: float | str | None
    resources: dict[str, float] | str | None
    trust_model: bool
    head: str | int | None
    bands: Sequence[Any] | None
    region: Any
    region_crs: Any
    class_names: Sequence[str] | None
    palette: Any
