"""The option values ``segment`` takes, as ``Literal`` types: one source for the type checker, the
runtime checks (``get_args``) and the command line's choices, so the three never drift. The
weights' kinds are the registry's (:mod:`seamless_dask.tiling.weights`), re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

from .exceptions import OptionError
from .tiling.weights import WEIGHTS_KINDS, WeightsKind

if TYPE_CHECKING:
    import numpy as np

    from .tiling.weights import TileWeights

__all__ = [
    "ACTIVATIONS",
    "AMP",
    "AMP_MODES",
    "OUTPUTS",
    "OUTPUT_KINDS",
    "TTA",
    "TTA_MODES",
    "WEIGHTS_KINDS",
    "Activation",
    "Output",
    "OutputKind",
    "SegmentOptions",
    "WeightsKind",
    "output_kind",
]

Output = Literal["labels", "probabilities", "logits", "uncertainty"]
Activation = Literal["softmax", "sigmoid"]
TTA = Literal["flips", "d4"]
AMP = Literal["bf16", "fp16"]

OUTPUTS: tuple[str, ...] = get_args(Output)
ACTIVATIONS: tuple[str | None, ...] = (*get_args(Activation), None)
TTA_MODES: tuple[str | None, ...] = (None, *get_args(TTA))
AMP_MODES: tuple[str | None, ...] = (None, *get_args(AMP))


@dataclass(frozen=True)
class OutputKind:
    """What one ``output=`` kind is: the one place its dims, bands, dtype and moments are decided.

    ``band_dim`` names the leading dim (``None``: labels are ``(y, x)``); ``measures`` are the
    bands of a kind whose bands are not the classes; ``moments`` how many moments of the
    predictions the blend sums (2: the second gives the tiles' disagreement); ``activated`` whether
    the model's output goes through the activation first (logits: no); ``needs_probabilities``
    whether it measures something only probabilities have.
    """

    name: str
    band_dim: str | None
    measures: tuple[str, ...] = ()
    moments: int = 1
    activated: bool = True
    needs_probabilities: bool = False

    @property
    def is_labels(self) -> bool:
        """Class indices, ``(y, x)``, in the smallest unsigned dtype; float32 bands otherwise."""
        return self.band_dim is None

    @property
    def carries_classes(self) -> bool:
        """Whether its bands (or values) are the classes, so class names and colours go with it."""
        return not self.measures

    @property
    def dims(self) -> tuple[str, ...]:
        """The result's dims."""
        return ("y", "x") if self.band_dim is None else (self.band_dim, "y", "x")

    def bands(self, n_classes: int) -> int:
        """How many bands the result has (1 for labels, which have none)."""
        if self.is_labels:
            return 1
        return len(self.measures) or n_classes

    def band_coords(self, n_classes: int) -> dict[str, Any]:
        """The coordinate of the band dim: the class indices, or the measures' names."""
        if self.band_dim is None:
            return {}
        import numpy as np

        values = np.array(self.measures) if self.measures else np.arange(n_classes)
        return {self.band_dim: values}


OUTPUT_KINDS: dict[str, OutputKind] = {
    "labels": OutputKind("labels", None),
    "probabilities": OutputKind("probabilities", "class"),
    "logits": OutputKind("logits", "class", activated=False),
    "uncertainty": OutputKind(
        "uncertainty",
        "measure",
        ("disagreement", "entropy"),
        moments=2,
        needs_probabilities=True,
    ),
}


def output_kind(output: str) -> OutputKind:
    """The :class:`OutputKind` named ``output``, or an OptionError listing them."""
    try:
        return OUTPUT_KINDS[output]
    except (KeyError, TypeError):
        raise OptionError(
            f"output must be one of {OUTPUTS}, got output={output!r}: use e.g. 'labels'"
        ) from None


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
