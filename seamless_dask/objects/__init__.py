"""Objects, not only pixels: instances from a class map, their table, their polygons (docs/objects.md)."""

from .instances import instances
from .shapes import polygons
from .stitch import segment_instances
from .table import object_table
from .vector import to_vector

__all__ = ["instances", "object_table", "polygons", "segment_instances", "to_vector"]
