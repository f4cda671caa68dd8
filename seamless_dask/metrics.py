"""Metrics for rasters of any size: a confusion matrix summed block by block, and the scores made
from it.

The matrix is the one thing computed over the pixels: one ``(classes, classes)`` count per pair of
blocks, summed by dask, so a 100,000 px scene costs what one block costs in memory. Every score
(IoU, Dice, precision, recall, accuracy) is read from the summed matrix, exactly as torchmetrics and
scikit-learn compute them from theirs: a class absent from both truth and prediction has no score
(NaN) and is left out of the means.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .exceptions import DimensionError, IgnoreIndexWarning, OptionError
from .graph.layers import rechunk


def confusion_matrix(
    prediction: Any,
    truth: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    nodata: float | None = None,
) -> np.ndarray:
    """Count, over every pixel, how often class ``t`` in ``truth`` was predicted as class ``p``.

    Parameters
    ----------
    prediction, truth
        ``(y, x)`` integer class maps of the same shape: numpy, dask or xarray (e.g. ``open_raster``
        of a written output and of a label raster, band 1); dask inputs are read block by block,
        never whole.
    num_classes
        Classes ``0 .. num_classes - 1``; a pixel holding another value in either map raises.
    ignore_index
        A truth value to leave out (e.g. 255 for "unlabelled").
    nodata
        A value to leave out wherever it appears in either map (the outputs' nodata; default: each
        DataArray's own ``.rio.nodata``).

    Returns
    -------
    numpy.ndarray
        ``(num_classes, num_classes)`` int64, rows truth, columns prediction (scikit-learn's
        layout).

    Raises
    ------
    DimensionError
        Maps that are not 2-D or differ in shape.
    OptionError
        ``num_classes < 1``, or a class value outside ``0 .. num_classes - 1`` (the message names
        it).

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask.metrics import confusion_matrix
    >>> truth = np.array([[0, 0, 1], [1, 2, 255]])
    >>> prediction = np.array([[0, 1, 1], [1, 2, 0]])
    >>> confusion_matrix(prediction, truth, 3, ignore_index=255)
    array([[1, 1, 0],
           [0, 2, 0],
           [0, 0, 1]])
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise OptionError(
            f"num_classes must be a positive int, got {num_classes!r}: e.g. num_classes=4"
        )
    skip = tuple(
        v for v in (_nodata_of(prediction, nodata), _nodata_of(truth, nodata)) if v is not None
    )
    check_same_grid(prediction, truth)
    pred, true = _as_dask(prediction, "prediction"), _as_dask(truth, "truth")
    if pred.shape != true.shape:
        raise DimensionError(
            f"prediction and truth must have the same shape, got {pred.shape} and {true.shape}: "
            "compare maps of the same scene on the same grid"
        )
    true = rechunk(true, pred.chunks)
    per_block = da.map_blocks(
        _block_confusion,
        pred,
        true,
        num_classes=num_classes,
        ignore=ignore_index,
        skip=skip,
        new_axis=[2, 3],
        # a row more than the classes: its first cell counts the pixels ignore_index left out
        chunks=(
            (1,) * pred.numblocks[0],
            (1,) * pred.numblocks[1],
            (num_classes + 1,),
            (num_classes,),
        ),
        dtype=np.int64,
        meta=np.empty((0, 0, 0, 0), np.int64),
    )
    counts = np.asarray(per_block.sum(axis=(0, 1)).compute())
    if ignore_index is not None and not counts[num_classes, 0]:
        # the command line refuses it (seamless-dask evaluate --ignore-index); here a script may
        # pass its usual value for maps that happen to be fully labelled
        warnings.warn(
            f"ignore_index={ignore_index} matches no pixel of the truth, so it left nothing out: "
            "pass the value the truth uses for unlabelled pixels (often 255, or 0 for background), "
            "or leave ignore_index out",
            IgnoreIndexWarning,
            stacklevel=2,
        )
    return counts[:num_classes]


@dataclass(frozen=True)
class Scores:
    """Per-class and summary scores of a confusion matrix (rows truth, columns prediction).

    Attributes
    ----------
    matrix
        The ``(classes, classes)`` counts.
    iou, dice, precision, recall
        Per class; NaN for a class with nothing to score (absent from truth and prediction).
    """

    matrix: np.ndarray

    @property
    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        # true positives, false positives, false negatives
        return (
            tp,
            m.sum(axis=0) - tp,
            m.sum(axis=1) - tp,
        )

    @property
    def iou(self) -> np.ndarray:
        """Intersection over union, ``tp / (tp + fp + fn)``."""
        tp, fp, fn = self._counts
        return _ratio(tp, tp + fp + fn)

    @property
    def dice(self) -> np.ndarray:
        """Dice (F1), ``2 tp / (2 tp + fp + fn)``."""
        tp, fp, fn = self._counts
        return _ratio(2 * tp, 2 * tp + fp + fn)

    @property
    def precision(self) -> np.ndarray:
        """``tp / (tp + fp)``: of the pixels predicted as the class, how many are."""
        tp, fp, _ = self._counts
        return _ratio(tp, tp + fp)

    @property
    def recall(self) -> np.ndarray:
        """``tp / (tp + fn)``: of the class's pixels, how many were found."""
        tp, _, fn = self._counts
        return _ratio(tp, tp + fn)

    @property
    def accuracy(self) -> float:
        """Overall pixel accuracy: the diagonal over every counted pixel."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    @property
    def mean_iou(self) -> float:
        """Mean IoU over the classes that have one."""
        return _nanmean(self.iou)

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the classes that have one."""
        return _nanmean(self.dice)

    def table(self, class_names: list[str] | None = None) -> str:
        """A plain-text table: one row per class, then the means and the overall accuracy."""
        names = class_names or [str(c) for c in range(len(self.matrix))]
        support = self.matrix.sum(axis=1)
        # each score once
        per_class = np.stack([self.iou, self.dice, self.precision, self.recall], axis=1)
        widths = (8, 8, 11, 8)
        rows = [f"{'class':<12}{'IoU':>8}{'Dice':>8}{'precision':>11}{'recall':>8}{'pixels':>14}"]
        for name, cells, pixels in zip(names, per_class, support, strict=True):
            scores = "".join(f"{v:>{w}.4f}" for v, w in zip(cells, widths, strict=True))
            rows.append(f"{name:<12}{scores}{pixels:>14}")
        rows.append(f"{'mean':<12}{self.mean_iou:>8.4f}{self.mean_dice:>8.4f}")
        rows.append(f"accuracy {self.accuracy:.4f} over {int(self.matrix.sum())} pixels")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        """The scores as JSON-ready values (NaN as ``None``)."""

        def plain(values: np.ndarray) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "iou": plain(self.iou),
            "dice": plain(self.dice),
            "precision": plain(self.precision),
            "recall": plain(self.recall),
            "mean_iou": self.mean_iou,
            "mean_dice": self.mean_dice,
            "accuracy": self.accuracy,
            "confusion_matrix": self.matrix.tolist(),
        }


def scores(
    prediction: Any,
    truth: Any,
    num_classes: int,
    *,
    ignore_index: int | None = None,
    nodata: float | None = None,
) -> Scores:
    """:func:`confusion_matrix` and the scores read from it.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask.metrics import scores
    >>> s = scores(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]), 2)
    >>> s.iou.round(3).tolist(), round(s.accuracy, 3)
    ([0.5, 0.667], 0.75)
    """
    return Scores(
        confusion_matrix(prediction, truth, num_classes, ignore_index=ignore_index, nodata=nodata)
    )


def _block_confusion(
    pred: np.ndarray,
    true: np.ndarray,
    *,
    num_classes: int,
    ignore: int | None,
    skip: tuple[float, ...],
) -> np.ndarray:
    keep = np.ones(pred.shape, bool)
    ignored = 0
    if ignore is not None:
        keep &= true != ignore
        ignored = int(pred.size - keep.sum())
    for value in skip:
        keep &= (pred != value) & (true != value)
    p, t = pred[keep], true[keep]
    for name, values in (("prediction", p), ("truth", t)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = values[(values < 0) | (values >= num_classes)][0]
            raise OptionError(
                f"{name} holds class {bad}, outside 0 .. {num_classes - 1} "
                f"(num_classes={num_classes}): "
                "pass the right num_classes, or ignore_index/nodata for values that are not classes"
            )
    counts = np.bincount(
        t.astype(np.int64) * num_classes + p.astype(np.int64), minlength=num_classes**2
    ).reshape(num_classes, num_classes)
    extra = np.zeros((1, num_classes), np.int64)
    extra[0, 0] = ignored
    return np.concatenate([counts, extra]).reshape(1, 1, num_classes + 1, num_classes)


def check_same_grid(prediction: Any, truth: Any) -> None:
    """Refuse maps that do not lie on one grid: another CRS, or another transform (a shift, another
    pixel size), which a comparison by pixel index would silently misread. Only DataArrays carry a
    grid (their ``.rio`` CRS and transform); arrays are compared as they are.
    """
    grids = [_grid(data) for data in (prediction, truth)]
    if None in grids:
        return
    (pred_crs, pred_transform), (true_crs, true_transform) = grids  # type: ignore[misc]
    fix = (
        "put the truth on the prediction's grid first, e.g. "
        f"gdalwarp -t_srs {pred_crs} -tr {pred_transform.a} {abs(pred_transform.e)} "
        f"-tap -r near TRUTH truth_on_grid.tif (or truth.rio.reproject_match(prediction, "
        "resampling=Resampling.nearest))"
    )
    if pred_crs is not None and true_crs is not None and pred_crs != true_crs:
        raise DimensionError(
            f"prediction and truth are in different CRSs ({pred_crs} and {true_crs}): "
            f"their pixels are not the same places; {fix}"
        )
    if not pred_transform.almost_equals(true_transform, precision=1e-9 * abs(pred_transform.a)):
        dx = (true_transform.c - pred_transform.c) / pred_transform.a
        dy = (true_transform.f - pred_transform.f) / pred_transform.e
        raise DimensionError(
            f"prediction and truth lie on different grids: the truth's origin is {dy:+.6g} rows and "
            f"{dx:+.6g} columns from the prediction's, its pixels "
            f"{true_transform.a:g} x {abs(true_transform.e):g} against "
            f"{pred_transform.a:g} x {abs(pred_transform.e):g}; {fix}"
        )


def _grid(data: Any) -> tuple[Any, Any] | None:
    """``(crs, transform)`` of a DataArray that has coordinates, else ``None``."""
    if not isinstance(data, xr.DataArray) or not {"x", "y"} <= set(data.coords):
        return None
    return data.rio.crs, data.rio.transform(recalc=True)


def _as_dask(data: Any, name: str) -> da.Array:
    if isinstance(data, xr.DataArray):
        data = data.squeeze(drop=True) if data.ndim == 3 and data.shape[0] == 1 else data
        data = data.data
    array = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=2048)
    if array.ndim != 2:
        raise DimensionError(
            f"{name} must be a (y, x) class map, got {array.ndim} dims {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise DimensionError(
            f"{name} must hold integer classes, got dtype {array.dtype}: compare labels "
            f"(output='labels'), "
            "or take probabilities' argmax first"
        )
    return array


def _nodata_of(data: Any, nodata: float | None) -> float | None:
    if nodata is not None:
        return nodata
    if isinstance(data, xr.DataArray) and hasattr(data, "rio"):
        value = data.rio.nodata
        return None if value is None or np.isnan(value) else float(value)
    return None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
