"""Pictures: quicklooks and colour maps (:mod:`.quicklook`), tile borders drawn over an image
(:mod:`.borders`).

May import :mod:`seamless_dask.tiling`, :mod:`seamless_dask.classes` and :mod:`seamless_dask.io`.
"""
