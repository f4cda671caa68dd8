"""Objects, not only pixels: instances from a class map, their table, their polygons (docs/objects.md)."""

from .instances import instances
from .shapes import object_table, polygons, to_vector

__all__ = ["instances", "object_table", "polygons", "to_vector"]
