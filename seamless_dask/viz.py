"""Palettes, colourised label maps and side-by-side quicklook PNGs (numpy and Pillow)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .exceptions import OptionError

# Distinct, colour-blind-friendly first colours (Okabe-Ito, then Tableau), then evenly spread hues.
_BASE = [
    (0, 114, 178), (0, 158, 115), (213, 94, 0), (240, 228, 66), (204, 121, 167), (86, 180, 233),
    (230, 159, 0), (90, 90, 90), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def default_palette(n_classes: int = 256) -> np.ndarray:
    """``(n_classes, 3)`` uint8 RGB colours, distinct for the first classes; up to 256 classes."""
    if not 1 <= n_classes <= 256:
        raise OptionError(f"default_palette covers 1 to 256 classes, got {n_classes}: pass your own palette")
    extra = [
        tuple(
            int(255 * c)
            for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3) / 2)
        )
        for i in range(max(0, n_classes - len(_BASE)))
    ]
    return np.array((_BASE + extra)[:n_classes], dtype=np.uint8)


def colorize(labels: np.ndarray, palette: Sequence | np.ndarray | None = None) -> np.ndarray:
    """``(H, W)`` class indices to ``(H, W, 3)`` uint8 RGB; classes beyond the palette raise."""
    labels = np.asarray(labels)
    colours = default_palette(int(labels.max()) + 1 if labels.size else 1) if palette is None else np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] not in (3, 4):
        raise OptionError(f"palette must be (classes, 3) or (classes, 4) RGB(A) values, got shape {colours.shape}")
    if labels.size and labels.max() >= len(colours):
        raise OptionError(
            f"label {int(labels.max())} has no colour: the palette has {len(colours)}; pass a longer palette"
        )
    return colours.astype(np.uint8)[labels]


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """``(bands, H, W)`` image to ``(H, W, 3)`` uint8 for display, each band stretched to its 2-98 %."""
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    low, high = np.nanpercentile(bands, 2, axis=(1, 2)), np.nanpercentile(bands, 98, axis=(1, 2))
    scaled = (bands - low[:, None, None]) / np.maximum(high - low, 1e-12)[:, None, None]
    return (np.clip(np.nan_to_num(scaled), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def save_panels(path: str | Path, panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 8) -> Path:
    """Write RGB panels ``(H, W, 3)`` side by side, each under its title, as a PNG."""
    from PIL import Image, ImageDraw

    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    header = 22
    canvas = Image.new("RGB", (width, height + header), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for panel, title in zip(panels, titles, strict=True):
        canvas.paste(Image.fromarray(panel[..., :3]), (x, header))
        draw.text((x + 4, 5), title, fill="black")
        x += panel.shape[1] + gap
    path = Path(path)
    canvas.save(path)
    return path
