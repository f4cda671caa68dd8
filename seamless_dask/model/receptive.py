"""How far a model looks: its receptive field, measured, and the overlap that makes tiled inference
exact.

``"trim"`` weights give every pixel the prediction of the tile in which it lies at least ``overlap
// 2`` from an edge (or on the image border). When that margin covers the model's receptive field,
the tile saw everything a whole-image run would have, and the result equals whole-image inference;
when it does not, pixels near the seams differ. :func:`receptive_field` measures the field as the
gradient of one central output pixel with respect to the input (exact zeros outside the theoretical
field for convolutions), and :func:`check_overlap` is what :func:`seamless_dask.segment` calls to
warn when ``"trim"`` is not exact.
"""

from __future__ import annotations

import math
import warnings
import weakref
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import ModelError
from ..tiling.weights import TileWeights
from .loading import ModelSpec
from .outputs import segmentation_tensor


class ReceptiveFieldWarning(UserWarning):
    """``overlap // 2`` is smaller than the model's receptive field, with ``"trim"`` weights (or the
    field could not be measured).
    """


class ReceptiveFieldError(ModelError):
    """The probe found no gradient to measure: the field is unknown, not zero."""


class ReceptiveField(NamedTuple):
    """A model's receptive field around one output pixel, in input pixels on each side ``(y, x)``.

    ``radius``: where the gradient is non-zero at all (a lower bound when ``bounded`` is False: it
    reached the border of the largest input probed). ``effective``: where ``mass`` of the gradient's
    magnitude lies, what the model mostly looks at. ``probe``: the input size measured on.
    """

    radius: tuple[int, int]
    effective: tuple[int, int]
    probe: tuple[int, int]
    bounded: bool

    @property
    def exact_overlap(self) -> tuple[int, int]:
        """The overlap whose ``"trim"`` margins (``overlap // 2``) cover ``radius``: whole-image
        results.
        """
        return 2 * self.radius[0], 2 * self.radius[1]


def receptive_field(
    model: ModelSpec,
    bands: int,
    size: int = 64,
    *,
    max_size: int = 1024,
    mass: float = 0.99,
    device: str = "cpu",
    seed: int = 0,
) -> ReceptiveField:
    """Measure ``model``'s receptive field from the input gradient of its centre output pixel.

    Random inputs of ``size`` px a side (doubled, up to ``max_size``, while the gradient reaches the
    border), two of them so that a ReLU that happens to be off does not hide a path. The model runs
    in eval mode and its parameters' gradients are not touched.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` (or TorchScript module) taking ``(N, bands, H, W)``; a dict with
        ``"out"`` or a tuple output is read as :func:`seamless_dask.segment` reads it.
    bands
        Input channels.
    size, max_size
        First and largest probe size, in pixels (powers of two suit encoder-decoders).
    mass
        Fraction of the gradient's magnitude that the ``effective`` radius holds.

    Examples
    --------
    >>> import torch
    >>> from seamless_dask import receptive_field
    >>> conv = torch.nn.Conv2d
    >>> net = torch.nn.Sequential(conv(1, 4, 5, padding=2), torch.nn.ReLU(), conv(4, 2, 3, padding=1))
    >>> field = receptive_field(net, bands=1)
    >>> field.radius, field.exact_overlap  # two convolutions, 5x5 then 3x3: 2 + 1 px each side
    ((3, 3), (6, 6))
    """
    import torch

    if not 0 < mass <= 1:
        raise ValueError(f"mass is a fraction in (0, 1], got mass={mass}")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    generator = torch.Generator().manual_seed(seed)
    try:
        with torch.inference_mode(False), torch.enable_grad():  # even when called inside them
            while True:
                grad = _centre_gradient(
                    model, torch.randn(2, bands, size, size, generator=generator).to(device)
                )
                radius, bounded = _radius(grad)
                if bounded or size * 2 > max_size:
                    return ReceptiveField(radius, _effective(grad, mass), (size, size), bounded)
                size *= 2
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _centre_gradient(model: Any, x: Any) -> np.ndarray:
    """``|d out[:, :, c, c] / d x|`` for a batch ``x``, summed over the batch and bands: ``(size,
    size)``.
    """
    import torch

    size = x.shape[-1]
    x = x.requires_grad_(True)
    out = segmentation_tensor(model(x))
    centre = out[:, :, size // 2, size // 2]
    # the classes mixed with random weights, not summed: a model whose class scores sum to a
    # constant (softmax, or weights of opposite signs) has a zero gradient of the sum everywhere
    mix = torch.randn(centre.shape[1], generator=torch.Generator().manual_seed(1)).to(centre)
    (grad,) = torch.autograd.grad((centre * mix).sum(), x)
    return grad.abs().sum(dim=(0, 1)).double().cpu().numpy()


def _radius(grad: np.ndarray) -> tuple[tuple[int, int], bool]:
    size, centre = grad.shape[0], grad.shape[0] // 2
    if not np.isfinite(grad).all() or grad.max() <= 0:
        raise ReceptiveFieldError(
            "the receptive field cannot be measured: the gradient of the model's centre output "
            f"pixel with respect to its input is {'not finite' if grad.max() > 0 else 'zero'} "
            "everywhere (a model whose output does not depend on its input, or is not "
            "differentiable); choose the overlap from the architecture instead"
        )
    rows, cols = np.nonzero(grad > grad.max() * 1e-12)
    radius = (int(np.abs(rows - centre).max()), int(np.abs(cols - centre).max()))
    bounded = rows.min() > 0 and cols.min() > 0 and rows.max() < size - 1 and cols.max() < size - 1
    return radius, bool(bounded)


def _effective(grad: np.ndarray, mass: float) -> tuple[int, int]:
    centre, out = grad.shape[0] // 2, []
    for profile in (grad.sum(axis=1), grad.sum(axis=0)):
        total = profile.sum()
        r = 0
        while profile[max(0, centre - r) : centre + r + 1].sum() < mass * total:
            r += 1
        out.append(r)
    return out[0], out[1]


def _measure_copy(model: Any, bands: int, size: int) -> ReceptiveField | None:
    """The field of a copy of ``model``, on the device its weights are on (the user's own object is
    never called by the check), or None for a model that cannot be copied or differentiated.
    """
    import copy

    import torch

    device = _weights_device(model)
    if device is None:
        return None
    try:
        with torch.inference_mode(False), torch.enable_grad():
            probe = copy.deepcopy(model)
            return receptive_field(probe, bands, size=size, max_size=size, device=str(device))
    except ReceptiveFieldError as error:  # measured, and nothing found: said, not passed over
        warnings.warn(
            f"{error}: the overlap is not checked against the model", ReceptiveFieldWarning, 4
        )
        return None
    except Exception:  # a model we cannot differentiate or copy is simply not checked
        return None


def _covers(margins: tuple[int, int], field: ReceptiveField) -> bool:
    return field.bounded and all(m >= r for m, r in zip(margins, field.radius, strict=True))


# model -> {(bands, tile): field}
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_overlap(
    model: Any, bands: int, tile: tuple[int, int], overlap: tuple[int, int]
) -> ReceptiveField | None:
    """Warn (:class:`ReceptiveFieldWarning`) when ``"trim"``'s margins ``overlap // 2`` miss the
    model's field.

    Measured once per model, bands, tile and overlap (a forward and a backward pass): first on a
    probe just larger than the margins (a multiple of 32 px, so encoder-decoders take it), which
    settles the usual case of a field inside them at a fraction of a tile's cost; then, when that
    probe fails or the field reaches past the margins, on a tile-sized probe, for the message. A
    model that cannot be differentiated (a callable on numpy, a frozen graph) is not checked.
    Returns the field.
    """
    try:
        cache = _MEASURED.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        cache = {}
    margins = TileWeights("trim").margins(tile, overlap)  # the registry's rule: overlap // 2
    key = (bands, tile, margins)
    if key not in cache:
        small = min(*tile, 32 * math.ceil((2 * max(margins) + 3) / 32))
        field = _measure_copy(model, bands, small) if small < min(tile) else None
        if field is None or not _covers(margins, field):
            field = _measure_copy(model, bands, min(tile))
        cache[key] = field
    field = cache[key]
    if field is None:
        return None
    if _covers(margins, field):
        return field
    reach = f"{field.radius[0]} x {field.radius[1]} px" + ("" if field.bounded else " or more")
    wanted = field.exact_overlap
    if field.bounded and all(w < t for w, t in zip(wanted, tile, strict=True)):
        fix = (
            f"use overlap={wanted if wanted[0] != wanted[1] else wanted[0]} for whole-image results"
        )
    else:
        fix = "use a larger tile_size with overlap = 2 x the field, or weights='gaussian' to blend the seams"
    warnings.warn(
        f"the model's receptive field reaches {reach} (y x) from a pixel (effective "
        f"{field.effective[0]} x "
        f"{field.effective[1]} px), but weights='trim' trusts each tile up to overlap // 2 = "
        f"{margins[0]} x "
        f"{margins[1]} px from its edge: pixels near tile seams differ from whole-image "
        f"inference; {fix}",
        ReceptiveFieldWarning,
        stacklevel=3,
    )
    return field


def check_volume_overlap(
    model: Any, bands: int, tile: tuple[int, ...], overlap: tuple[int, ...]
) -> tuple[int, ...] | None:
    """A volume's :func:`check_overlap`: warn (:class:`ReceptiveFieldWarning`) when ``"trim"``'s
    margins ``overlap // 2`` miss the model's field on an axis with seams (an axis of one tile has
    none, ``overlap`` 0 there). One forward and backward pass of a copy of the model on a
    tile-sized probe, once per model, bands, tile and overlap. Returns the field's radius per axis,
    or None for a model that cannot be copied or differentiated.
    """
    try:
        cache = _MEASURED.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        cache = {}
    key = ("volume", bands, tile, overlap)
    if key not in cache:
        cache[key] = _volume_field(model, bands, tile)
    field = cache[key]
    if field is None:
        return None
    radius, bounded = field
    margins = tuple(o // 2 for o in overlap)
    short = [
        i for i, (m, r, o) in enumerate(zip(margins, radius, overlap, strict=True)) if o and m < r
    ]
    if short or (not bounded and any(overlap)):
        reach = " x ".join(map(str, radius)) + ("" if bounded else " or more")
        wanted = ",".join(str(2 * r) for r in radius)
        warnings.warn(
            f"the model's receptive field reaches {reach} voxels (z y x) from a voxel, but "
            f"weights='trim' trusts each tile up to overlap // 2 = {' x '.join(map(str, margins))} "
            f"from its edge: voxels near tile seams differ from whole-volume inference; use "
            f"overlap=({wanted}) (and a tile larger than it), or weights='gaussian' to blend",
            ReceptiveFieldWarning,
            stacklevel=3,
        )
    return radius


def _volume_field(model: Any, bands: int, tile: tuple[int, ...]) -> tuple[tuple, bool] | None:
    import copy

    import torch

    device = _weights_device(model)
    if device is None:
        return None
    try:
        with torch.inference_mode(False), torch.enable_grad():
            probe = copy.deepcopy(model).eval()
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(2, bands, *tile, generator=generator).to(device).requires_grad_(True)
            out = segmentation_tensor(probe(x))
            centre = out[(slice(None), slice(None), *(t // 2 for t in tile))]
            mix = torch.randn(centre.shape[1], generator=torch.Generator().manual_seed(1))
            (grad,) = torch.autograd.grad((centre * mix.to(centre)).sum(), x)
        g = grad.abs().sum(dim=(0, 1)).double().cpu().numpy()
    except Exception:  # a model we cannot differentiate or copy is simply not checked
        return None
    if not np.isfinite(g).all() or g.max() <= 0:
        return None
    where = np.nonzero(g > g.max() * 1e-12)
    radius = tuple(int(np.abs(w - t // 2).max()) for w, t in zip(where, tile, strict=True))
    bounded = all(w.min() > 0 and w.max() < t - 1 for w, t in zip(where, tile, strict=True))
    return radius, bool(bounded)


def _weights_device(model: Any) -> Any:
    """The device a module's weights are on (the CPU for one without weights); None for what is
    not a module (a callable on numpy, a frozen graph: not checked).
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        return None
    return next(model.parameters(), torch.empty(0)).device
