"""The only place that calls a model: loading specs (:mod:`.loading`), the batched runner
(:mod:`.runner`), reading its outputs (:mod:`.outputs`) and measuring its receptive field
(:mod:`.receptive`).

May import :mod:`seamless_dask.tiling`; never the graph, the cluster or io.
"""
