"""The names of seamless_dask's dask keys, made and read in this one module.

A ``segment`` graph's keys are ``(name, j, k)`` or ``(name, part, j, k)`` for chunk ``(j, k)``;
every name starts with ``seamless-``, so the chunk row is ``key[-2]``. The model runs in the stage-1
tasks, named ``seamless-infer-[GPU=1]-<token>`` (the resources the model needs, when it needs any,
written into the name: a key name survives graph optimisation where layer annotations do not,
dask#7036, distributed#8593). Low-level fusion may merge a chunk's stage-1 task with its output task
(a chunk with no halo to hand on), whose name then carries the stage-1 name: :func:`inference_key`
recovers it, so progress and resource routing see fused tasks too.
"""

from __future__ import annotations

import re
from typing import Any

PREFIX = "seamless-"
# scheduler events, one per finished model task (cluster.TileEvents -> progress)
TILE_TOPIC = "seamless-tiles"
INFER = "seamless-infer-"


def infer_name(resources: tuple[tuple[str, float], ...], token: str) -> str:
    """The name of a graph's stage-1 (model) keys."""
    return INFER + resource_tag(resources) + token


def stage2_names(infer: str, token: str, output: str) -> tuple[str, str]:
    """``(halo parts, output)`` names for the stage-1 keys named ``infer``; each carries the stage-1
    name's own part, so that a stage-1 task fused with its output task (:func:`inference_key`) can
    be traced back.
    """
    own = infer.removeprefix(INFER)
    return f"{PREFIX}halo-{own}~{token}", f"{PREFIX}{output}-{own}~{token}"


def inference_key(key: Any) -> tuple | None:
    """The stage-1 key ``key`` is, or was fused into (the output task of a chunk with no halo to
    hand on, which it ran with); ``None`` for other keys.
    """
    if not isinstance(key, tuple) or len(key) < 3:
        return None
    name = str(key[0])
    if not name.startswith(INFER):
        return None
    # "<stage-1 name, shortened>-seamless-<output>-<stage-1 name's own part>~<token>"
    fused = _FUSED.search(name)
    if fused:
        return (INFER + fused.group(1), *key[1:])
    return key


_FUSED = re.compile(r"-seamless-[a-z]+-(.+)~[^~]*$")


def is_inference(key: Any) -> bool:
    """A task that runs the model: a stage-1 task, alone or fused with its output task."""
    return isinstance(key, tuple) and str(key[0]).startswith(INFER)


def chunk_row(key: Any) -> int | None:
    """The chunk row of a seamless_dask key ``(name, [band or part,] j, k)``; ``None`` for other keys."""
    if isinstance(key, tuple) and len(key) >= 3 and str(key[0]).startswith(PREFIX):
        row = key[-2]
        return row if isinstance(row, int) else None
    return None


def resource_tag(resources: tuple[tuple[str, float], ...]) -> str:
    """The resources model tasks need, as written into their key names, e.g. ``[GPU=1]-``."""
    if not resources:
        return ""
    return "[" + ",".join(f"{name}={amount:g}" for name, amount in resources) + "]-"


def parse_resource_tag(name: str) -> dict[str, float]:
    """The resources in a key name made with :func:`resource_tag` (``{}`` when there are none)."""
    if "[" not in name or "]" not in name:
        return {}
    inside = name[name.index("[") + 1 : name.index("]")]
    return {k: float(v) for k, v in (item.split("=") for item in inside.split(","))}


VOLUME_SUMS = PREFIX + "volume-sums-"


def volume_names(
    token: str, resources: tuple[tuple[str, float], ...] = ()
) -> tuple[str, str, str, str]:
    """``(model, sums, parts, output)`` names of a volume's graph (:mod:`.volume`). Not
    ``seamless-infer-``: the planes' progress does not read a volume's chunks. The sums tasks run
    the model: their name carries the resources it needs (``[GPU=1]-``), as a plane's stage 1 does,
    and so do the parts' and outputs', so that a sums task fused with its only reader (named
    ``seamless-volume-sums-<reader's name>``) still carries them.
    """
    tag = resource_tag(resources)
    names = (f"{PREFIX}volume-model-{token}", f"{VOLUME_SUMS}{tag}{token}",
             f"{PREFIX}volume-part-{tag}{token}", f"{PREFIX}volume-out-{tag}{token}")  # fmt: skip
    return names


def runs_model(key: Any) -> bool:
    """A task that runs the model: a plane's stage 1 (:func:`is_inference`) or a volume's sums."""
    return is_inference(key) or (isinstance(key, tuple) and str(key[0]).startswith(VOLUME_SUMS))


_FUSED_VOLUME = re.compile(rf"^{re.escape(VOLUME_SUMS)}{PREFIX}volume-(part|out)-(.*)$")


def model_key(key: Any) -> tuple | None:
    """The model task ``key`` is or was fused into: :func:`inference_key` for a plane; for a volume,
    its sums key ``(name, i, j, k)``, also when dask fused it with its only reader (a part owed,
    ``(part, i, j, k, <target>)``, or the output, ``(out, [0,] i, j, k)``); ``None`` for other keys.
    """
    found = inference_key(key)
    if found is not None or not runs_model(key):
        return found
    fused = _FUSED_VOLUME.match(str(key[0]))
    if fused is None:
        return key
    index = key[1:4] if fused.group(1) == "part" else key[-3:]
    return (VOLUME_SUMS + fused.group(2), *index)
