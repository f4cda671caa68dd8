"""Class names and colours that travel with a result, so that viewers show classes rather than
numbers.

``segment(..., class_names=..., palette=...)`` puts them on the result as attributes, and every
writer carries them to its format: the COG's colour table and GDAL category names, the OME-Zarr
``image-label`` colours and properties, the zarr store's attributes (with CF's
``flag_values``/``flag_meanings``), the quicklook's legend. One place reads them back
(:func:`classes_of`), so the writers never disagree.
"""

from __future__ import annotations

import colorsys
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import OptionError
from .graph import record

NAMES_ATTR = "class_names"
# "#rrggbb" strings: JSON, netCDF and GeoTIFF tags all hold a list of strings
COLORS_ATTR = "class_colors"
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")


@dataclass(frozen=True)
class Classes:
    """The names (may be empty) and ``(n, 4)`` RGBA uint8 colours of a result's classes."""

    names: tuple[str, ...]
    colors: np.ndarray

    def attrs(self) -> dict[str, Any]:
        """The attributes a result carries: ours, and CF's flag_values/flag_meanings when there are
        names.
        """
        out: dict[str, Any] = {COLORS_ATTR: [_hex(c) for c in self.colors]}
        if self.names:
            out[NAMES_ATTR] = list(self.names)
            out["flag_values"] = list(range(len(self.names)))
            out["flag_meanings"] = " ".join(re.sub(r"\s+", "_", n) for n in self.names)
        return out

    def colormap(self, nodata: float | None) -> dict[int, tuple[int, int, int, int]]:
        """GDAL's colour table: one RGBA per class value; the nodata value transparent."""
        table = {i: tuple(int(v) for v in c) for i, c in enumerate(self.colors)}
        if nodata is not None and 0 <= nodata <= 255 and float(nodata).is_integer():
            table[int(nodata)] = (0, 0, 0, 0)
        return table  # type: ignore[return-value]


def as_classes(class_names: Sequence[str] | None, palette: Any = None) -> Classes | None:
    """``class_names`` and ``palette`` checked against each other (one colour per name).

    ``palette``: ``(n, 3)`` or ``(n, 4)`` values 0-255, or ``"#rrggbb"`` strings; default:
    seamless_dask's palette (:func:`default_palette`). ``None`` when
    neither is given.
    """
    if class_names is None and palette is None:
        return None
    names = _names(class_names)
    if palette is None:
        colors = default_palette(len(names))
    else:
        colors = _colors(palette)
        if names and len(colors) != len(names):
            raise OptionError(
                f"palette has {len(colors)} colours for {len(names)} class_names: give one colour "
                f"per class"
            )
    opaque = np.full((len(colors), 1), 255, np.uint8)
    rgba = np.concatenate([colors, opaque], axis=1) if colors.shape[1] == 3 else colors
    return Classes(names, rgba.astype(np.uint8))


def with_classes(result: Any, class_names: Sequence[str] | None = None, palette: Any = None) -> Any:
    """``result`` (a labels DataArray) with class names and colours, as ``segment(class_names=...)``
    gives them.

    Examples
    --------
    >>> import numpy as np, xarray as xr, seamless_dask as sd
    >>> labels = xr.DataArray(np.zeros((4, 4), "uint8"), dims=("y", "x"))
    >>> sd.with_classes(labels, ["background", "tumour"], ["#000000", "#ff0000"]).attrs["class_colors"]
    ['#000000', '#ff0000']
    """
    classes = as_classes(class_names, palette)
    if classes is None:
        raise OptionError("with_classes needs class_names, a palette, or both")
    return result.assign_attrs(classes.attrs())


def check_class_count(classes: Classes, n_classes: int) -> None:
    """Refuse names or colours that are not one per class of the model (a one-channel model has 2: 0
    and 1).
    """
    count = len(classes.names) or len(classes.colors)
    if count != n_classes and not (n_classes == 1 and count == 2):
        what = (
            f"class_names has {len(classes.names)} names"
            if classes.names
            else f"palette has {count} colours"
        )
        raise OptionError(
            f"{what} but the model gives {n_classes} classes: give one per class, in class order"
        )


def classes_of(attrs: dict, default: bool = False) -> Classes | None:
    """The :class:`Classes` a result's (or a store's) attributes hold, or ``None``.

    With ``default``, a ``segment`` result without names gets the default palette for as many
    classes as its job record counts (two for a one-channel model).
    """
    names, colors = attrs.get(NAMES_ATTR), attrs.get(COLORS_ATTR)
    if names is None and colors is None:
        if not default or not isinstance(attrs.get(record.ATTR), str):
            return None
        count = json.loads(attrs[record.ATTR]).get("options", {}).get("classes")
        return as_classes(None, default_palette(max(int(count), 2))) if count else None
    if isinstance(names, str):  # a GeoTIFF tag or an old netCDF attribute: one string
        names = [n for n in re.split(r"[,;]\s*", names) if n]
    if isinstance(colors, str):
        colors = colors.split(",")
    return as_classes(
        None if names is None else list(names), None if colors is None else list(colors)
    )


def _names(class_names: Sequence[str] | None) -> tuple[str, ...]:
    if class_names is None:
        return ()
    if isinstance(class_names, str):
        raise OptionError(
            f"class_names must be a list of names, one per class, got the string {class_names!r}"
        )
    names = tuple(class_names)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad or not names:
        raise OptionError(
            f"class_names must be non-empty strings, one per class, got {list(names)!r}"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise OptionError(f"class_names must be distinct: {twice} appear more than once")
    if len(names) > 255:
        raise OptionError(
            f"class_names names {len(names)} classes; labels hold at most 255 (255 is nodata)"
        )
    return names


def _colors(palette: Any) -> np.ndarray:
    items = list(palette)
    if items and all(isinstance(c, str) for c in items):
        parsed = [_HEX.match(c.strip()) for c in items]
        wrong = [c for c, m in zip(items, parsed, strict=True) if m is None]
        if wrong:
            raise OptionError(f"palette colours must be '#rrggbb' or '#rrggbbaa', got {wrong}")
        rgba = [list(bytes.fromhex(m.group(1) + (m.group(2) or "ff"))) for m in parsed if m]
        return np.array(rgba, dtype=np.uint8)
    array = np.asarray(items)
    if array.ndim != 2 or array.shape[1] not in (3, 4) or not len(array):
        raise OptionError(
            f"palette must be (classes, 3) or (classes, 4) RGB(A) values, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number) or array.min() < 0 or array.max() > 255:
        raise OptionError(
            "palette values must be numbers from 0 to 255 (e.g. [[0, 114, 178], ...])"
        )
    return array.astype(np.uint8)


def _hex(color: np.ndarray) -> str:
    text = "#" + "".join(f"{int(v):02x}" for v in color[:3])
    return text if len(color) < 4 or color[3] == 255 else text + f"{int(color[3]):02x}"


_BASE = [
    (0, 114, 178), (0, 158, 115), (213, 94, 0), (240, 228, 66), (204, 121, 167), (86, 180, 233),
    (230, 159, 0), (90, 90, 90), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207),
]  # fmt: skip


def default_palette(n_classes: int = 256) -> np.ndarray:
    """``(n_classes, 3)`` uint8 RGB colours, distinct for the first classes; up to 256 classes."""
    if not 1 <= n_classes <= 256:
        raise OptionError(
            f"default_palette covers 1 to 256 classes, got {n_classes}: pass your own palette"
        )
    extra = [
        tuple(
            int(255 * c)
            for c in colorsys.hsv_to_rgb(
                (i * 0.618034) % 1, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3) / 2
            )
        )
        for i in range(max(0, n_classes - len(_BASE)))
    ]
    return np.array((_BASE + extra)[:n_classes], dtype=np.uint8)
