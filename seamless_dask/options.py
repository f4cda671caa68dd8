"""The option values ``segment`` takes, as ``Literal`` types: one source for the type checker, the
runtime checks (``get_args``) and the command line's choices, so the three never drift. The
weights' kinds are the registry's (:mod:`seamless_dask.tiling.weights`), re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    "DTYPES",
    "OPTION_NAMES",
    "OUTPUTS",
    "OUTPUT_KINDS",
    "PADDINGS",
    "SEGMENT_OPTIONS",
    "TTA",
    "TTA_MODES",
    "WEIGHTS_KINDS",
    "Activation",
    "Dtype",
    "Option",
    "Output",
    "OutputKind",
    "Padding",
    "SegmentOptions",
    "WeightsKind",
    "output_kind",
    "stored_dtype",
]

Output = Literal["labels", "probabilities", "logits", "uncertainty"]
Activation = Literal["softmax", "sigmoid"]
TTA = Literal["flips", "d4"]
AMP = Literal["bf16", "fp16"]
Dtype = Literal["float32", "float64", "float16", "uint8", "uint16"]
Padding = Literal["flush", "constant", "reflect", "replicate", "wrap"]

OUTPUTS: tuple[str, ...] = get_args(Output)
ACTIVATIONS: tuple[str | None, ...] = (*get_args(Activation), None)
TTA_MODES: tuple[str | None, ...] = (None, *get_args(TTA))
AMP_MODES: tuple[str | None, ...] = (None, *get_args(AMP))
DTYPES: tuple[str | None, ...] = (None, *get_args(Dtype))
PADDINGS: tuple[str, ...] = get_args(Padding)


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


def stored_dtype(kind: OutputKind, dtype: str | None) -> str | None:
    """The dtype a result of ``kind`` is stored in: ``None`` for the default (labels: the smallest
    unsigned dtype that holds the classes; soft outputs: float32), ``"float64"`` (the blend's float64
    sums divided and kept, and a float64 model's outputs at their own precision), ``"float16"`` (half
    the store, ~3 significant digits), or ``"uint8"``/``"uint16"`` for probabilities quantised to 254 or 65534
    steps of [0, 1] (the dtype's maximum is nodata; the scale is the result's CF ``scale_factor``).
    An OptionError names what ``kind`` allows.
    """
    if dtype is None or (dtype == "float32" and not kind.is_labels):
        return None
    if dtype not in DTYPES:
        raise OptionError(f"dtype must be one of {DTYPES}, got dtype={dtype!r}: use e.g. 'float16'")
    if kind.is_labels:
        raise OptionError(
            f"output='labels' are class indices, stored in the smallest unsigned dtype that holds "
            f"the classes (uint8 up to 254 classes), so dtype={dtype!r} does not apply: leave dtype "
            "unset, or ask for a soft output (output='probabilities', dtype='uint8')"
        )
    if dtype.startswith("uint") and kind.name != "probabilities":
        raise OptionError(
            f"dtype={dtype!r} quantises values in [0, 1], which output={kind.name!r} does not have "
            f"(logits and entropy are unbounded): use dtype='float16' to halve the store, or "
            "output='probabilities'"
        )
    return dtype


def output_kind(output: str) -> OutputKind:
    """The :class:`OutputKind` named ``output``, or an OptionError listing them."""
    try:
        return OUTPUT_KINDS[output]
    except (KeyError, TypeError):
        raise OptionError(
            f"output must be one of {OUTPUTS}, got output={output!r}: use e.g. 'labels'"
        ) from None


@dataclass(frozen=True)
class Option:
    """One keyword option of :func:`~seamless_dask.segment`: its name, default and help, written once.

    ``segment``'s signature, :class:`SegmentOptions`, the job request of the command line and the
    ``seamless-dask segment`` flags (``--tile-size`` for ``tile_size``) are derived from or checked
    against :data:`SEGMENT_OPTIONS` (tests/test_options.py). ``on_cli`` is false for options a
    command line cannot give (a dict of worker resources).
    """

    name: str
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    on_cli: bool = True

    @property
    def flag(self) -> str:
        """The command line's flag: ``--tile-size`` for ``tile_size``."""
        return "--" + self.name.replace("_", "-")


SEGMENT_OPTIONS: tuple[Option, ...] = (
    Option("tile_size", 256, "tile side in pixels the model sees (int, or (y, x))", "N"),
    Option(
        "overlap",
        64,
        "pixels neighbouring tiles share (int, or (y, x)), or a fraction of the tile such as 0.25",
        "N",
    ),
    Option("batch_size", 8, "tiles per model call (never changes a pixel)", "N"),
    Option("output", "labels", "what the result holds", choices=OUTPUTS),
    Option("weights", "trim", "the trust map that blends the overlaps", choices=WEIGHTS_KINDS),
    Option("device", "auto", "auto, cpu, cuda or cuda:N"),
    Option(
        "normalize",
        None,
        "imagenet, percentile (the scene's 1-99.8 %, or percentile:LOW,HIGH), or per-band "
        "mean/std: 123,116,103/58,57,57",
        "MEAN/STD",
    ),
    Option("activation", "softmax", "applied to the model's output", choices=ACTIVATIONS),
    Option("num_classes", None, "the model's outputs (default: probe it once)", "N"),
    Option("chunks", None, "pixels per chunk side (default 2048)", "N"),
    Option("tta", None, "test-time augmentation views", choices=TTA_MODES),
    Option("amp", None, "mixed precision on CUDA", choices=AMP_MODES),
    Option("nodata", "auto", "auto (from the input), none, or a number", "V"),
    Option("resources", "auto", "worker resources of model tasks", on_cli=False),
    Option(
        "trust_model",
        False,
        "load a torch.export .pt2 model file, which runs code as it loads (pickle): only files "
        "you trust",
    ),
    Option(
        "dtype",
        None,
        "the stored dtype of soft outputs: float32 (default), float64, float16, or uint8/uint16 "
        "probabilities (quantised; CF scale_factor)",
        choices=DTYPES[1:],
    ),
    Option(
        "padding",
        "flush",
        "what pads an image smaller than the tile up to it: flush (the fill: the normalisation "
        "mean, or 0), constant (--cval), reflect, replicate, wrap",
        choices=PADDINGS,
    ),
    Option("cval", 0.0, "the value of padding=constant, in the input's units", "V"),
    Option(
        "head", None, "another output of the model (a dict key such as aux; several: Python)", "KEY"
    ),
    Option(
        "process_fn",
        None,
        "called on each batch of predictions before the blend (MONAI's process_fn): "
        "pkg.module:function of (predictions, tiles)",
        "PKG.MODULE:FUNCTION",
    ),
    Option("bands", None, "the bands to segment (1-based on the command line: 3,2,1)", "B,B,.."),
    Option("channel_axis", None, "where the bands are (-1: channels last)", on_cli=False),
    Option(
        "region",
        None,
        "segment only this area: a GeoJSON file (default CRS EPSG:4326), a mask raster "
        "(.tif/.png, non-zero where wanted, any resolution over the image), or tissue",
        "FILE",
    ),
    Option("region_crs", None, "the CRS of the region, e.g. EPSG:32631", "CRS"),
    Option("class_names", None, "one name per class", "A,B,.."),
    Option("palette", None, "one #rrggbb colour per class", "#RGB,.."),
    Option(
        "resolution",
        None,
        "the model's pixel size in the input's units (m, µm): the image resampled to it, the "
        "result mapped back (R, or RY,RX)",
        "R",
    ),
    Option(
        "output_resolution",
        "input",
        "with --resolution: the result on the input's grid or the model's",
        choices=("input", "model"),
    ),
)
OPTION_NAMES: tuple[str, ...] = tuple(option.name for option in SEGMENT_OPTIONS)


class SegmentOptions(TypedDict, total=False):
    """The keyword options of :func:`~seamless_dask.segment`, for its typed overloads (one per input
    type).
    """

    tile_size: int | tuple[int, int]
    overlap: int | tuple[int, int] | float | tuple[float, float]
    batch_size: int
    output: Output
    weights: WeightsKind | TileWeights | np.ndarray
    device: str
    normalize: tuple[Any, ...] | Literal["imagenet", "percentile"] | None
    activation: Activation | None
    num_classes: int | None
    chunks: int | tuple[int, int] | None
    tta: TTA | None
    amp: AMP | None
    nodata: float | str | None
    resources: dict[str, float] | str | None
    trust_model: bool
    dtype: Dtype | None
    padding: Padding
    cval: float
    head: str | int | Sequence[str | int] | dict[str | int, str] | None
    process_fn: Callable[[Any, Any], Any] | str | None
    bands: Sequence[Any] | None
    channel_axis: int | str | None
    region: Any
    region_crs: Any
    class_names: Sequence[str] | None
    palette: Any
    resolution: float | tuple[float, float] | None
    output_resolution: Literal["input", "model"]
