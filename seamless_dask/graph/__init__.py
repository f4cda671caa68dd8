"""The dask graph of a segmentation: building it (:mod:`.build`), what each chunk reads
(:mod:`.windows`), chunk sizes (:mod:`.chunk_size`), key names (:mod:`.keys`), the lazy layers on
both array engines (:mod:`.layers`) and the job record (:mod:`.record`).

May import :mod:`seamless_dask.tiling`, :mod:`seamless_dask.blend` and :mod:`seamless_dask.model`;
never the cluster, io or the CLI. Writers ask it for a resumed plan through
:func:`.build.resumed_array` only.
"""
