"""Test helpers, shipped with the package as xbatcher's and odc-geo's are: small deterministic
models (no torchvision, no downloads), images, and process helpers.

Each factory here is a model spec too, so a worker process or a CLI run loads it by name:
``seamless-dask segment in.tif out.tif --model seamless_dask.testing:make_conv``.
pytest is imported only by :func:`raises_mentioning`, the one helper that needs it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    pass


@contextlib.contextmanager
def raises_mentioning(error: type[Exception], words: Iterable[str]) -> Iterator[Any]:
    """``pytest.raises(error)`` whose message must contain each of ``words`` (rule, value, fix)."""
    import pytest

    with pytest.raises(error) as info:
        yield info
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def conv_net(bands: int = 3, classes: int = 4, seed: int = 0) -> nn.Module:
    """Two 3x3 convs with zero padding: its output near a tile edge depends on where the tile lies."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(bands, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, classes, 3, padding=1)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
    return net.eval()


def make_conv() -> nn.Module:
    """Factory for import-string specs: 'seamless_dask.testing:make_conv'."""
    return conv_net()


def failing_factory() -> nn.Module:
    """Factory that raises as a corrupt weights file would: 'seamless_dask.testing:failing_factory'."""
    raise RuntimeError("weights file is corrupt")


NOT_A_MODEL = 42


class _Tally(list):
    """A list that copies of its model share: ``copy.deepcopy`` of the model counts into it too."""

    def __deepcopy__(self, memo: dict) -> _Tally:
        return self


class Counting(nn.Module):
    """Wraps a model and records how many tiles reach it, per call (thread-safe).

    The tally is shared with the model's copies (segment runs a copy where the module is not on the
    run's device in eval mode); calls that take a gradient of the input (the receptive-field
    check's probe) are not tiles and are not counted.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = _Tally()

    @property
    def tiles(self) -> int:
        """Tiles the wrapped model has seen since the last :meth:`reset`."""
        return sum(self.batches)

    def reset(self) -> None:
        """Forget the tiles seen so far."""
        self.batches.clear()

    def forward(self, x: torch.Tensor) -> Any:
        """The wrapped model's output, counting the tiles."""
        if not x.requires_grad:  # list.append is atomic: safe from dask's threads
            self.batches.append(x.shape[0])
        return self.inner(x)


class Identity(nn.Module):
    """Returns its input: a model whose blended output must reproduce the image (I5)."""

    def forward(self, x: torch.Tensor) -> Any:
        """The input, unchanged."""
        return x


class DictOut(nn.Module):
    """torchvision-style: returns {'out': ..., 'aux': ...}."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        """The convolution's output as a torchvision model gives it."""
        out = self.inner(x)
        return {"out": out, "aux": out * 0}


class TupleOut(nn.Module):
    """A conv net whose output is a tuple, segmentation first (as many repositories' models return)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> Any:
        """``(segmentation, auxiliary)``."""
        return (self.inner(x), torch.zeros(1))


class Downsampling(nn.Module):
    """A model whose output is half the input's size: segment must refuse it."""

    def forward(self, x: torch.Tensor) -> Any:
        """The output, at half the resolution."""
        return nn.functional.avg_pool2d(x, 2)


def structured_image(
    bands: int = 3, height: int = 97, width: int = 131, seed: int = 0
) -> np.ndarray:
    """Smooth blobs plus a little noise, float32 in [0, 1]: structure, not only noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((bands, height, width), np.float32)
    for b in range(bands):
        for _ in range(4):
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 30)
            image[b] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    return image


def make_conv2() -> nn.Module:
    """Factory for 2-band, 3-class specs: 'seamless_dask.testing:make_conv2'."""
    return conv_net(bands=2, classes=3)


class Heavy(nn.Module):
    """A 1x1 conv (2 bands to 3 classes) carrying 4 MB of unused weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.register_buffer("ballast", torch.zeros(1_000_000))

    def forward(self, x: torch.Tensor) -> Any:
        """The 1x1 convolution's output."""
        return self.conv(x)


class Brightness(nn.Module):
    """Any number of bands in, 2 classes out: dark vs bright by the 5 x 5 mean over bands (zero
    padded).
    """

    def forward(self, x: torch.Tensor) -> Any:
        """Two logits: dark and bright."""
        mean = torch.nn.functional.avg_pool2d(
            x.float().mean(dim=1, keepdim=True), 5, stride=1, padding=2
        )
        return torch.cat([128 - mean, mean - 128], dim=1) / 16


def brightness() -> nn.Module:
    """Factory for CLI specs: 'seamless_dask.testing:brightness'."""
    return Brightness()


class Mean3(nn.Module):
    """One band in, one channel out: the 3 x 3 mean, zero padded (a model whose output mixes
    neighbours).
    """

    def forward(self, x: torch.Tensor) -> Any:
        """The 3 x 3 mean of each band."""
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


def raising_model() -> nn.Module:
    """Factory of a model that fails on every batch: 'seamless_dask.testing:raising_model'."""

    class Raises(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            raise RuntimeError("CUDA out of memory (simulated)")

    return Raises()


# tiles per dask worker name, for in-process clusters
RAN_ON: collections.Counter = collections.Counter()


class WhereRun(nn.Module):
    """Brightness (or ``inner``, a volume's network), recording in ``RAN_ON`` how many tiles each
    dask worker ran ("client" outside workers).
    """

    def __init__(self, inner: nn.Module | None = None) -> None:
        super().__init__()
        self.inner = Brightness() if inner is None else inner

    def forward(self, x: torch.Tensor) -> Any:
        """The inner model's output, counting the tiles per worker."""
        from distributed import get_worker

        try:
            name = get_worker().name
        except ValueError:
            name = "client"
        RAN_ON[name] += x.shape[0]
        return self.inner(x)


class Logged(nn.Module):
    """Brightness that appends ``"tiles <pid> <n>"`` per batch to the file named by
    SEAMLESS_TILE_LOG and sleeps SEAMLESS_TILE_SLEEP seconds per tile: counts tiles across
    processes, and makes runs last long enough to be interrupted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inner = Brightness()
        self.log = os.environ.get("SEAMLESS_TILE_LOG")
        self.sleep = float(os.environ.get("SEAMLESS_TILE_SLEEP", "0"))

    def forward(self, x: torch.Tensor) -> Any:
        """Brightness, logging the tiles to ``SEAMLESS_TILE_LOG``."""
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"tiles {os.getpid()} {x.shape[0]}\n")
        time.sleep(self.sleep * x.shape[0])
        return self.inner(x)


def logged_brightness() -> nn.Module:
    """Factory for 'seamless_dask.testing:logged_brightness'; logs ``"load <pid>"`` each time it is
    called.
    """
    log = os.environ.get("SEAMLESS_TILE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"load {os.getpid()}\n")
    return Logged()


def exiting_factory() -> nn.Module:
    """Factory that ends the process instead of raising: 'seamless_dask.testing:exiting_factory'."""
    import sys

    sys.exit(3)


def exiting_model() -> nn.Module:
    """Factory of a model whose forward calls ``sys.exit(7)``: 'seamless_dask.testing:exiting_model'."""

    class Exits(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            import sys

            sys.exit(7)

    return Exits()


def nan_model() -> nn.Module:
    """Brightness whose logits are NaN where the first band is above 200:
    'seamless_dask.testing:nan_model'.
    """

    class NaNs(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            out = Brightness()(x)
            return torch.where(x[:, :1] > 200, torch.full_like(out, float("nan")), out)

    return NaNs()


class FiniteOnly(nn.Module):
    """Brightness that raises if it is ever given a non-finite value."""

    def forward(self, x: torch.Tensor) -> Any:
        """Brightness, checking every input value is finite."""
        if not torch.isfinite(x).all():
            raise AssertionError("the model was given a non-finite input value")
        return Brightness()(x)


def other_model() -> nn.Module:
    """Brightness with the classes swapped (same output shape): 'seamless_dask.testing:other_model'."""

    class Swapped(nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return Brightness()(x).flip(1)

    return Swapped()


def swap_classes(predictions: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
    """A ``process_fn`` for tests and the CLI: the classes in reverse order."""
    return predictions.flip(1)


def conv3d_net() -> nn.Module:
    """A small 3-D network for volume specs: 'seamless_dask.testing:conv3d_net' (1 band, 3 classes)."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, 3, 3, padding=1))
    return net.eval()
