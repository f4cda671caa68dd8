"""A COG's class names: GDAL keeps a band's category names in a PAM sidecar, ``<file>.aux.xml``.

GeoTIFF has a tag for the colour table (written inside the COG) but none for category names; GDAL,
and so QGIS, reads them from the PAM file beside the raster. The sidecar seamless_dask writes says
so in its own metadata domain: only such a sidecar is ever replaced or removed. A sidecar someone
else left (QGIS writes statistics there) would describe the pixels being replaced, so a COG beside
one is not overwritten.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from ..exceptions import RasterError
from ._target import SCRATCH_INFIX, Target, as_target, remove_file

SIDECAR_SUFFIX = ".aux.xml"
DOMAIN = "seamless_dask"


def sidecar_of(target: Target) -> Target:
    """Where GDAL looks for ``target``'s PAM sidecar."""
    return target.sibling(SIDECAR_SUFFIX)


def pam_xml(names: Sequence[str]) -> str:
    """The PAM document naming band 1's categories (``names[i]`` is class ``i``), marked as ours."""
    root = ET.Element("PAMDataset")
    metadata = ET.SubElement(root, "Metadata", domain=DOMAIN)
    ET.SubElement(metadata, "MDI", key="written_by").text = "seamless_dask"
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(categories, "Category").text = name
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _read(where: Target) -> str | None:
    try:
        if where.local:
            with open(where.url, encoding="utf-8") as f:
                return f.read()
        return where.fs.cat_file(where.path).decode("utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def is_ours(text: str) -> bool:
    """Whether a PAM document is one :func:`pam_xml` wrote."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return False
    return any(m.get("domain") == DOMAIN for m in root.findall("Metadata"))


def check_sidecar(target: Target) -> None:
    """Refuse to write ``target`` beside a sidecar that seamless_dask did not write (it would go
    stale).
    """
    where = sidecar_of(target)
    if not where.exists():
        return
    text = _read(where)
    if text is None or not is_ours(text):
        raise RasterError(
            f"{where.url!r} exists and was not written by seamless_dask: GDAL and QGIS would read "
            f"it as describing "
            f"the new {target.url!r} (its statistics, categories), so nothing is written; remove "
            f"it yourself"
        )


def place_sidecar(target: Target, names: Sequence[str]) -> None:
    """Write the sidecar naming ``names``, or remove ours when there are none (after
    :func:`check_sidecar`).
    """
    where = sidecar_of(target)
    if not names:
        if where.exists():
            text = _read(where)
            if text is not None and is_ours(text):
                remove_file(where)
        return
    data = pam_xml(names)
    if where.local:
        partial = target.sibling(
            SCRATCH_INFIX + "aux.xml.partial"
        ).url  # removed by the next claim if left
        with open(partial, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(partial, where.url)
    else:
        where.fs.pipe_file(where.path, data.encode("utf-8"))


def category_names(path: str | os.PathLike) -> list[str]:
    """The category names of band 1 that GDAL reads from the sidecar of ``path`` (empty if none)."""
    text = _read(sidecar_of(as_target(path)))
    if text is None:
        return []
    try:
        band = ET.fromstring(text).find("PAMRasterBand[@band='1']")
    except ET.ParseError:
        return []
    found = band.find("CategoryNames") if band is not None else None
    return [c.text or "" for c in found.findall("Category")] if found is not None else []
