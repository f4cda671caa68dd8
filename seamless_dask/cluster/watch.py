"""A computation on a cluster that has lost every worker: said at once, waited for, then ended.

dask itself waits without a word for a worker to come back (its tasks stay queued on the
scheduler), which at 2 a.m. looks like a hung job. :class:`WorkerWatch` polls the scheduler while a
write runs: after ``grace`` seconds with no worker it warns (a :class:`ClusterWarning`, which the
CLI prints as one line) how long it will wait; a worker that joins lets the job go on; after
``wait`` seconds the job's futures are cancelled and it ends with a :class:`ClusterError` saying
how to finish it.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import dask

from ..exceptions import ClusterError, ClusterWarning

if TYPE_CHECKING:
    from distributed import Client

CONFIG = "seamless_dask.worker_wait"  # seconds a job waits for a worker when it has none
DEFAULT_WAIT = 300.0
GRACE = 5.0  # seconds without a worker before the job says so (a worker restarting is quicker)


def worker_wait(wait: float | None = None) -> float:
    """``wait``, else dask's ``seamless_dask.worker_wait``, else 300 s."""
    return float(wait if wait is not None else dask.config.get(CONFIG, DEFAULT_WAIT))


class WorkerWatch:
    """Watch ``client``'s workers while the block runs (see the module docstring)."""

    def __init__(
        self, client: Client, wait: float | None = None, *, grace: float = GRACE, poll: float = 1.0
    ) -> None:
        self.client, self.wait, self.grace, self.poll = client, worker_wait(wait), grace, poll
        self.address = getattr(client.scheduler, "address", "the scheduler")
        self.expired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="seamless-worker-watch", daemon=True
        )

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.expired and error is not None:
            raise ClusterError(
                f"no worker was connected to the scheduler at {self.address} for {self.wait:g} s "
                "(--worker-wait): the job stopped; what was written is kept: start workers "
                f"(dask worker {self.address}) and run the same command with --resume (a COG: "
                "run it again)"
            ) from None

    def _cancel_all(self) -> None:
        """Cancel every future the client holds: the job's waits then end, and __exit__ says why."""
        from distributed import Future

        futures: list[Future] = [Future(key, self.client) for key in list(self.client.futures)]
        self.client.cancel(futures, force=True)

    def _workers(self) -> int | None:
        try:
            return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # the scheduler itself is gone: not ours to say (connect.py says it)
            return None

    def _watch(self) -> None:
        alone_since: float | None = None
        warned = False
        while not self._stop.wait(self.poll):
            count = self._workers()
            if count is None:
                return
            now = time.monotonic()
            if count:
                if warned:
                    warnings.warn(
                        f"a worker joined the scheduler at {self.address}: the job goes on",
                        ClusterWarning,
                        stacklevel=1,
                    )
                alone_since, warned = None, False
                continue
            alone_since = alone_since or now
            if not warned and now - alone_since >= self.grace:
                warned = True
                warnings.warn(
                    f"no worker is connected to the scheduler at {self.address}: the job waits up "
                    f"to {self.wait:g} s (--worker-wait) for one to join to run its remaining "
                    f"tasks (start workers with: dask worker {self.address})",
                    ClusterWarning,
                    stacklevel=1,
                )
            if now - alone_since >= self.wait:
                self.expired = True
                self._cancel_all()
                return
