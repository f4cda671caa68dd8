"""Model specs and loading: what a user may give as a model, and how each process loads it, once.

A model may be a ``torch.nn.Module``, a TorchScript module or file, a ``torch.export`` ``.pt2`` file
(only with ``trust_model=True``: loading it unpickles), any callable taking an NCHW float32 batch,
or an import string ``"pkg.module:factory"`` (the factory is called with no arguments; an attribute
that already is a module is used as is). String specs are loaded once per process and device; an
in-memory model reaches workers once, by token (:func:`register_model`, used by
:func:`seamless_dask.cluster.shareable`). User code that calls ``sys.exit`` while loading is a
:class:`~seamless_dask.exceptions.ModelError`, never the end of the run.
"""

from __future__ import annotations

import importlib
import os
import threading
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from dask.base import tokenize

from ..exceptions import ModelError, ModelSpecError

if TYPE_CHECKING:
    import torch

# What a user may give as a model: a module or any callable of a batch of tiles (N, bands, h, w)
# returning predictions (N, classes, h, w), a tuple or a dict of them; or where to load one from.
ModelSpec: TypeAlias = (
    "torch.nn.Module | Callable[[torch.Tensor], Any] | str | os.PathLike[str] | RegisteredModel"
)

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")

_LOADED: dict[tuple[str, str, bool], Callable] = {}
_LOAD_LOCK = threading.Lock()
_COPY_LOCK = threading.Lock()
_REGISTERED: dict[
    str, Any
] = {}  # in-memory models sent to this process by token (see cluster.shareable)


@dataclass(frozen=True)
class RegisteredModel:
    """A model spec that is only a token: the model itself reached this process once, by
    ``register_model``.
    """

    token: str
    kind: str = "model"


def register_model(token: str, model: Any) -> None:
    """Make ``model`` available to runners in this process whose spec is ``RegisteredModel(token)``."""
    _REGISTERED[token] = model


def checked_spec(model: Any) -> Any:
    """``model`` checked to be a spec ``ModelRunner`` can load, or a ModelSpecError naming the forms it
    takes.
    """
    if isinstance(model, os.PathLike):
        return os.fspath(model)
    if isinstance(model, (str, RegisteredModel)) or callable(model):
        return model
    raise ModelSpecError(
        f"model must be a torch.nn.Module, a TorchScript file, a callable or an import string "
        f"'pkg.module:factory', got {type(model).__name__}"
    )


def spec_token(spec: Any) -> str:
    """A short token for a model spec: the string, or an in-memory model's identity and parameter
    versions.
    """
    return tokenize(_spec_identity(spec))


def _spec_identity(spec: Any) -> tuple:
    if isinstance(spec, str):
        return ("str", spec)
    if isinstance(spec, RegisteredModel):
        return ("registered", spec.token)
    # Identity plus parameter version counters: cheap, stable within a process, and it changes when
    # the model is trained in place, unlike id() alone; hashing the weights would cost seconds for
    # big models.
    params = tuple(p._version for p in spec.parameters()) if hasattr(spec, "parameters") else ()
    return (type(spec).__qualname__, id(spec), params)


def exit_error(escape: SystemExit, where: str) -> ModelError:
    """A ``sys.exit`` in user code, as an error: it must never end a run, least of all with status 0."""
    return ModelError(
        f"{where} called sys.exit({escape.code!r}) instead of raising an exception; seamless_dask "
        f"stops the job "
        "as failed: make the model raise an exception on bad input"
    )


def load(spec: Any, device: Any, trusted: bool = False, owned: bool = False) -> Callable:
    """The model of ``spec`` on ``device``, in eval mode: a callable on NCHW float32 batches.

    A module the user holds is copied rather than moved (:func:`_prepare`); ``owned``: ``spec`` is
    this process's own copy (unpickled), moved in place.
    """
    if isinstance(spec, RegisteredModel):
        if spec.token not in _REGISTERED:
            raise ModelSpecError(
                f"the {spec.kind} sent to the workers as {spec.token!r} is not on this worker: it "
                f"was registered "
                "on another cluster; call segment() again with this cluster's Client active"
            )
        return _prepare(_REGISTERED[spec.token], device)
    if not isinstance(spec, str):
        return _prepare(spec, device, owned)
    # trusted: an untrusted runner never gets what a trusted one loaded
    key = (
        spec,
        str(device),
        trusted,
    )
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load_string(spec, device, trusted)
        return _LOADED[key]


def _load_string(spec: str, device: Any, trusted: bool) -> Callable:
    path = Path(spec)
    if path.suffix.lower() == ".pt2":
        if not trusted:
            raise ModelSpecError(
                f"{spec!r} is a torch.export file, and torch.export.load unpickles it, which runs "
                f"any code the file "
                "holds: pass trust_model=True (--trust-model) only for a file whose origin you "
                "trust, or save the "
                "model as TorchScript (torch.jit.save), which loads without running Python code"
            )
        return _load_exported(path, device)
    if path.suffix.lower() in TORCHSCRIPT_SUFFIXES or path.is_file():
        return _load_torchscript(path, device)
    if ":" not in spec:
        raise ModelSpecError(
            f"model {spec!r} is neither an existing TorchScript file nor an import string: "
            "use 'pkg.module:factory' or the path of a file saved with torch.jit.save"
        )
    return _prepare(_import_factory(spec), device, owned=True)


def _load_torchscript(path: Path, device: Any) -> Callable:
    import torch

    if not path.is_file():
        raise ModelSpecError(f"model file {str(path)!r} does not exist: check the path")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as error:
        raise ModelSpecError(
            f"could not load {str(path)!r} as TorchScript ({type(error).__name__}): save the "
            f"model with "
            "torch.jit.save(torch.jit.script(model), path), or pass an import string "
            "'pkg.module:factory'"
        ) from error
    return model.eval()


def _load_exported(path: Path, device: Any) -> Callable:
    """A ``torch.export`` program (``.pt2``); export it with a dynamic batch dimension."""
    import torch

    if not path.is_file():
        raise ModelSpecError(f"model file {str(path)!r} does not exist: check the path")
    try:
        program = torch.export.load(str(path))
    except Exception as error:
        raise ModelSpecError(
            f"could not load {str(path)!r} with torch.export.load ({type(error).__name__}: "
            f"{error}): "
            "save it with torch.export.save(torch.export.export(model, (example,)), path)"
        ) from error
    return program.module().to(device)


def _split_spec(spec: str) -> tuple[str, str]:
    module_name, _, attr_path = spec.partition(":")
    if not module_name.strip() or not attr_path.strip():
        raise ModelSpecError(
            f"model spec {spec!r} names no module or no factory: write 'package.module:factory' "
            "(a function returning the model), or give a TorchScript file's path"
        )
    return module_name, attr_path


def import_attribute(spec: str) -> Any:
    """What ``"pkg.module:attr.path"`` names, imported (not called); a ModelSpecError says what is
    missing.
    """
    module_name, attr_path = _split_spec(spec)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelSpecError(
            f"cannot import module {module_name!r} of model spec {spec!r}: {error}; "
            "install the package or add its folder to PYTHONPATH"
        ) from error
    except SystemExit as escape:
        raise exit_error(
            escape, f"importing module {module_name!r} of model spec {spec!r}"
        ) from None
    for name in attr_path.split("."):
        if not hasattr(obj, name):
            raise ModelSpecError(
                f"module {module_name!r} has no attribute {attr_path!r} (model spec {spec!r})"
            )
        obj = getattr(obj, name)
    return obj


def _import_factory(spec: str) -> Any:
    obj = import_attribute(spec)
    if _is_module(obj):
        return obj
    if not callable(obj):
        raise ModelSpecError(
            f"model spec {spec!r} names a {type(obj).__name__}, not a model or a factory"
        )
    try:
        built = obj()
    except Exception as error:
        raise ModelSpecError(
            f"model factory {spec!r} raised {type(error).__name__}: {error}"
        ) from error
    except SystemExit as escape:
        raise exit_error(escape, f"model factory {spec!r}") from None
    if not callable(built):
        raise ModelSpecError(
            f"model factory {spec!r} returned a {type(built).__name__}, not a callable model"
        )
    return built


def _is_module(obj: Any) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


# the user's module -> {device: (its weights' versions, the copy of it that runs there)}: one copy
# per module and device, made again when the module's weights change (trained, or loaded in place)
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prepare(model: Any, device: Any, owned: bool = False) -> Callable:
    """``model`` on ``device`` in eval mode, without changing the object the user holds.

    A module (or a module's bound method, such as ``net.forward``) already on ``device`` and in
    eval mode runs as it is; otherwise a copy of it is moved and switched to eval, once per process
    and device, so that the user's module stays where it was, in the mode it was in (a model in
    training, or on the CPU for other work, is not moved to the GPU under the user's hands).
    ``owned``: the module is this process's own (unpickled from a task), moved in place.
    """
    method = getattr(model, "__func__", None)
    target: Any = getattr(model, "__self__", None) if method is not None else model
    if not _is_module(target):
        return model
    if owned:
        prepared = target.to(device).eval()
    elif _ready(target, device):
        prepared = target
    else:
        prepared = _copy_on(target, device)
    return types.MethodType(method, prepared) if method is not None else prepared


def _ready(module: Any, device: Any) -> bool:
    import itertools

    if any(m.training for m in module.modules()):
        return False
    return all(
        t.device.type == device.type and device.index in (None, t.device.index)
        for t in itertools.chain(module.parameters(), module.buffers())
    )


def _copy_on(module: Any, device: Any) -> Any:
    import copy
    import itertools
    import warnings

    versions = tuple(t._version for t in itertools.chain(module.parameters(), module.buffers()))
    with _COPY_LOCK:
        try:
            copies = _PREPARED.setdefault(module, {})
        except TypeError:  # not weak-referenceable: a copy for this runner alone
            copies = {}
        made = copies.get(str(device))
        if made is None or made[0] != versions:
            try:
                made = (versions, copy.deepcopy(module).to(device).eval())
            except Exception as error:  # a module that cannot be copied
                warnings.warn(
                    f"seamless_dask could not copy the model to run it on {device} ({error}): "
                    f"the module you passed is moved there and set to eval mode in place; call "
                    f"model.to({str(device)!r}).eval() yourself to run it as it is",
                    UserWarning,
                    stacklevel=4,
                )
                made = (versions, module.to(device).eval())
            copies[str(device)] = made
        return made[1]
