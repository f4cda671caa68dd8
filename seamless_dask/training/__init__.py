"""Training on tiles of huge images, streamed: :class:`.dataset.TileDataset` and
:class:`.sampling.RandomTiles`.

May import :mod:`seamless_dask.tiling`, :mod:`seamless_dask.blend` (what a tile is given),
:mod:`seamless_dask.model` and :mod:`seamless_dask.io`.
"""
