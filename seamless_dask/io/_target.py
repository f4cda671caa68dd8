"""Where a writer writes: local paths and fsspec URLs, one claim per target, checks before anything
is touched.

Every writer resolves its target to a :class:`Target` first; nothing is written or deleted before
the checks here have passed:

- a target that is (or resolves to, through symlinks) the run's input, or lies inside it or holds
  it, is refused (:func:`check_not_an_input`);
- an existing target is replaced only with ``overwrite`` and only when seamless_dask wrote it (the
  writers ask :meth:`Target.exists` and check what is there);
- a run takes an exclusive claim on its target (:func:`claim`): a second run on the same target is
  refused with the first one's host, pid and start time; a claim whose process is gone is stale and
  is taken over, together with the scratch files that dead run left.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import OptionError, RasterError

CLAIM_SUFFIX = ".seamless-lock"
# <target>.seamless-<run>.upload: the id of the S3 multipart upload run <run> started
UPLOAD_SUFFIX = ".upload"
# every file a run leaves beside its target: <target>.seamless-<run>.<what>
SCRATCH_INFIX = ".seamless-"
# Object stores publish an object whole or not at all: an upload that fails never shows at the
# target.
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


@dataclass(frozen=True)
class Target:
    """One output location: a local path (absolute) or an fsspec URL (``s3://``, ``gs://``,
    ``memory://``...).
    """

    url: str
    storage_options: dict = field(default_factory=dict, compare=False)

    @property
    def local(self) -> bool:
        return "://" not in self.url

    @property
    def fs(self) -> Any:
        """The fsspec filesystem holding the target (the local one for paths)."""
        import fsspec

        return (
            fsspec.url_to_fs(self.url, **self.storage_options)[0]
            if not self.local
            else fsspec.filesystem("file")
        )

    @property
    def path(self) -> str:
        """The target's path inside :attr:`fs`."""
        import fsspec

        return self.url if self.local else fsspec.url_to_fs(self.url, **self.storage_options)[1]

    @property
    def real(self) -> str:
        """What the target resolves to, to compare it with inputs: symlinks resolved for local paths."""
        return os.path.realpath(self.url) if self.local else self.url.rstrip("/")

    def exists(self) -> bool:
        """Whether something is there now: for a URL, asked of the store, never of the listings
        fsspec caches (a filesystem instance is shared by the process, and its listings go stale
        as other processes write).
        """
        if self.local:
            return os.path.lexists(self.url)
        fs = self.fs
        fs.invalidate_cache(self.path)
        return bool(fs.exists(self.path))

    def sibling(self, suffix: str) -> Target:
        """The location ``<target><suffix>``, beside the target (never inside a store)."""
        return Target(self.url.rstrip("/") + suffix, self.storage_options)

    def check_parent(self) -> None:
        """A target's folder must exist, a remote one's bucket be there and answer, before any tile
        runs: a typo, a missing bucket or wrong credentials would otherwise fail after the whole run.
        """
        if self.local:
            if not os.path.isdir(os.path.dirname(self.url)):
                raise RasterError(
                    f"the folder {os.path.dirname(self.url)!r} of output {self.url!r} does not "
                    f"exist: create it first"
                )
            return
        protocol = self.url.split("://", 1)[0]
        if protocol == "memory":
            return
        bucket = self.path.strip("/").split("/", 1)[0]
        try:
            found = _bucket_found(self.fs, bucket)
        except Exception as error:  # credentials, endpoint, network: say which, before any tile
            raise RasterError(
                f"cannot reach the bucket {bucket!r} of output {self.url!r} "
                f"({type(error).__name__}: {str(error)[:200]}): check the credentials and endpoint "
                "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, or storage_options)"
            ) from None
        if not found:
            raise RasterError(
                f"the bucket {bucket!r} of output {self.url!r} does not exist (or these "
                f"credentials cannot see it): create it first, or check the URL"
            )


def _bucket_found(fs: Any, bucket: str) -> bool:
    """Whether ``bucket`` is there: info, not exists (exists answers False for an endpoint that does not
    answer); an empty bucket, which older s3fs (2025.7 and before) says info cannot find, lists as empty.
    """
    try:
        fs.info(bucket)
        return True
    except FileNotFoundError:
        pass
    try:
        fs.ls(bucket)
        return True
    except FileNotFoundError:
        return False


def check_plane(result: Any, writer: str) -> None:
    """Raise unless ``result`` is a plane's (a volume's ``z`` dim is not written by ``writer`` yet)."""
    if "z" in getattr(result, "dims", ()):
        raise RasterError(
            f"{writer} writes planes, and this result is a volume (dims {tuple(result.dims)}): "
            "write it with sd.to_zarr(result, store), which writes volumes region by region "
            "and resumes them"
        )


def as_target(where: str | os.PathLike, storage_options: dict | None = None) -> Target:
    """``where`` as a :class:`Target`: ``file://`` URLs and paths become absolute local paths."""
    url = os.fspath(where)
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    if "://" not in url:
        if storage_options:
            raise OptionError(
                f"storage_options apply to URLs (s3://, gs://...), not to the local path {url!r}"
            )
        return Target(os.path.abspath(url))
    return Target(url, with_retries(url, storage_options or {}))


# botocore's "standard" mode retries 500, 502, 503, 504 and throttling answers with jittered
# exponential backoff (at most 20 s a wait); its default ("legacy", 5 attempts) gives up on an object
# store's brief brown-out. gcsfs and adlfs retry 5xx answers on their own.
S3_RETRIES = {"max_attempts": 10, "mode": "standard"}


def with_retries(url: str, storage_options: dict) -> dict:
    """``storage_options`` for ``url`` with the object store's retries configured where the caller set
    none: ``s3://`` gets :data:`S3_RETRIES` as botocore's ``config_kwargs["retries"]``, unless the
    environment sets botocore's own (``AWS_MAX_ATTEMPTS``, ``AWS_RETRY_MODE``).
    """
    options = dict(storage_options)
    configured = "AWS_MAX_ATTEMPTS" in os.environ or "AWS_RETRY_MODE" in os.environ
    if url.split("://", 1)[0] in ("s3", "s3a") and not configured:
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("retries", dict(S3_RETRIES))
        options["config_kwargs"] = config
    return options


def input_location(where: str | os.PathLike) -> str:
    """An input path or URL as :attr:`Target.real` spells it, to compare the two."""
    return as_target(where).real


def check_not_an_input(target: Target, inputs: dict[str, str], what: str = "OUTPUT") -> None:
    """Refuse a ``target`` that is, holds or lies inside one of ``inputs`` (``{role: location}``)."""
    mine = target.real
    for role, location in inputs.items():
        if not location:
            continue
        theirs = input_location(location)
        if mine == theirs or _inside(mine, theirs) or _inside(theirs, mine):
            relation = (
                "is" if mine == theirs else ("lies inside" if _inside(mine, theirs) else "holds")
            )
            raise RasterError(
                f"{what} {target.url!r} {relation} the {role} {location!r} (both resolve to "
                f"{theirs!r}): writing it "
                f"would destroy the {role}; choose another {what}"
            )


def _inside(child: str, parent: str) -> bool:
    return child.startswith(parent.rstrip("/") + "/")


def run_id() -> str:
    """A new run's id: names its claim and scratch files, so two runs never share a file."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Claim:
    """The exclusive right of one run to write a target, held as a small JSON file beside it."""

    target: Target
    run: str
    host: str
    pid: int
    started: str

    @property
    def where(self) -> Target:
        return self.target.sibling(CLAIM_SUFFIX)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started} (run {self.run})"


@contextlib.contextmanager
def claim(target: Target, run: str | None = None) -> Iterator[Claim]:
    """Hold ``target`` for this run; refuse if another live run holds it.

    On entry, a claim left by a process that no longer runs (on this host: its pid is gone) is taken
    over, and the scratch files beside the target (``<target>.seamless-*``, which only a claim
    holder writes) are removed. The claim file is removed on exit, however the run ends; a SIGKILL
    leaves it, and the next run proves it stale as above. On another host's claim no such proof
    exists: the error says which file to remove once that run is known to be gone.
    """
    target.check_parent()
    mine = Claim(
        target,
        run or run_id(),
        socket.gethostname(),
        os.getpid(),
        datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    _acquire(mine)
    try:
        remove_scratch(target)
        yield mine
    finally:
        with contextlib.suppress(OSError):
            remove_file(mine.where)


def _acquire(mine: Claim) -> None:
    record = json.dumps(
        {"run": mine.run, "host": mine.host, "pid": mine.pid, "started": mine.started}
    )
    for _ in range(2):
        if _create_exclusive(mine.where, record):
            return
        holder = _read_claim(mine)
        if holder is None or not _is_stale(holder):
            break
        remove_file(mine.where)  # a dead run's claim: take it over (once)
    holder = _read_claim(mine)
    who = holder.describe() if holder is not None else "a run whose claim file cannot be read"
    raise RasterError(
        f"{mine.target.url!r} is being written by another run: {who}; wait for it to end, or, if "
        f"that run is gone "
        f"(its machine was shut down), delete {mine.where.url!r} and rerun"
    )


def _create_exclusive(where: Target, record: str) -> bool:
    if where.local:
        try:
            fd = os.open(where.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True
    # Object stores have no portable exclusive create: check, then write (a narrow race, see
    # docs/cluster.md).
    if where.exists():
        return False
    where.fs.pipe_file(where.path, record.encode())
    return True


def _read_claim(mine: Claim) -> Claim | None:
    where = mine.where
    try:
        if where.local:
            with open(where.url) as f:
                found = json.load(f)
        else:
            found = json.loads(where.fs.cat_file(where.path))
        return Claim(
            mine.target,
            str(found["run"]),
            str(found["host"]),
            int(found["pid"]),
            str(found["started"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_stale(holder: Claim) -> bool:
    """Provably stale: the holder ran on this host and its process is gone."""
    if holder.host != socket.gethostname():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_file(where: Target) -> None:
    """Remove the file at ``where`` if it is there (local or remote)."""
    if where.local:
        with contextlib.suppress(FileNotFoundError):
            os.remove(where.url)
    elif where.exists():
        where.fs.rm(where.path)


def remove_scratch(target: Target) -> None:
    """Remove every ``<target>.seamless-*`` file but the claim: only a claim holder may call this."""
    prefix = target.url.rstrip("/") + SCRATCH_INFIX
    if target.local:
        folder = os.path.dirname(prefix)
        if not os.path.isdir(folder):
            return
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if path.startswith(prefix) and not path.endswith(CLAIM_SUFFIX) and os.path.isfile(path):
                os.remove(path)
        return
    fs, base = target.fs, target.path.rstrip("/") + SCRATCH_INFIX
    for path in fs.glob(base + "*"):
        if path.endswith(UPLOAD_SUFFIX):  # a dead run's multipart upload: aborted, not left to cost
            abort_marked_upload(target, path)
        elif not path.endswith(CLAIM_SUFFIX):
            fs.rm(path)


def abort_marked_upload(target: Target, marker: str) -> None:
    """Abort the S3 multipart upload of ``target`` whose id the file ``marker`` (a path of the
    target's filesystem) holds, the one a run of seamless_dask started, then remove the marker.
    """
    fs = target.fs
    bucket, key, _ = fs.split_path(target.path)
    upload = fs.cat_file(marker).decode()
    with contextlib.suppress(FileNotFoundError):  # completed or aborted already
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload)
    fs.rm(marker)
