"""The job record: everything that decides a result's pixels, so that a resumed write is provably
the same job.

``segment`` attaches the record to its result (``attrs["seamless_job"]``, a JSON string);
``to_zarr`` stores it in the store it creates and, on ``resume=True``, refuses a result whose record
differs, listing what differs. The record holds:

- ``input``: where the pixels come from (the file's resolved path or URL, its size and modification
  time) and what they are (shape, dtype, band coordinates, CRS, transform), or, for arrays in
  memory, a hash of a sample of their pixels (a dask array: its graph's name, which dask derives
  from its source);
- ``model``: the spec (import string or file path), with a hash of the file for model files and of
  the weights (``state_dict``) for torch modules;
- ``options``: every option of ``segment`` that changes pixels (tile size, overlap, output, weights,
  normalize, activation, tta, amp, nodata, classes). Batch size, device and chunking do not: the
  chunks are checked by the store's layout instead;
- ``seamless_dask``: the package version.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

ATTR = "seamless_job"


def package_version() -> str:
    """The installed version of seamless_dask: the one source of ``__version__`` and of job records."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seamless_dask")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without an install
        return "unknown"


def job_record(
    data: Any, model: Any, options: dict[str, Any], loaded: Any = None
) -> dict[str, Any]:
    """The record of segmenting ``data`` (a DataArray) with ``model`` (as the user gave it;
    ``loaded``: what an import string loaded) and ``options``.
    """
    return {
        "seamless_dask": package_version(),
        "input": input_identity(data),
        "model": model_identity(model, loaded),
        "options": {key: _plain(value) for key, value in sorted(options.items())},
    }


def function_name(fn: Any) -> str:
    """``"pkg.module:qualname"`` of a function (an import string as it is), as records name hooks."""
    if isinstance(fn, str):
        return fn
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def dumps(record: dict[str, Any]) -> str:
    """``record`` as canonical JSON (sorted keys), as stores hold it."""
    return json.dumps(record, sort_keys=True)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``["input.path: '/a.tif' -> '/b.tif'", ...]``: every leaf of the two records that differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), prefix + key
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, name + "."))
        elif a != b:
            out.append(f"{name}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def input_identity(data: Any) -> dict[str, Any]:
    """Where a DataArray's pixels come from and what they are (see the module docstring)."""
    import rioxarray  # noqa: F401  (registers .rio)

    identity: dict[str, Any] = {
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "bands": _plain(data["band"].values) if "band" in data.coords else None,
        "crs": None if data.rio.crs is None else data.rio.crs.to_string(),
        "transform": None,
    }
    if min(data.sizes.get("y", 0), data.sizes.get("x", 0)) > 1:
        identity["transform"] = list(data.rio.transform())[:6]
    source = data.encoding.get("source")
    if source:
        identity.update(file_identity(str(source)))
    elif data.chunks is not None:
        identity["dask"] = data.data.name
    else:
        identity["sample"] = pixel_sample_hash(np.asarray(data.values))
    return identity


def file_identity(where: str) -> dict[str, Any]:
    """A file's resolved path, size and modification time (a URL as it is)."""
    if "://" in where or where.startswith("/vsi") or not os.path.exists(where):
        return {"path": where}
    real = os.path.realpath(where)
    stat = os.stat(real)
    if os.path.isdir(real):  # a zarr store: its metadata file stands for it
        metadata = [os.path.join(real, n) for n in ("zarr.json", ".zmetadata", ".zgroup")]
        stat = os.stat(next((m for m in metadata if os.path.exists(m)), real))
    return {"path": real, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def pixel_sample_hash(pixels: np.ndarray, samples: int = 65536) -> str:
    """A hash of about ``samples`` pixels spread over the array, its shape and dtype (cheap for any
    size).
    """
    flat = pixels.reshape(-1)
    step = max(1, flat.size // samples)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{pixels.shape}{pixels.dtype.str}".encode())
    digest.update(np.ascontiguousarray(flat[::step]).tobytes())
    return digest.hexdigest()


def model_identity(model: Any, loaded: Any = None) -> dict[str, Any]:
    """The model's spec, with a hash of its file or of its weights where there is one (``loaded``:
    the model an import string gave, whose weights the string alone does not pin down).
    """
    from ..model.loading import RegisteredModel

    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        identity: dict[str, Any] = {"spec": model}
        if os.path.isfile(model):
            identity["file_sha256"] = _file_hash(model)
        elif loaded is not None and weights_hash(loaded) is not None:
            identity["weights"] = weights_hash(loaded)
        return identity
    if isinstance(model, RegisteredModel):
        return {"spec": model.token}
    identity = {"spec": f"{type(model).__module__}.{type(model).__qualname__}"}
    weights = weights_hash(model)
    if weights is not None:
        identity["weights"] = weights
    return identity


def weights_hash(model: Any) -> str | None:
    """A hash of a torch module's ``state_dict`` (names, dtypes, shapes, bytes); ``None`` for other
    callables and for modules without parameters or buffers.
    """
    state = getattr(model, "state_dict", None)
    tensors = state() if callable(state) else {}
    if not tensors:
        return None
    import torch

    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(tensors.items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """``value`` as JSON: tuples as lists, numpy scalars and arrays as Python values, NaN as the
    string.
    """
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and np.isnan(value):
        return "nan"
    return value
