"""How the command line spells option values: the argparse types of the flags whose values are not
plain strings, and the choices as a command line offers them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..options import ACTIVATIONS, OUTPUTS


def seconds(text: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"seconds must be 0 or more, got {text}")
    return value


def names(text: str) -> list[str]:
    """Comma-separated names, none empty."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names like background,tumour, got {text!r}"
        )
    return names


def int_list(text: str) -> list[int]:
    """Comma-separated integers (band numbers)."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated band numbers like 3,2,1, got {text!r}"
        ) from None


def normalize(text: str) -> tuple[Any, ...] | str:
    """``imagenet``, ``percentile[:LOW,HIGH]`` or ``MEAN/STD`` (each comma-separated per band)."""
    if text in ("imagenet", "percentile"):
        return text
    try:
        if text.startswith("percentile:"):
            low, high = (float(v) for v in text.removeprefix("percentile:").split(","))
            return ("percentile", low, high)
        mean, std = text.split("/")
        return [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MEAN/STD like 123.7,116.3,103.5/58.4,57.1,57.4, or percentile:LOW,HIGH "
            f"like percentile:1,99.8, got {text!r}"
        ) from None


def nodata(text: str) -> float | str | None:
    """``auto``, ``none`` or a number."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number, got {text!r}") from None


def resolution(text: str) -> float | tuple[float, float]:
    """``R`` or ``RY,RX``: a pixel size."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"expected a pixel size like 0.5 or 10,10 (y,x), got {text!r}"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


def sizes(text: str) -> int | tuple[int, ...]:
    """``256``, ``256,128`` (y,x), or ``16,64,64`` (z,y,x: a volume) in pixels."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2, 3):
        raise argparse.ArgumentTypeError(
            f"expected pixels like 256, 256,128 (y,x) or 16,64,64 (z,y,x: a volume), got {text!r}"
        )
    return values[0] if len(values) == 1 else tuple(values)


def overlap(text: str) -> int | float | tuple[int, int] | tuple[float, float]:
    """``64``, ``64,32`` (y,x) in pixels, or ``0.25`` (``0.25,0.5``): fractions of the tile."""
    parts = text.split(",")
    try:
        values = [float(v) if "." in v else int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"expected pixels like 64 or 64,32 (y,x), or a fraction of the tile like 0.25, got "
            f"{text!r}"
        )
    return values[0] if len(values) == 1 else (values[0], values[1])


# How the command line writes the options whose values are not plain strings.
CLI_TYPES: dict[str, Any] = {
    "tile_size": sizes,
    "overlap": overlap,
    "batch_size": int,
    "cval": float,
    "num_classes": int,
    "chunks": int,
    "normalize": normalize,
    "nodata": nodata,
    "bands": int_list,
    "class_names": names,
    "palette": names,
    "resolution": resolution,
}
# Choices as a command line spells them: no logits to a file, and "none" for no activation.
CLI_CHOICES: dict[str, list[str]] = {
    "output": [o for o in OUTPUTS if o != "logits"],
    "activation": [*(a for a in ACTIVATIONS if a), "none"],
}
