"""Small deterministic models for tests (no torchvision, no downloads)."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn


@contextlib.contextmanager
def raises_mentioning(error: type[Exception], words):
    """``pytest.raises(error)`` whose message must contain each of ``words`` (rule, value, fix)."""
    with pytest.raises(error) as info:
        yield info
    for word in words:
        assert word in str(info.value), f"{word!r} not in {str(info.value)!r}"


def conv_net(bands: int = 3, classes: int = 4, seed: int = 0) -> nn.Module:
    """Two 3x3 convs with zero padding: its output near a tile edge depends on where the tile lies."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(bands, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, classes, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
    return net.eval()


def make_conv() -> nn.Module:
    """Factory for import-string specs: 'helpers:make_conv'."""
    return conv_net()


def failing_factory() -> nn.Module:
    raise RuntimeError("weights file is corrupt")


NOT_A_MODEL = 42


class Counting(nn.Module):
    """Wraps a model and records how many tiles reach it, per call (thread-safe)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []
        self.origins: list[tuple] = []
        self._lock = threading.Lock()

    @property
    def tiles(self) -> int:
        return sum(self.batches)

    def reset(self) -> None:
        self.batches.clear()
        self.origins.clear()

    def forward(self, x):
        with self._lock:
            self.batches.append(x.shape[0])
        return self.inner(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class DictOut(nn.Module):
    """torchvision-style: returns {'out': ..., 'aux': ...}."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return {"out": out, "aux": out * 0}


class TupleOut(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x), torch.zeros(1))


class Downsampling(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, 2)


def structured_image(bands: int = 3, height: int = 97, width: int = 131, seed: int = 0) -> np.ndarray:
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
    """Factory for 2-band, 3-class specs: 'helpers:make_conv2'."""
    return conv_net(bands=2, classes=3)


class Heavy(nn.Module):
    """A 1x1 conv (2 bands to 3 classes) carrying 4 MB of unused weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.register_buffer("ballast", torch.zeros(1_000_000))

    def forward(self, x):
        return self.conv(x)


class Brightness(nn.Module):
    """Any number of bands in, 2 classes out: dark vs bright by the 5 x 5 mean over bands (zero padded)."""

    def forward(self, x):
        mean = torch.nn.functional.avg_pool2d(x.float().mean(dim=1, keepdim=True), 5, stride=1, padding=2)
        return torch.cat([128 - mean, mean - 128], dim=1) / 16


def brightness() -> nn.Module:
    """Factory for CLI specs: 'helpers:brightness'."""
    return Brightness()


class Mean3(nn.Module):
    """One band in, one channel out: the 3 x 3 mean, zero padded (a model whose output mixes neighbours)."""

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


def raising_model() -> nn.Module:
    """Factory of a model that fails on every batch: 'helpers:raising_model'."""

    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("CUDA out of memory (simulated)")

    return Raises()


RAN_ON: collections.Counter = collections.Counter()  # tiles per dask worker name, for in-process clusters


class WhereRun(nn.Module):
    """Brightness, recording in ``RAN_ON`` how many tiles each dask worker ran ("client" outside workers)."""

    def __init__(self):
        super().__init__()
        self.inner = Brightness()

    def forward(self, x):
        from distributed import get_worker

        try:
            name = get_worker().name
        except ValueError:
            name = "client"
        RAN_ON[name] += x.shape[0]
        return self.inner(x)


class Logged(nn.Module):
    """Brightness that appends ``"tiles <pid> <n>"`` per batch to the file named by SEAMLESS_TILE_LOG and sleeps
    SEAMLESS_TILE_SLEEP seconds per tile: counts tiles across processes, and makes runs last long enough to
    be interrupted."""

    def __init__(self):
        super().__init__()
        self.inner = Brightness()
        self.log = os.environ.get("SEAMLESS_TILE_LOG")
        self.sleep = float(os.environ.get("SEAMLESS_TILE_SLEEP", "0"))

    def forward(self, x):
        if self.log:
            with open(self.log, "a") as f:
                f.write(f"tiles {os.getpid()} {x.shape[0]}\n")
        time.sleep(self.sleep * x.shape[0])
        return self.inner(x)


def logged_brightness() -> nn.Module:
    """Factory for 'helpers:logged_brightness'; logs ``"load <pid>"`` each time it is called."""
    log = os.environ.get("SEAMLESS_TILE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"load {os.getpid()}\n")
    return Logged()


def read_tile_log(path) -> tuple[dict, dict]:
    """``(loads per pid, tiles per pid)`` from a SEAMLESS_TILE_LOG file."""
    loads: collections.Counter = collections.Counter()
    tiles: collections.Counter = collections.Counter()
    if not os.path.exists(path):
        return loads, tiles
    with open(path) as f:
        for line in f:
            kind, pid, *n = line.split()
            if kind == "load":
                loads[int(pid)] += 1
            else:
                tiles[int(pid)] += int(n[0])
    return loads, tiles


def tiles_with_data(valid: np.ndarray, tile: int, overlap: int) -> int:
    """How many tiles of the grid over ``valid`` (a ``(H, W)`` mask) hold at least one valid pixel."""
    from seamless_dask import TileGrid

    grid = TileGrid(valid.shape, tile, overlap)
    return sum(bool(valid[w.y, w.x].any()) for w in grid.windows())


def tiles_needed_on_resume(plan, missing, valid=None) -> int:
    """Tiles a resumed write must run: those owned by the ``missing`` chunks ``[(j, k), ...]`` of ``plan``,
    and those of finished chunks that reach into them; never a tile with no valid pixel (``valid`` mask)."""
    y, x = [np.cumsum((0, *c)) for c in plan.chunks]
    regions = [(slice(y[j], y[j + 1]), slice(x[k], x[k + 1])) for j, k in missing]

    def needed(i, w) -> bool:
        if valid is not None and not valid[w.y, w.x].any():
            return False
        reaches = any(w.y.start < r.stop and r.start < w.y.stop and w.x.start < c.stop and c.start < w.x.stop
                      for r, c in regions)  # fmt: skip
        return plan.owner(i) in missing or reaches

    return sum(needed(i, w) for i, w in enumerate(plan.grid.windows()))


def exiting_factory() -> nn.Module:
    """Factory that ends the process instead of raising: 'helpers:exiting_factory'."""
    import sys

    sys.exit(3)


def exiting_model() -> nn.Module:
    """Factory of a model whose forward calls ``sys.exit(7)``: 'helpers:exiting_model'."""

    class Exits(nn.Module):
        def forward(self, x):
            import sys

            sys.exit(7)

    return Exits()


def nan_model() -> nn.Module:
    """Factory of a Brightness whose logits are NaN where the first band is above 200: 'helpers:nan_model'."""

    class NaNs(nn.Module):
        def forward(self, x):
            out = Brightness()(x)
            return torch.where(x[:, :1] > 200, torch.full_like(out, float("nan")), out)

    return NaNs()


class FiniteOnly(nn.Module):
    """Brightness that raises if it is ever given a non-finite value."""

    def forward(self, x):
        if not torch.isfinite(x).all():
            raise AssertionError("the model was given a non-finite input value")
        return Brightness()(x)


def python_process(*args: str, **popen):
    """``python ARGS`` in a new process, stdout and stderr together."""
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def other_model() -> nn.Module:
    """Brightness with the classes swapped: another model with the same output shape, 'helpers:other_model'."""

    class Swapped(nn.Module):
        def forward(self, x):
            return Brightness()(x).flip(1)

    return Swapped()
