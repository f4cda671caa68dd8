"""The option values ``segment`` takes, as ``Literal`` types: one source for the type checker, the runtime
checks (``get_args``) and the command line's choices, so the three never drift."""

from __future__ import annotations

from typing import Literal, get_args

Output = Literal["labels", "probabilities", "logits"]
Activation = Literal["softmax", "sigmoid"]
WeightsKind = Literal["trim", "trust", "spline", "gaussian", "constant"]
TTA = Literal["flips", "d4"]
AMP = Literal["bf16", "fp16"]

OUTPUTS: tuple[str, ...] = get_args(Output)
ACTIVATIONS: tuple[str | None, ...] = (*get_args(Activation), None)
WEIGHTS_KINDS: tuple[str, ...] = get_args(WeightsKind)
TTA_MODES: tuple[str | None, ...] = (None, *get_args(TTA))
AMP_MODES: tuple[str | None, ...] = (None, *get_args(AMP))
