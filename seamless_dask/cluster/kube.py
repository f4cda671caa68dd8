"""Kubernetes: a dask cluster of GPU workers through the dask operator (``DaskCluster``,
``DaskJob``).

The specs are plain dicts built offline (``dask_kubernetes.operator.make_cluster_spec`` plus what
GPU work needs), so they can be checked, written to YAML (``seamless-dask k8s``, ``deployment/``) or
handed to ``KubeCluster``. What they fix on top of dask-kubernetes' template:

- the scheduler gets CPU and memory only: the template gives it the workers' resources, GPU
  included, which would hold a GPU idle for the whole job (docs/design.md, "Pitfalls");
- each worker pod holds one GPU (``nvidia.com/gpu: 1``) and advertises the dask resource ``GPU=2``
  (``model_tasks_per_gpu``; each model task needs ``GPU=1``, see ``segment(resources=)``): two model
  tasks share the GPU, one blending on the host while the other's batch runs, and the other dask
  threads read and write, so that the GPU does not wait for them;
- GPU nodes are usually tainted: workers tolerate ``nvidia.com/gpu``;
- ``dask scheduler`` / ``dask worker`` rather than the retired ``dask-scheduler`` / ``dask-worker``
  commands;
- locked-down pods: non-root, no privilege escalation, no capabilities, a read-only root filesystem
  (with an ``emptyDir`` at ``/tmp`` for scratch), the runtime's seccomp profile;
- secrets never inline: environment from Kubernetes Secrets (``secretKeyRef``, ``envFrom``), and an
  ``--env`` whose name looks like a secret is refused;
- optional TLS among scheduler, workers and job (``tls_secret``: a Secret with ``ca.crt``,
  ``tls.crt`` and ``tls.key``, mounted read-only and wired through dask's configuration, so every
  member speaks ``tls://``);
- a ``NetworkPolicy`` (:func:`network_policy`) admitting to the cluster's pods only each other, pods
  labelled as its clients (a notebook) and the dask operator.

Scheduler, workers and client must run the same image (the scheduler unpickles the graph):
``deployment/Dockerfile`` builds it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import OptionError
from ..graph.record import package_version

DEFAULT_IMAGE = "ghcr.io/seamless-dask/seamless-dask:" + package_version()
GPU_RESOURCE = "nvidia.com/gpu"
TLS_DIR = "/etc/dask/tls"
SCRATCH_DIR = "/tmp"
USER_ID = 1000  # deployment/Dockerfile's user
# Names that hold secrets: their values must come from a Secret, never from the manifest's text.
SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|ACCESS_KEY|API_KEY|_KEY$", re.IGNORECASE
)


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
        dask threads per worker: ``model_tasks_per_gpu`` of them run model tasks (each needs
        ``GPU=1``), the others read, blend, write.
    model_tasks_per_gpu
        Model tasks a worker runs side by side on its GPU (it advertises ``GPU=`` this many): with
        2, one task's batch is on the GPU while the other blends its last one on the host. On an
        H200 two tasks sharing the GPU ran 1.7x the tiles/s of one (docs/benchmarks.md, "On a
        GPU"). At most ``worker_threads``.
    worker_cpu, worker_memory
        CPU and memory each worker pod requests (and is limited to, for memory): a chunk in flight
        holds its input window, a tile's height of float64 sums and its output block
        (``seamless-dask plan`` prints them: 3 bands of uint8 at 8192 px chunks, 351 MiB), one or
        two per thread.
    scheduler_cpu, scheduler_memory
        The scheduler's, with no GPU.
    env
        Extra environment for every pod that is not secret, e.g. ``{"AWS_REGION": "eu-west-1"}``; a
        name that looks like a secret (``*SECRET*``, ``*TOKEN*``, ``*_KEY``...) is refused: its
        value would be plain text.
    secret_env
        Environment from Secrets: ``{"AWS_SECRET_ACCESS_KEY": "s3-credentials:secret-key"}``
        (``SECRET:KEY``).
    env_from
        Secrets whose every key becomes an environment variable of every pod (``envFrom``).
    node_selector
        Labels of the GPU nodes, e.g. ``{"cloud.google.com/gke-accelerator": "nvidia-l4"}``.
    tls_secret
        A Secret with ``ca.crt``, ``tls.crt`` and ``tls.key`` (e.g. made by cert-manager): the
        cluster then speaks ``tls://`` only, scheduler, workers and job alike.
    client_labels
        Labels of the pods (a notebook) that may reach the cluster, for :func:`network_policy`.
    operator_namespace
        Where the dask operator runs: its controller reaches the scheduler to scale and retire
        workers.
    """

    name: str = "seamless"
    image: str = DEFAULT_IMAGE
    gpu_workers: int = 2
    worker_threads: int = 4
    model_tasks_per_gpu: int = 2
    worker_cpu: str = "8"
    worker_memory: str = "32Gi"
    scheduler_cpu: str = "1"
    scheduler_memory: str = "4Gi"
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    env_from: tuple[str, ...] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    idle_timeout: int = 0
    tls_secret: str | None = None
    client_labels: dict[str, str] = field(default_factory=lambda: {"seamless-dask/client": "true"})
    operator_namespace: str = "dask-operator"

    def __post_init__(self) -> None:
        for name in ("gpu_workers", "worker_threads", "model_tasks_per_gpu"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (0 if name == "gpu_workers" else 1)
            ):
                raise OptionError(
                    f"{name} must be a whole number (>= 1 for threads and model tasks), got "
                    f"{name}={value!r}"
                )
        if self.model_tasks_per_gpu > self.worker_threads:
            raise OptionError(
                f"model_tasks_per_gpu={self.model_tasks_per_gpu} is more than "
                f"worker_threads={self.worker_threads}: a model task takes a thread; use "
                f"worker_threads >= {self.model_tasks_per_gpu + 2} (two more for reads and writes)"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", self.name):
            raise OptionError(
                f"name must be a lowercase DNS label of at most 40 characters (letters, digits, "
                f"'-'; the operator "
                f"derives pod names from it), got name={self.name!r}: use e.g. 'seamless'"
            )
        secret = sorted(name for name in self.env if SECRET_NAME.search(name))
        if secret:
            raise OptionError(
                f"--env {secret[0]}=... looks like a secret, and an --env value is written into "
                f"the manifest in plain "
                f"text: put it in a Kubernetes Secret (kubectl create secret generic NAME "
                f"--from-literal=KEY=...) and "
                f"pass --secret-env {secret[0]}=NAME:KEY, or --env-from-secret NAME"
            )
        for name, ref in self.secret_env.items():
            if ref.count(":") != 1 or not all(ref.split(":")):
                raise OptionError(
                    f"secret_env values are SECRET:KEY, got {name}={ref!r}: e.g. s3-credentials:key"
                )

    @property
    def scheduler_address(self) -> str:
        """The scheduler's address from inside the cluster's namespace."""
        return f"{'tls' if self.tls_secret else 'tcp'}://{self.name}-scheduler:8786"

    def environment(self) -> list[dict[str, Any]]:
        """Every pod's environment: plain values, values from Secrets, and with TLS dask's TLS
        configuration.
        """
        env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in self.env.items()]
        for name, ref in self.secret_env.items():
            secret, key = ref.split(":")
            env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
        env += [{"name": "HOME", "value": SCRATCH_DIR}, {"name": "TMPDIR", "value": SCRATCH_DIR}]
        if self.tls_secret:
            config = {
                "REQUIRE_ENCRYPTION": "True",
                "DEFAULT_SCHEME": "tls",
                "TLS__CA_FILE": f"{TLS_DIR}/ca.crt",
                **{
                    f"TLS__{who}__{part}": f"{TLS_DIR}/tls.{ext}"
                    for who in ("SCHEDULER", "WORKER", "CLIENT")
                    for part, ext in (("CERT", "crt"), ("KEY", "key"))
                },
            }
            env += [{"name": f"DASK_DISTRIBUTED__COMM__{k}", "value": v} for k, v in config.items()]
            # the operator sets a tcp:// address unless the pod already names one
            env.append({"name": "DASK_SCHEDULER_ADDRESS", "value": self.scheduler_address})
        return env


def cluster_spec(spec: KubeSpec | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource for ``spec``: dask-kubernetes' template, fixed for GPU work."""
    from dask_kubernetes.operator import make_cluster_spec

    spec = spec or KubeSpec()
    cluster = make_cluster_spec(
        name=spec.name,
        image=spec.image,
        n_workers=spec.gpu_workers,
        env={},
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
        f"GPU={spec.model_tasks_per_gpu}",
        "--local-directory",
        f"{SCRATCH_DIR}/dask",
        *container["args"][2:],
    ]
    scheduler = cluster["spec"]["scheduler"]
    _set_pod(scheduler["spec"], spec, gpu=False)
    sched = scheduler["spec"]["containers"][0]
    sched["args"] = ["dask", "scheduler", *sched["args"][1:]]
    return cluster


def job_spec(segment_args: Sequence[str], spec: KubeSpec | None = None) -> dict[str, Any]:
    """A ``DaskJob``: the operator starts the cluster of ``spec``, runs ``seamless-dask segment
    ARGS`` against it in a job pod, and tears the cluster down when the job ends.

    ``segment_args`` are the CLI's (``INPUT OUTPUT --model SPEC ...``); the job adds
    ``--scheduler $(DASK_SCHEDULER_ADDRESS)``, which the operator sets, and ``--no-progress``.
    """
    spec = spec or KubeSpec()
    args = list(segment_args)
    if "--scheduler" in args:
        raise OptionError(
            "a DaskJob connects to its own cluster: drop --scheduler from the segment arguments"
        )
    if len(args) < 2 or any(a.startswith("-") for a in args[:2]):
        raise OptionError(
            f"segment arguments must start with INPUT OUTPUT, got {args[:2]}: e.g. scene.tif "
            f"labels.zarr"
        )
    cluster = cluster_spec(spec)
    job_container = {
        "name": "job",
        "image": spec.image,
        "args": [
            "seamless-dask",
            "segment",
            *args,
            "--scheduler",
            "$(DASK_SCHEDULER_ADDRESS)",
            "--no-progress",
        ],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    }
    job_pod: dict[str, Any] = {"containers": [job_container], "restartPolicy": "Never"}
    _lock_down(job_pod, spec)
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskJob",
        "metadata": {"name": spec.name},
        "spec": {"job": {"spec": job_pod}, "cluster": {"spec": cluster["spec"]}},
    }


def network_policy(spec: KubeSpec | None = None) -> dict[str, Any]:
    """A ``NetworkPolicy`` for the cluster's pods (scheduler, workers, job runner: the operator
    labels them ``dask.org/cluster-name``): traffic in only from each other, from pods with
    ``spec.client_labels`` and from the dask operator's namespace. A dask scheduler runs whatever
    its clients send: nothing else may reach it.
    """
    spec = spec or KubeSpec()
    members = {"podSelector": {"matchLabels": {"dask.org/cluster-name": spec.name}}}
    sources: list[dict[str, Any]] = [
        members,
        {"podSelector": {"matchLabels": dict(spec.client_labels)}},
    ]
    operator = {"kubernetes.io/metadata.name": spec.operator_namespace}
    sources.append({"namespaceSelector": {"matchLabels": operator}})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{spec.name}-dask"},
        "spec": {**members, "policyTypes": ["Ingress"], "ingress": [{"from": sources}]},
    }


def _lock_down(pod: dict[str, Any], spec: KubeSpec) -> None:
    """Non-root, no privilege escalation, no capabilities, read-only root with ``/tmp`` an
    ``emptyDir``; the environment (Secrets by reference) and, with TLS, the certificates mounted
    read-only.
    """
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_DIR}]
    if spec.tls_secret:
        pod["volumes"].append(
            {"name": "tls", "secret": {"secretName": spec.tls_secret, "defaultMode": 0o400}}
        )
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    for container in pod["containers"]:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        container["volumeMounts"] = copy.deepcopy(mounts)
        container["env"] = spec.environment()
        if spec.env_from:
            container["envFrom"] = [{"secretRef": {"name": name}} for name in spec.env_from]


def _set_pod(pod: dict[str, Any], spec: KubeSpec, *, gpu: bool) -> None:
    _lock_down(pod, spec)
    container = pod["containers"][0]
    if gpu:
        container["resources"] = {
            "requests": {"cpu": spec.worker_cpu, "memory": spec.worker_memory, GPU_RESOURCE: "1"},
            "limits": {
                "memory": spec.worker_memory,
                GPU_RESOURCE: "1",
            },  # quantities are strings in the CRD
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
    """A ``Client`` on a new ``DaskCluster`` made from ``spec`` (needs the dask operator on the
    cluster and a kube config); ``kwargs`` go to ``dask_kubernetes.operator.KubeCluster``. Workers
    are set up as
    :func:`seamless_dask.cluster.setup_workers` does. Close the client and its ``cluster`` when done.
    """
    from dask_kubernetes.operator import KubeCluster
    from distributed import Client

    from .workers import setup_workers

    cluster = KubeCluster(custom_cluster_spec=cluster_spec(spec), **kwargs)
    client = Client(cluster)
    setup_workers(client)
    return client


def to_yaml(*resources: dict[str, Any]) -> str:
    """Kubernetes resources as one YAML document stream."""
    import yaml

    return "---\n".join(
        yaml.safe_dump(r, sort_keys=False, default_flow_style=False) for r in resources
    )
