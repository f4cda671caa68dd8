"""How a chunk's blended sums become its output: probabilities, logits, the tiles' disagreement, or
labels.

:class:`Decision` is what the graph's tasks carry (:mod:`seamless_dask.blend.accumulate` decides a
chunk a strip of rows at a time); every function here works pixel by pixel, so a strip's output
equals the same rows of the whole's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..tiling.region import Region


@dataclass(frozen=True)
class Decision:
    """How sums become the output (see :func:`decide`)."""

    output: str
    binary: bool
    label_nodata: int | None = None
    dtype: str | None = None  # a soft output's stored dtype (options.stored_dtype); None: float32

    def __call__(self, sums: np.ndarray) -> np.ndarray:
        """Decide ``sums`` (``(classes + 1, y, x)``: weighted sums, then the weight) into this output's
        block.
        """
        if self.dtype == "float64":  # divided in float64 and kept: no float32 step between
            return _normalised(sums, self.binary, self.label_nodata, np.float64)
        block = decide(sums, self.output, self.binary, self.label_nodata)
        return block if self.dtype is None else stored(block, self.dtype)

    @property
    def fill(self) -> float | int:
        """The value of pixels no tile decided: the labels' nodata, a quantised dtype's maximum, or
        NaN.
        """
        if self.label_nodata is not None:
            return self.label_nodata
        return quantised_fill(self.dtype) if self.dtype else np.nan


def quantised_fill(dtype: str) -> float | int:
    """The nodata value of a soft output stored as ``dtype``: an unsigned dtype's maximum (255 for
    uint8), NaN for floats.
    """
    kind = np.dtype(dtype)
    return int(np.iinfo(kind).max) if kind.kind == "u" else np.nan


def scale_factor(dtype: str) -> float:
    """The CF ``scale_factor`` of probabilities quantised to unsigned ``dtype``: one step of
    ``maximum - 1`` over [0, 1] (1/254 for uint8), the maximum being nodata.
    """
    return 1.0 / (int(np.iinfo(np.dtype(dtype)).max) - 1)


def stored(block: np.ndarray, dtype: str) -> np.ndarray:
    """A float32 block of probabilities (NaN: no data) as ``dtype``: cast for a float dtype;
    quantised for an unsigned one, ``round(p / scale_factor)``, its maximum where the block is NaN.
    """
    kind = np.dtype(dtype)
    if kind.kind == "f":
        return block.astype(kind)
    fill = quantised_fill(dtype)
    with np.errstate(invalid="ignore"):
        codes = np.rint(np.clip(block, 0.0, 1.0) * (fill - 1))
    return np.where(np.isnan(block), fill, codes).astype(kind)


def clip_to_region(
    block: np.ndarray, region: Region, origin: tuple[int, int], decision: Decision
) -> np.ndarray:
    """``block`` with nodata on the pixels whose centre lies outside ``region`` (NaN for
    probabilities).
    """
    inside = region.mask(*origin, block.shape[-2:])
    if inside.all():
        return block
    block = block.copy()
    block[..., ~inside] = decision.fill
    return block


def decide(
    sums: np.ndarray, output: str, binary: bool, label_nodata: int | None = None
) -> np.ndarray:
    """Normalise blended sums ``(classes + 1, h, w)`` and return the requested output.

    ``"probabilities"`` and ``"logits"``: float32 ``(classes, h, w)``, NaN where no tile had data;
    ``"uncertainty"``: float32 ``(2, h, w)``, the tiles' disagreement and the blend's entropy;
    ``"labels"``: ``(h, w)`` class indices in :func:`label_dtype`, ``label_nodata`` where no tile
    had data (pixels that are nodata in every band). ``binary`` (one sigmoid channel) labels p >=
    0.5 as 1.
    """
    return _DECIDERS[output](sums, binary, label_nodata)


def _labels(sums: np.ndarray, binary: bool, label_nodata: int | None) -> np.ndarray:
    n_classes = sums.shape[0] - 1
    if binary:
        labels = (sums[0] >= 0.5 * sums[n_classes]).astype(np.uint8)
    else:
        labels = argmax_classes(
            sums[:n_classes], n_classes if label_nodata is None else n_classes + 1
        )
    if label_nodata is not None:
        labels[sums[n_classes] == 0] = label_nodata
    return labels


def _normalised(
    sums: np.ndarray, binary: bool, label_nodata: int | None, dtype: Any = np.float32
) -> np.ndarray:
    n_classes = sums.shape[0] - 1
    out = np.empty(sums[:n_classes].shape, dtype)
    # divides in float64, writes float32: no temporary
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(sums[:n_classes], sums[n_classes], out=out, casting="unsafe")


def _uncertainty(sums: np.ndarray, binary: bool) -> np.ndarray:
    """``(2, h, w)`` float32 from sums of ``w * p``, ``w * p**2`` and ``w``: how much the tiles
    covering each pixel disagree (their weighted variance, summed over classes) and the entropy of
    the blend (nats).

    One sigmoid channel counts as the two classes ``1 - p`` and ``p``. NaN where no tile had data.
    """
    n = (sums.shape[0] - 1) // 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums[:n] / sums[-1]
        variance = np.clip(sums[n:-1] / sums[-1] - mean * mean, 0, None).sum(axis=0)
        probs = np.concatenate([1 - mean, mean]) if binary else mean
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(axis=0)
    out = np.stack([variance * (2 if binary else 1), entropy]).astype(np.float32)
    out[:, sums[-1] == 0] = np.nan
    return out


def argmax_classes(scores: np.ndarray, n_values: int) -> np.ndarray:
    """``np.argmax(scores, axis=0)`` (first class wins ties), one pass per class.

    numpy's argmax over the leading axis of a ``(classes, h, w)`` array strides across memory: for
    2 x 2048 x 2048 float64 it took 1.2 s, this 0.06 s.
    """
    dtype = label_dtype(n_values)
    if len(scores) == 2:  # one comparison: 20x faster than the loop on 2 x 4096 x 4096
        better = np.greater(scores[1], scores[0])
        return better.view(np.uint8) if dtype == np.uint8 else better.astype(dtype)
    best = scores[0].copy()
    index = np.zeros(best.shape, dtype=dtype)
    last = len(scores) - 1
    for c in range(1, len(scores)):
        better = np.greater(scores[c], best)
        np.copyto(index, c, where=better)  # not index[better] = c: 1.7x faster
        if c < last:
            np.maximum(best, scores[c], out=best)
    return index


def label_dtype(n_classes: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds values ``0 .. n_classes - 1``.

    With a nodata value, ask for ``n_classes + 1`` values: nodata is the dtype's maximum (255 for
    uint8).
    """
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


# One decider an output kind (seamless_dask.options.OUTPUT_KINDS names them).
_DECIDERS = {
    "labels": _labels,
    "probabilities": _normalised,
    "logits": _normalised,
    "uncertainty": lambda sums, binary, _: _uncertainty(sums, binary),
}
