"""The bundled examples: a georeferenced scene and its context model (:mod:`.scene`), a synthetic
slide and its tissue model (:mod:`.slide`). Model specs: ``"seamless_dask.demo:context_model"``,
``"seamless_dask.demo:tissue_model"``.
"""

from .scene import (
    CLASSES,
    PALETTE,
    DemoResult,
    context_model,
    run_demo,
    synthetic_scene,
    write_scene_geotiff,
)
from .slide import (
    SLIDE_CLASSES,
    SLIDE_PALETTE,
    synthetic_slide,
    tissue_model,
    write_slide_ome_tiff,
    write_slide_svs,
)

__all__ = [
    "CLASSES",
    "PALETTE",
    "SLIDE_CLASSES",
    "SLIDE_PALETTE",
    "DemoResult",
    "context_model",
    "run_demo",
    "synthetic_scene",
    "synthetic_slide",
    "tissue_model",
    "write_scene_geotiff",
    "write_slide_ome_tiff",
    "write_slide_svs",
]
