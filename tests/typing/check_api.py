"""Checked by mypy in `make test`, never run: the public API's overloads give each input its own result type."""

from typing import Literal, assert_type

import dask.array as da
import numpy as np
import torch
import xarray as xr
from dask.delayed import Delayed

import seamless_dask as sd
from seamless_dask.options import Output


def check(image: np.ndarray, lazy: da.Array, model: torch.nn.Module, output: Output) -> None:
    assert_type(sd.segment(image, model, tile_size=256), np.ndarray)
    assert_type(sd.segment(xr.DataArray(image), model, output=output), xr.DataArray)
    assert_type(sd.segment(xr.Dataset(), model, bands=["red"]), xr.DataArray)
    assert_type(sd.segment(lazy, model), da.Array)
    assert_type(sd.segment(torch.from_numpy(image), model, tta="d4"), torch.Tensor)
    labels = sd.segment(xr.DataArray(image), model)
    assert_type(sd.to_zarr(labels, "labels.zarr"), int)
    assert_type(sd.to_zarr(labels, "labels.zarr", compute=False), Delayed)
    assert_type(sd.to_cog(labels, "labels.tif"), str)
    assert_type(sd.to_cog(labels, "labels.tif", compute=False), Delayed)
    now: Literal[False] = False
    assert_type(sd.to_cog(labels, "labels.tif", compute=now), Delayed)


def check_models_are_modules_or_callables_of_tensors(image: np.ndarray) -> None:
    sd.segment(image, lambda x: x)  # a callable of a batch of tiles
    sd.segment(image, "pkg.models:build")  # an import string, or a file's path
    sd.segment(image, 42)  # type: ignore[call-overload]  # not a model: mypy says so
