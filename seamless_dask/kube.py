"""Kubernetes: a dask cluster of GPU workers through the dask operator (``DaskCluster``, ``DaskJob``).

The specs are plain dicts built offline (``dask_kubernetes.operator.make_cluster_spec`` plus what GPU work
needs), so they can be checked, written to YAML (``seamless-dask k8s``, ``deployment/``) or handed to
``KubeCluster``. What they fix on top of dask-kubernetes' template:

- the scheduler gets CPU and memory only: the template gives it the workers' resources, GPU included, which
  would hold a GPU idle for the whole job (DESIGN.md, "Pitfalls");
- each worker pod holds one GPU (``nvidia.com/gpu: 1``), advertises the dask resource ``GPU=1`` (model tasks
  need it, see ``segment(resources=)``) and runs a few dask threads, so that reads, blending and writes run
  beside the model task and the GPU does not wait for them;
- GPU nodes are usually tainted: workers tolerate ``nvidia.com/gpu``;
- ``dask scheduler`` / ``dask worker`` rather than the retired ``dask-scheduler`` / ``dask-worker`` commands.

Scheduler, workers and client must run the same image (the scheduler unpickles the graph):
``deployment/Dockerfile`` builds it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .exceptions import OptionError

DEFAULT_IMAGE = "ghcr.io/seamless-dask/seamless-dask:0.1.0"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class KubeSpec:
    """What a seamless_dask cluster on Kubernetes is made of.

    Parameters
    ----------
    name
        The ``DaskCluster``'s name; the scheduler is reachable in the namespace at
        ``tcp://{name}-scheduler:8786``.
    image
        One image for scheduler, workers and job (``deployment/Dockerfile``).
    gpu_workers
        Worker pods, one GPU each.
    worker_threads
        dask threads per worker: one runs the model task (it needs ``GPU=1``), the others read, blend, write.
    worker_cpu, worker_memory
        CPU and memory each worker pod requests (and is limited to, for memory): a 2048 px chunk's
        float64 accumulator with 10 classes is ~0.4 GB, and a few wait per thread.
    scheduler_cpu, scheduler_memory
        The scheduler's, with no GPU.
    env
        Extra environment for every pod, e.g. credentials for the object store the rasters live in.
    node_selector
        Labels of the GPU nodes, e.g. ``{"cloud.google.com/gke-accelerator": "nvidia-l4"}``.
    """

    name: str = "seamless"
    image: str = DEFAULT_IMAGE
    gpu_workers: int = 2
    worker_threads: int = 4
    worker_cpu: str = "8"
    worker_memory: str = "32Gi"
    scheduler_cpu: str = "1"
    scheduler_memory: str = "4Gi"
    env: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    idle_timeout: int = 0

    def __post_init__(self) -> None:
        for name in ("gpu_workers", "worker_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "gpu_workers" else 1):
                raise OptionError(f"{name} must be a whole number (>= 1 for threads), got {name}={value!r}")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", self.name):
            raise OptionError(
                f"name must be a lowercase DNS label of at most 40 characters (letters, digits, '-'; the operator "
                f"derives pod names from it), got name={self.name!r}: use e.g. 'seamless'"
            )

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address from inside the cluster's namespace."""
        return f"tcp://{self.name}-scheduler:8786"


def cluster_spec(spec: KubeSpec | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource for ``spec``: dask-kubernetes' template, fixed for GPU work."""
    from dask_kubernetes.operator import make_cluster_spec

    spec = spec or KubeSpec()
    cluster = make_cluster_spec(
        name=spec.name,
        image=spec.image,
        n_workers=spec.gpu_workers,
        env=dict(spec.env),
        worker_command="dask worker",
        idle_timeout=spec.idle_timeout,
    )
    worker = cluster["spec"]["worker"]
    _set_pod(worker["spec"], spec, gpu=True)
    container = worker["spec"]["containers"][0]
    container["args"] = [
        *container["args"][:2],
        "--nthreads",
        str(spec.worker_threads),
        "--resources",
        "GPU=1",
        *container["args"][2:],
    ]
    scheduler = cluster["spec"]["scheduler"]
    _set_pod(scheduler["spec"], spec, gpu=False)
    sched = scheduler["spec"]["containers"][0]
    sched["args"] = ["dask", "scheduler", *sched["args"][1:]]
    return cluster


def job_spec(segment_args: Sequence[str], spec: KubeSpec | None = None) -> dict[str, Any]:
    """A ``DaskJob``: the operator starts the cluster of ``spec``, runs ``seamless-dask segment ARGS`` against
    it in a job pod, and tears the cluster down when the job ends.

    ``segment_args`` are the CLI's (``INPUT OUTPUT --model SPEC ...``); the job adds
    ``--scheduler $(DASK_SCHEDULER_ADDRESS)``, which the operator sets, and ``--no-progress``.
    """
    spec = spec or KubeSpec()
    args = list(segment_args)
    if "--scheduler" in args:
        raise OptionError("a DaskJob connects to its own cluster: drop --scheduler from the segment arguments")
    if len(args) < 2 or any(a.startswith("-") for a in args[:2]):
        raise OptionError(f"segment arguments must start with INPUT OUTPUT, got {args[:2]}: e.g. scene.tif labels.zarr")
    cluster = cluster_spec(spec)
    job_container = {
        "name": "job",
        "image": spec.image,
        "args": ["seamless-dask", "segment", *args, "--scheduler", "$(DASK_SCHEDULER_ADDRESS)", "--no-progress"],
        "env": copy.deepcopy(cluster["spec"]["worker"]["spec"]["containers"][0]["env"]),
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskJob",
        "metadata": {"name": spec.name},
        "spec": {
            "job": {"spec": {"containers": [job_container], "restartPolicy": "Never"}},
            "cluster": {"spec": cluster["spec"]},
        },
    }


def _set_pod(pod: dict[str, Any], spec: KubeSpec, *, gpu: bool) -> None:
    container = pod["containers"][0]
    if gpu:
        container["resources"] = {
            "requests": {"cpu": spec.worker_cpu, "memory": spec.worker_memory, GPU_RESOURCE: "1"},
            "limits": {"memory": spec.worker_memory, GPU_RESOURCE: "1"},  # quantities are strings in the CRD
        }
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        if spec.node_selector:
            pod["nodeSelector"] = dict(spec.node_selector)
    else:
        container["resources"] = {
            "requests": {"cpu": spec.scheduler_cpu, "memory": spec.scheduler_memory},
            "limits": {"memory": spec.scheduler_memory},
        }


def kubernetes_cluster(spec: KubeSpec | None = None, **kwargs: Any) -> Any:
    """A ``Client`` on a new ``DaskCluster`` made from ``spec`` (needs the dask operator on the cluster and
    a kube config); ``kwargs`` go to ``dask_kubernetes.operator.KubeCluster``. Workers are set up as
    :func:`seamless_dask.cluster.setup_workers` does. Close the client and its ``cluster`` when done."""
    from dask_kubernetes.operator import KubeCluster
    from distributed import Client

    from .cluster import setup_workers

    cluster = KubeCluster(custom_cluster_spec=cluster_spec(spec), **kwargs)
    client = Client(cluster)
    setup_workers(client)
    return client


def to_yaml(*resources: dict[str, Any]) -> str:
    """Kubernetes resources as one YAML document stream."""
    import yaml

    return "---\n".join(yaml.safe_dump(r, sort_keys=False, default_flow_style=False) for r in resources)
