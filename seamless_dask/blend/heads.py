"""Several heads of one model, blended in one pass: which heads, and their channels split again into
one result a head (labels decided from each head's blended probabilities).

``segment(..., head={"out": "labels", "aux": "probabilities"})`` runs the model once a tile with
:class:`~seamless_dask.model.outputs.Heads` (each head activated, the channels side by side),
blends them as logits, and :func:`split_heads` makes one result a head.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..exceptions import OptionError
from . import decide

HEAD_OUTPUTS = ("labels", "probabilities", "logits")


def head_kinds(heads: Any, output: str) -> dict[str | int, str]:
    """``head=`` naming several heads, as ``{key: output kind}``: a sequence of keys (each of
    ``output``'s kind) or a dict of them; an OptionError names the forms it takes.
    """
    if isinstance(heads, dict):
        kinds = dict(heads)
    elif isinstance(heads, (list, tuple)) and all(isinstance(k, (str, int)) for k in heads):
        kinds = dict.fromkeys(heads, output)
    else:
        raise OptionError(
            f"head must be one key (a dict key or a tuple index), a list of them, or a dict of key "
            f"to output kind, got head={heads!r}: e.g. head={{'out': 'labels', 'aux': "
            "'probabilities'}"
        )
    bad = {k: v for k, v in kinds.items() if v not in HEAD_OUTPUTS}
    if len(kinds) < 2 or bad or len({head_name(k) for k in kinds}) != len(kinds):
        raise OptionError(
            f"several heads take two or more distinct keys, each with an output among "
            f"{HEAD_OUTPUTS}, got head={heads!r}: give one key as head='aux' for one head"
        )
    return kinds


def head_name(key: str | int) -> str:
    """The result's name for head ``key``: the dict key, or ``head_<i>`` for a tuple index."""
    return key if isinstance(key, str) else f"head_{key}"


def split_heads(stacked: Any, kinds: dict, sizes: list[int], binary: list[bool]) -> Any:
    """The blended channels of several heads (``segment(..., output="logits")`` of
    :class:`~seamless_dask.model.outputs.Heads`, each head activated), one result a head, by
    :func:`head_name` (DataArrays for a DataArray, arrays of the input's kind otherwise). Labels are
    each head's argmax (or 0.5 for one sigmoid channel), nodata where no tile had data.
    """
    parts: dict[str, Any] = {}
    start = 0
    for (key, kind), n, one in zip(kinds.items(), sizes, binary, strict=True):
        if isinstance(stacked, xr.DataArray):
            part = stacked.isel({"class": slice(start, start + n)})
            part = part.assign_coords({"class": np.arange(n)})
        else:
            part = stacked[..., start : start + n, :, :]
        parts[head_name(key)] = _labels_of(part, one) if kind == "labels" else part
        start += n
    return parts


def _labels_of(part: Any, binary: bool) -> Any:
    if isinstance(part, xr.DataArray):
        labels = xr.DataArray(
            _labels_of(part.data, binary),
            dims=[d for d in part.dims if d != "class"],
            coords={k: v for k, v in part.coords.items() if "class" not in v.dims},
        )
        return labels.rio.write_nodata(_label_fill(part.sizes["class"], binary))
    if isinstance(part, da.Array):
        n = part.shape[-3]
        dtype = np.uint8 if binary else decide.label_dtype(n + 1)
        return da.map_blocks(
            _argmax_block, part, binary, dtype=dtype, drop_axis=part.ndim - 3,
            meta=np.array((), dtype),
        )  # fmt: skip
    if hasattr(part, "detach"):  # a tensor, on its device
        import torch

        return torch.from_numpy(_argmax_block(part.detach().cpu().numpy(), binary)).to(part.device)
    return _argmax_block(np.asarray(part), binary)


def _label_fill(n: int, binary: bool) -> int:
    dtype = np.uint8 if binary else decide.label_dtype(n + 1)
    return int(np.iinfo(dtype).max)


def _argmax_block(block: np.ndarray, binary: bool) -> np.ndarray:
    """``(..., classes, h, w)`` blended probabilities (NaN: no data) as labels, nodata where NaN."""
    n = block.shape[-3]
    empty = np.isnan(block).all(axis=-3)
    scores = np.nan_to_num(block, nan=-np.inf)
    if binary:
        labels = (scores[..., 0, :, :] >= 0.5).astype(np.uint8)
    else:
        labels = decide.argmax_classes(np.moveaxis(scores, -3, 0), n + 1)
    labels[empty] = _label_fill(n, binary)
    return labels
