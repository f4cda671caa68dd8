"""Where a command-line job runs: a local cluster, a dask scheduler at an address (reached within a
bounded time, with workers, over TLS when asked), or one of dask's local schedulers by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import ClusterError, ClusterWarning, OptionError

if TYPE_CHECKING:
    from distributed import Client


LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a TLS-secured dask cluster: the CA that signed its certificates, this client's
    certificate and key (for a local cluster, every member's).
    """

    ca_file: str
    cert: str
    key: str

    def security(self) -> Any:
        """The ``distributed.Security`` of the TLS options, or ``None`` without them."""
        from distributed.security import Security

        for name, path in (
            ("--tls-ca-file", self.ca_file),
            ("--tls-cert", self.cert),
            ("--tls-key", self.key),
        ):
            if not os.path.isfile(path):
                raise OptionError(
                    f"{name} {path!r} is not a file: give the PEM file of the cluster's TLS set-up"
                )
        pairs = {
            f"tls_{who}_{part}": getattr(self, part)
            for who in ("client", "scheduler", "worker")
            for part in ("cert", "key")
        }
        return Security(tls_ca_file=self.ca_file, require_encryption=True, **pairs)


@contextlib.contextmanager
def job_scheduler(request: Any) -> Iterator[Any]:
    """Where the job runs: a new ``LocalCluster`` sized to the machine (no ``--scheduler``; TLS with
    the request's certificates), a dask scheduler at an address (reached within ``connect_timeout``,
    waiting ``worker_wait`` at most for a first worker), or one of dask's local schedulers by name.
    """
    import dask

    address = request.scheduler
    if address in LOCAL_SCHEDULERS:
        from .workers import configure_process

        configure_process()  # this process reads the raster: cap GDAL's block cache
        with dask.config.set(scheduler=address):
            yield None
        return
    from distributed import Client

    from .workers import local_cluster, setup_workers

    security = request.tls.security() if request.tls else None
    if address is None:
        with local_cluster(dashboard=False, security=security) as client, client.cluster:
            yield client
        return
    if address.startswith("tls://") and security is None:
        from distributed.security import Security

        # dask's configuration (distributed.comm.tls.*), as the Kubernetes pods set it
        security = Security()
        if getattr(security, "tls_ca_file", None) is None:
            raise OptionError(
                f"the scheduler {address!r} speaks TLS: give --tls-ca-file, --tls-cert and "
                f"--tls-key (the CA and the "
                "client certificate and key the cluster trusts), or set them in dask's "
                "configuration"
            )
    timeout = request.connect_timeout
    if timeout is None:
        timeout = dask.utils.parse_timedelta(
            dask.config.get("distributed.comm.timeouts.connect"), "s"
        )
    probe_scheduler(address, security, timeout)
    with Client(address, security=security, timeout=timeout) as client:
        try:
            wait_for_workers(client, address, request.worker_wait)
            setup_workers(client)
            yield client
        except Exception as error:
            if scheduler_lost(client, error):
                raise ClusterError(lost_scheduler_message(address, request)) from None
            raise


def scheduler_lost(client: Client, error: BaseException) -> bool:
    """Whether ``error`` says that ``client`` lost its scheduler (its connection closed, or its
    futures cancelled for that reason), rather than that a task failed.
    """
    from distributed.comm.core import CommClosedError

    # a task's own OSError (a disk full on a worker) is not a lost scheduler: only a closed comm is
    text = f"{type(error).__name__}: {error}"
    if "scheduler-connection-lost" in text or isinstance(error, CommClosedError):
        return True
    return getattr(client, "status", "running") not in ("running", "connecting", "newly-created")


def lost_scheduler_message(address: str, request: Any) -> str:
    """One line: which scheduler was lost, and how to finish the job."""
    target = str(getattr(request, "target", "OUTPUT"))
    if target.rstrip("/").endswith(".zarr"):
        again = (
            "what was written is kept: once a scheduler is up, run the same command with --resume "
            "(and --scheduler ADDRESS of the new one) to finish it"
        )
    else:
        again = "nothing incomplete was left at OUTPUT: run the same command again once a scheduler is up"
    return f"lost the dask scheduler at {address}: the job stopped; {again}"


def probe_scheduler(address: str, security: Any, timeout: float) -> None:
    """Ask ``address`` who it is, within ``timeout`` seconds, before a ``Client`` is made.

    ``distributed.Client`` waits without bound on a server that accepts the connection and never
    answers, and reads an HTTP server's reply as a frame length (an allocation of exabytes): both
    fail here instead.
    """
    from distributed.comm import connect

    args = security.get_connection_args("client") if security is not None else {}

    async def identity() -> Any:
        comm = await connect(address, timeout=timeout, **args)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded() -> Any:
        return await asyncio.wait_for(identity(), timeout)

    try:
        answer = asyncio.run(bounded())
    except (OSError, TimeoutError, MemoryError, ValueError, TypeError) as error:
        why = (
            f"{type(error).__name__}: {' '.join(str(error).split())}"
            if str(error)
            else type(error).__name__
        )
        within = (
            f" within {timeout:g} s"
            if isinstance(error, (OSError, TimeoutError, asyncio.TimeoutError))
            else ""
        )
        raise OptionError(
            f"cannot reach a dask scheduler at {address!r}{within} ({why}): check --scheduler (the "
            "scheduler's tcp:// or tls:// address, port 8786 by default, not its dashboard), that "
            "it runs, and "
            "--connect-timeout"
        ) from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise OptionError(
            f"{address!r} answered, but not as a dask scheduler ({str(answer)[:80]}): check "
            f"--scheduler"
        )


def wait_for_workers(client: Client, address: str, wait: float) -> None:
    """Return once the scheduler has a worker; warn at once if it has none, fail after ``wait``
    seconds.
    """
    if client.scheduler_info(n_workers=-1).get("workers"):
        return
    warnings.warn(
        f"the scheduler at {address} has no worker yet; waiting up to {wait:g} s for one "
        f"(start workers with: dask worker {address}; see --worker-wait)",
        ClusterWarning,
        stacklevel=2,
    )
    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise OptionError(
            f"no worker joined the scheduler at {address!r} within {wait:g} s: start workers "
            f"(dask worker {address}), "
            "or give them longer with --worker-wait"
        ) from None
