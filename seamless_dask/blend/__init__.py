"""The numpy kernels of the overlap-add: what a tile is given (:mod:`.tiles`), weighted sums and
settling (:mod:`.accumulate`), sums to outputs (:mod:`.decide`), tiles a user computed
(:mod:`.stream`) and the torch tiler (:mod:`.torch_tiler`).

May import :mod:`seamless_dask.tiling` and :mod:`seamless_dask.model`; never the graph, the cluster
or io.
"""
