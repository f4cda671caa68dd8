"""dask.distributed: worker set-up and scheduler plugins (:mod:`.workers`), a write submitted in
waves of chunk rows (:mod:`.waves`, planned by :mod:`.wave_plan`), progress in tiles
(:mod:`.progress`), connecting (:mod:`.connect`) and Kubernetes (:mod:`.kube`).

May import :mod:`seamless_dask.graph` (keys, layers, the record) and :mod:`seamless_dask.model`;
never io or the CLI. ``seamless_dask.cluster.local_cluster`` and the other names of :mod:`.workers`
stay importable from here.
"""

from .workers import (
    ModelPlugin,
    ResourceRouting,
    RowOrder,
    TileEvents,
    WorkerSetup,
    chunk_rows,
    cluster_has_gpus,
    configure_process,
    current_client,
    ensure_scheduler_plugins,
    local_cluster,
    set_malloc_option,
    setup_workers,
    shareable,
)

__all__ = [
    "ModelPlugin",
    "ResourceRouting",
    "RowOrder",
    "TileEvents",
    "WorkerSetup",
    "chunk_rows",
    "cluster_has_gpus",
    "configure_process",
    "current_client",
    "ensure_scheduler_plugins",
    "local_cluster",
    "set_malloc_option",
    "setup_workers",
    "shareable",
]
