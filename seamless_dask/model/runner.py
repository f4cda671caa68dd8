"""The model runner: turns batches of tiles into predictions, with the model loaded once per
process.

This is the only module that runs the model; geometry, weights and blending stay importable without
torch. What a model may be, and how it is loaded, is :mod:`seamless_dask.model.loading`; what its
output may be, and the test-time augmentation views, :mod:`seamless_dask.model.outputs`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ..exceptions import ModelOutputError, OptionError
from ..options import ACTIVATIONS, AMP, TTA, TTA_MODES, Activation
from .loading import (
    ModelSpec,
    RegisteredModel,
    checked_spec,
    exit_error,
    import_attribute,
    load,
    spec_token,
)
from .outputs import (
    VIEWS,
    Heads,
    activate,
    check_output,
    segmentation_tensor,
    unview,
    view,
)

# autocast on CUDA; CPU runs float32
AMP_DTYPES = {
    None: None,
    "bf16": "bfloat16",
    "fp16": "float16",
}
_TORCH_DTYPES = {
    np.dtype(t)
    for t in ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
}


@dataclass(frozen=True)
class RunnerConfig:
    """How batches reach the model: batch size, device, input normalisation, output activation.

    Parameters
    ----------
    batch_size
        Tiles in the model at once in one process: a model task alone calls the model with this
        many; tasks running side by side share them (two threads: half each), so that memory does
        not grow with threads.
    device
        ``"auto"`` (CUDA when visible), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    normalize
        ``(mean, std)`` in the input's own units (e.g. 0-255 for uint8 imagery), one value per band
        or one for all bands.
    activation
        ``"softmax"``, ``"sigmoid"`` or ``None``, applied to each tile's output before blending.
    tta
        Averages the activated predictions of several views of each tile, each mapped back first:
        ``"flips"`` (4 mirror views) or ``"d4"`` (8 rotations and mirrors); every view is one model
        call.
    amp
        ``"bf16"`` or ``"fp16"`` autocast on CUDA.
    trust_model
        Allow model files that execute code as they load (``torch.export`` ``.pt2`` files are
        unpickled): only for files whose origin you trust. TorchScript files load without it.
    head
        Which output of a model with several to segment with: a dict key (torchvision's ``"aux"``)
        or a tuple index; ``None``: ``"out"`` or the first.
    process_fn
        MONAI's ``process_fn``: ``process_fn(predictions, tiles) -> predictions``, called on each
        batch between the model and the blend, on the model's device: ``predictions`` ``(N,
        classes, h, w)`` as they would be blended (activated, TTA's views averaged), ``tiles``
        the batch the model saw (normalised). It returns a tensor of ``(N, any, h, w)`` (a
        post-processing, a class merge, a calibration). A function, or an import string
        ``"pkg.module:function"`` (what the command line and remote workers take).

    Raises
    ------
    OptionError
        A value out of its range; the message names the allowed ones.

    Examples
    --------
    >>> from seamless_dask import RunnerConfig
    >>> RunnerConfig(batch_size=16, normalize=((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))).normalize[1]
    (58.4, 57.1, 57.4)
    >>> RunnerConfig(tta="d5")
    Traceback (most recent call last):
    ...
    seamless_dask.exceptions.OptionError: tta must be one of (None, 'flips', 'd4'), got tta='d5':
    use 'flips' or 'd4'
    """

    batch_size: int = 8
    device: str = "auto"
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    activation: Activation | None = "softmax"
    tta: TTA | None = None
    amp: AMP | None = None
    # load model files that run code when loaded (torch.export .pt2: pickle)
    trust_model: bool = False
    # which output of a model with several (torchvision's "aux"); None: "out"/first
    head: str | int | Heads | None = None
    # called on each batch of predictions before the blend (MONAI's process_fn)
    process_fn: Callable[[Any, Any], Any] | str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise OptionError(
                f"batch_size must be a positive int, got batch_size={self.batch_size!r}: use e.g. 8"
            )
        if self.activation not in ACTIVATIONS:
            raise OptionError(
                f"activation must be one of {ACTIVATIONS}, got {self.activation!r}: use e.g. "
                f"'softmax'"
            )
        if self.amp not in AMP_DTYPES:
            raise OptionError(
                f"amp must be one of {tuple(AMP_DTYPES)}, got amp={self.amp!r}: use e.g. 'bf16'"
            )
        if self.tta not in TTA_MODES:
            raise OptionError(
                f"tta must be one of {TTA_MODES}, got tta={self.tta!r}: use 'flips' or 'd4'"
            )
        if not isinstance(self.device, str):
            object.__setattr__(self, "device", str(self.device))
        if self.normalize is not None:
            object.__setattr__(self, "normalize", _as_normalize(self.normalize))
        if self.process_fn is not None and not (
            callable(self.process_fn)
            or (isinstance(self.process_fn, str) and ":" in self.process_fn)
        ):
            raise OptionError(
                f"process_fn must be a function of (predictions, tiles) or an import string "
                f"'pkg.module:function', got {self.process_fn!r}"
            )

    def fill_values(self, bands: int) -> np.ndarray:
        """``(bands,)`` values that stand in for nodata: the normalisation mean (0 after it), else 0."""
        if self.normalize is None:
            return np.zeros(bands, dtype=np.float32)
        return np.broadcast_to(np.asarray(self.normalize[0], dtype=np.float32), (bands,))

    def check_bands(self, bands: int) -> None:
        """Raise if ``normalize`` has a per-band length other than ``bands``."""
        if self.normalize is None:
            return
        for name, values in zip(("mean", "std"), self.normalize, strict=True):
            if len(values) not in (1, bands):
                raise OptionError(
                    f"normalize {name} has {len(values)} values but the image has {bands} bands: "
                    f"give one value per band or a single value for all"
                )


class Launched(NamedTuple):
    """Predictions on their way to the host: ``result()`` waits for them (a no-op on the CPU)."""

    out: Any  # a CPU tensor (pinned on CUDA), complete once ``done`` is
    done: Any  # a ``torch.cuda.Event``, or None

    def result(self) -> np.ndarray:
        """The batch's predictions, ``(tiles, classes, y, x)`` float32, once the device has them."""
        if self.done is not None:
            self.done.synchronize()
        return self.out.numpy()


class ModelRunner:
    """A model spec plus a :class:`RunnerConfig`; loads the model lazily, once per process.

    The only caller of the model: ``segment`` gives each inference task the same runner. Pickling
    keeps only the spec and the config when the spec is a string, so a worker loads the model itself
    from the import string or TorchScript file.

    Parameters
    ----------
    model
        A ``torch.nn.Module``, a TorchScript module or file, a ``torch.export`` ``.pt2`` file (with
        ``trust_model``), a callable on NCHW float32 batches, or an import string
        ``"pkg.module:factory"``.
    config
        How batches reach the model; default :class:`RunnerConfig()`.

    Raises
    ------
    ModelSpecError
        A spec that is none of the above (checked at once; loading happens at first use).

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import ModelRunner, RunnerConfig
    >>> runner = ModelRunner("seamless_dask.testing:brightness", RunnerConfig(device="cpu", activation=None))
    >>> runner.predict(np.full((2, 3, 8, 8), 200, np.float32)).shape  # (tiles, classes, y, x)
    (2, 2, 8, 8)
    """

    def __init__(self, model: ModelSpec, config: RunnerConfig | None = None) -> None:
        self.spec = checked_spec(model)
        self.config = config or RunnerConfig()
        self._model: Callable | None = None
        self._device: Any = None
        self._normalize: tuple | None = None
        self._dtype: Any = None  # the model's input dtype: float32, or float64 for a float64 model
        self._processor: Callable | None = None  # config.process_fn, imported when a string
        self._lock = threading.Lock()
        self._owned = False  # the spec is the user's object: never moved or switched to eval

    def __getstate__(self) -> dict:
        keep_model = not isinstance(self.spec, (str, RegisteredModel))
        return {
            "spec": self.spec,
            "config": self.config,
            "_model": self._model if keep_model else None,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._device = None
        self._normalize = None
        self._dtype = None
        self._processor = None
        self._lock = threading.Lock()
        self._owned = True  # unpickled: this process's own copy of the spec

    def __dask_tokenize__(self) -> tuple:
        return ("seamless_dask.ModelRunner", spec_token(self.spec), self.config)

    def __repr__(self) -> str:
        spec = (
            self.spec if isinstance(self.spec, (str, RegisteredModel)) else type(self.spec).__name__
        )
        return f"ModelRunner({spec!r}, {self.config})"

    @property
    def device(self) -> Any:
        """The ``torch.device`` this process runs the model on."""
        if self._device is None:
            self._device = resolve_device(self.config.device)
        return self._device

    @property
    def model(self) -> Callable:
        """The loaded model, on its device, in eval mode."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = load(
                        self.spec, self.device, self.config.trust_model, owned=self._owned
                    )
        return self._model

    def check(self) -> None:
        """Load the model now, so that a bad spec fails before any work is planned on it."""
        self.model  # noqa: B018  (the property loads it)

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Run ``tiles`` ``(N, bands, h, w)`` through the model: float32 ``(N, classes, h, w)``,
        activated.
        """
        return self.launch(tiles).result()

    def predict_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """:meth:`predict` over ``batches``, keeping one batch in flight on a GPU.

        Batch ``i + 1`` is stacked and queued on the GPU before batch ``i``'s predictions are handed
        back, so the GPU computes while the host prepares the next batch and blends the last one. On
        the CPU this is :meth:`predict` batch by batch.
        """
        pending: Launched | None = None
        for tiles in batches:
            launched = self.launch(tiles)
            if pending is not None:
                yield pending.result()
            pending = launched
        if pending is not None:
            yield pending.result()

    def launch(self, tiles: np.ndarray) -> Launched:
        """Queue ``tiles`` on the model's device; on CUDA this returns before the GPU is done."""
        import torch

        self.check()  # loaded outside inference mode: its weights never become inference tensors
        with torch.inference_mode(), self._autocast():
            x = self._to_input(tiles)
            views = VIEWS[self.config.tta]
            total: Any = None
            for turns, flip_x, flip_y in views:
                out = self._call(view(x, turns, flip_x, flip_y))
                out = out.double() if out.dtype == torch.float64 else out.float()
                out = unview(activate(out, self.config.activation), turns, flip_x, flip_y)
                total = out if total is None else total + out
            total = total / len(views) if len(views) > 1 else total
            if self.config.process_fn is not None:
                total = self._process(total, x)
            if total.device.type != "cuda":
                return Launched(total.cpu(), None)
            host = torch.empty(total.shape, dtype=total.dtype, pin_memory=True)
            host.copy_(total, non_blocking=True)  # device to pinned host memory, in the GPU's queue
            done = torch.cuda.Event()
            done.record()
            return Launched(host, done)

    def _call(self, x: Any) -> Any:
        try:
            raw = self.model(x)
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(
                    f"seamless_dask: raised by the model on a batch of shape {tuple(x.shape)}"
                )
                if _DEVICE_MISMATCH.search(str(error)):
                    error.add_note(
                        f"seamless_dask: the batch was on {x.device} (device="
                        f"{self.config.device!r}); a module is moved there for you, but a plain "
                        "callable's weights are not: pass the module itself, or device= the device "
                        "the callable's weights are on (e.g. device='cpu')"
                    )
            raise
        except SystemExit as escape:
            raise exit_error(
                escape, f"the model, called on a batch of shape {tuple(x.shape)}"
            ) from None
        out = segmentation_tensor(raw, self.config.head)
        check_output(out, tuple(x.shape))
        return out

    def _process(self, predictions: Any, x: Any) -> Any:
        import torch

        where = f"process_fn, called on predictions of shape {tuple(predictions.shape)}"
        try:
            out = self._process_fn()(predictions, x)
        except SystemExit as escape:
            raise exit_error(escape, where) from None
        except Exception as error:
            if hasattr(error, "add_note"):
                error.add_note(f"seamless_dask: raised by {where}")
            raise
        if not isinstance(out, torch.Tensor):
            raise ModelOutputError(
                f"process_fn must return a torch tensor of (tiles, classes, h, w), got "
                f"{type(out).__name__}: return the predictions it was given, changed"
            )
        try:
            check_output(out, tuple(x.shape))
        except ModelOutputError as error:
            words = str(error).replace("the model output", "process_fn's output", 1)
            raise ModelOutputError(words) from None
        return out.double() if out.dtype == torch.float64 else out.float()

    def _process_fn(self) -> Callable:
        if self._processor is None:
            fn = self.config.process_fn
            self._processor = import_attribute(fn) if isinstance(fn, str) else fn
        if not callable(self._processor):
            raise OptionError(
                f"process_fn {self.config.process_fn!r} names a "
                f"{type(self._processor).__name__}, not a function of (predictions, tiles)"
            )
        return self._processor

    def probe(self, bands: int, tile: tuple[int, ...]) -> int:
        """Number of output channels, from one call on a zero tile (which also checks the output
        shape).
        """
        return int(self.predict(np.zeros((1, bands, *tile), dtype=np.float32)).shape[1])

    def _input_dtype(self) -> Any:
        if self._dtype is None:
            self._dtype = _float_dtype(self.model)
        return self._dtype

    def _autocast(self) -> Any:
        import contextlib

        import torch

        amp = AMP_DTYPES[self.config.amp]
        if amp is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, amp))

    def _to_input(self, tiles: np.ndarray) -> Any:
        import torch

        if tiles.dtype not in _TORCH_DTYPES:
            tiles = tiles.astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if (
            self.device.type == "cuda"
        ):  # pinned host memory: the copy to the GPU runs at full bus speed
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device, dtype=self._input_dtype())
        if self.config.normalize is None:
            return x
        if self._normalize is None:
            self._normalize = tuple(
                torch.tensor(v, dtype=x.dtype, device=x.device) for v in self.config.normalize
            )
        shape = (1, -1, *(1,) * (x.ndim - 2))  # per band, over a plane's or a volume's tiles
        mean, std = (v.view(shape) for v in self._normalize)
        return (x - mean) / std


# torch's words for a batch and weights on different devices
_DEVICE_MISMATCH = re.compile(
    r"(same device|Input type \(.*\) and weight type|should be the same|on a different device|"
    r"Expected .*cuda.*cpu|Expected .*cpu.*cuda)"
)


def _float_dtype(model: Any) -> Any:
    """A module's float dtype when its weights are float64 (it is fed float64 tiles), else float32
    (half-precision models run under autocast, ``amp=``, from float32 tiles).
    """
    import torch

    params = getattr(getattr(model, "__self__", model), "parameters", None)
    if callable(params):
        for p in params():
            if p.is_floating_point():
                return torch.float64 if p.dtype == torch.float64 else torch.float32
    return torch.float32


def resolve_device(device: str) -> Any:
    """``"auto"`` is CUDA when a GPU is visible, else CPU; anything else must be a valid, available
    device.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise OptionError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}: {error}"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(
            f"device={device!r} but no CUDA GPU is visible to torch: use device='auto' or 'cpu'"
        )
    return resolved


def _as_normalize(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean, std = value
        mean_t = tuple(float(v) for v in np.atleast_1d(mean))
        std_t = tuple(float(v) for v in np.atleast_1d(std))
    except (TypeError, ValueError):
        raise OptionError(
            f"normalize must be (mean, std), each a number or one number per band, got {value!r}: "
            "e.g. normalize=((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)) for ImageNet on uint8"
        ) from None
    if min(std_t) <= 0 or not all(np.isfinite(mean_t + std_t)):
        raise OptionError(
            f"normalize std must be > 0 and values finite, got mean={mean_t}, std={std_t}"
        )
    return mean_t, std_t
