"""What a model's output may be, and how one batch of it becomes per-tile predictions.

A model may return a tensor, a torchvision-style dict with ``"out"``, or a tuple or list whose first
item is the segmentation, of shape ``(N, classes, H, W)`` for an ``(N, bands, H, W)`` batch.
Test-time augmentation runs the model on views of the batch (quarter turns and flips) and maps each
prediction back before averaging. torch is only ever handed in by :mod:`seamless_dask.model.runner`,
the one caller of the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..exceptions import ModelOutputError

# Views as (quarter turns, flip x, flip y): "flips" mirrors, "d4" all 8 symmetries of the square.
VIEWS = {
    None: ((0, False, False),),
    "flips": ((0, False, False), (0, True, False), (0, False, True), (0, True, True)),
    "d4": tuple((k, flip, False) for flip in (False, True) for k in range(4)),
}


class Heads(tuple):
    """Several outputs of one model blended in one pass: ``((key, activation), ...)``, a dict key or a
    tuple index each; their segmentation tensor is each head's activated channels, side by side.
    """

    def channels(self, out: Any) -> list[int]:
        """How many channels each head of the model's output ``out`` has."""
        return [int(segmentation_tensor(_head(out, key)).shape[1]) for key, _ in self]


def segmentation_tensor(out: Any, head: str | int | Heads | None = None) -> Any:
    """The segmentation tensor in whatever the model returned, or a ModelOutputError saying what it
    may return.

    ``head`` picks another output of a model with several: a dict key (torchvision's ``"aux"``) or a
    tuple index; :class:`Heads`, several of them, each activated, concatenated over channels.
    """
    import torch

    if isinstance(head, Heads):
        parts = [activate(segmentation_tensor(_head(out, k)).float(), a) for k, a in head]
        for (key, _), part in zip(head, parts, strict=True):
            if part.shape[0] != parts[0].shape[0] or part.shape[2:] != parts[0].shape[2:]:
                raise ModelOutputError(
                    f"head {key!r} has shape {tuple(part.shape)} and head {head[0][0]!r} "
                    f"{tuple(parts[0].shape)}: heads are blended at the input's resolution; "
                    "upsample the smaller one inside the model, or segment it alone with head="
                )
        return torch.cat(parts, 1)
    if head is not None:
        return segmentation_tensor(_head(out, head))
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, Mapping):
        if "out" not in out:
            raise ModelOutputError(
                f"the model returned a dict without an 'out' entry (keys {list(out)}): "
                "wrap it so that it returns the segmentation tensor, or a dict with 'out', or "
                "pass head=KEY"
            )
        return segmentation_tensor(out["out"])
    if isinstance(out, Sequence) and not isinstance(out, str) and len(out) > 0:
        return segmentation_tensor(out[0])
    raise ModelOutputError(
        f"the model returned a {type(out).__name__}; expected a tensor (N, classes, H, W), a dict "
        f"with 'out' "
        "or a tuple whose first item is the segmentation"
    )


def _head(out: Any, head: str | int) -> Any:
    """Output ``head`` of a model returning a dict or a tuple, or an error listing the heads there are."""
    if isinstance(out, Mapping):
        if head not in out:
            raise ModelOutputError(
                f"head={head!r} is not an output of the model: it returns {list(out)}"
            )
        return out[head]
    if isinstance(out, Sequence) and not isinstance(out, str) and isinstance(head, int):
        if not -len(out) <= head < len(out):
            raise ModelOutputError(
                f"head={head} is out of range: the model returns {len(out)} outputs"
            )
        return out[head]
    raise ModelOutputError(
        f"head={head!r} picks one output of a model that returns a dict (a key) or a tuple (an "
        f"index), but this "
        f"model returns a {type(out).__name__}: leave head=None"
    )


def check_output(out: Any, in_shape: tuple[int, ...]) -> None:
    """Raise unless ``out`` is ``(N, classes, H, W)`` (``(N, classes, D, H, W)`` for a volume's
    tiles) for an input batch of ``in_shape``.
    """
    n, spatial = in_shape[0], tuple(in_shape[2:])
    if out.ndim != len(in_shape) or out.shape[0] != n:
        expected = ", ".join(map(str, (n, "classes", *spatial)))
        axes = "(N, 1, H, W)" if len(spatial) == 2 else "(N, 1, D, H, W)"
        raise ModelOutputError(
            f"the model output has shape {tuple(out.shape)} for an input batch {in_shape}; "
            f"expected ({expected}): a model with one output map should keep its channel axis "
            f"{axes}"
        )
    if tuple(out.shape[2:]) != spatial:
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        raise ModelOutputError(
            f"the model output's spatial size {tuple(out.shape[2:])} differs from its input tile "
            f"{spatial}: "
            "blending needs a prediction per input pixel; upsample inside the model, e.g. "
            f"torch.nn.functional.interpolate(out, size=x.shape[2:], mode='{mode}')"
        )


def view(x: Any, turns: int, flip_x: bool, flip_y: bool) -> Any:
    """The batch ``x`` flipped, then turned by ``turns`` quarter turns, in the plane of its last two
    axes (a volume's tiles are turned in y and x).
    """
    y, xs = x.ndim - 2, x.ndim - 1
    dims = [d for d, flip in ((xs, flip_x), (y, flip_y)) if flip]
    x = x.flip(dims) if dims else x
    return x.rot90(turns, dims=(y, xs)) if turns else x


def unview(x: Any, turns: int, flip_x: bool, flip_y: bool) -> Any:
    """The inverse of :func:`view`: a prediction on the view mapped back onto the tile."""
    y, xs = x.ndim - 2, x.ndim - 1
    x = x.rot90(-turns, dims=(y, xs)) if turns else x
    dims = [d for d, flip in ((xs, flip_x), (y, flip_y)) if flip]
    return x.flip(dims) if dims else x


def activate(out: Any, activation: str | None) -> Any:
    """``out`` with ``activation`` (``"softmax"`` over classes, ``"sigmoid"``, or ``None``) applied."""
    if activation == "softmax":
        if out.shape[1] == 1:
            raise ModelOutputError(
                "activation='softmax' over a single output channel is always 1: "
                "use activation='sigmoid' for a binary model with one channel, or activation=None"
            )
        return out.softmax(dim=1)
    if activation == "sigmoid":
        return out.sigmoid()
    return out
