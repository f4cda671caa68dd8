"""1-D trust profiles of the trust map's kinds (:mod:`seamless_dask.tiling.weights`): pure numpy."""

from __future__ import annotations

import numpy as np

Edges = tuple[bool, bool]


def profile(kind: str, n: int, sigma: float = 0.125, overlap: int = 0) -> np.ndarray:
    """1-D trust profile of ``n`` pixels (float64, peak 1; every value > 0 but in the margins of
    ``"trim"`` and at the ends of ``"hann"``).
    """
    p = raw_profile(kind, n, sigma, overlap)
    peak = p.max()
    return p / peak if peak > 0 else p


def raw_profile(kind: str, n: int, sigma: float, overlap: int) -> np.ndarray:
    """The profile in its own units: MONAI's gaussian (1 at the centre pixel of an odd tile, a
    little less between the two of an even one), tiler's Hann window.
    """
    i = np.arange(n, dtype=np.float64)
    if kind == "trim":
        p = np.ones(n)
        # central parts of consecutive tiles then abut
        start, end = (
            overlap // 2,
            overlap - overlap // 2,
        )
        p[:start] = 0
        p[n - end :] = 0
        return p
    if kind == "trust":
        p = 1 - np.abs(i - (n - 1) / 2) / ((n + 1) / 2)
    elif kind == "spline":
        p = spline(n)
    elif kind == "gaussian":
        p = np.exp(-0.5 * ((i - (n - 1) / 2) / (sigma * n)) ** 2)
    elif kind == "hann" and n > 1:  # tiler's (scipy's symmetric hann)
        p = 0.5 + 0.5 * np.cos(np.linspace(-np.pi, np.pi, n))
    else:
        p = np.ones(n)
    return p


def flatten_borders(p: np.ndarray, edges: Edges) -> np.ndarray:
    """``p`` held at its peak from the centre out on the sides that lie on the image border."""
    if edges[0] and edges[1]:  # the tile is the whole axis: any constant trust
        return np.ones_like(p)
    peak = int(np.argmax(p))
    last_peak = len(p) - 1 - int(np.argmax(p[::-1]))  # plateaus ("trim") peak over a range
    p = p.copy()
    if edges[0]:
        p[: peak + 1] = p[peak]
    if edges[1]:
        p[last_peak:] = p[peak]
    return p


def triangle(n: int) -> np.ndarray:
    """scipy.signal.windows.triang, without scipy."""
    k = np.arange(1, (n + 1) // 2 + 1, dtype=np.float64)
    if n % 2 == 0:
        half = (2 * k - 1) / n
        return np.concatenate([half, half[::-1]])
    half = 2 * k / (n + 1)
    return np.concatenate([half, half[-2::-1]])


def spline(n: int) -> np.ndarray:
    """Second-order spline window (Chevalier's smooth-tiled-predictions, power 2)."""
    tri = triangle(n)
    quarter = n // 4
    inner = (np.arange(n) >= quarter) & (np.arange(n) < n - quarter)
    outer = np.where(inner, 0.0, np.abs(2 * tri) ** 2 / 2)
    middle = np.where(inner, 1 - np.abs(2 * (tri - 1)) ** 2 / 2, 0.0)
    return np.maximum(outer + middle, np.finfo(np.float32).tiny)
