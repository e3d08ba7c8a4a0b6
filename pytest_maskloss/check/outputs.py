"""Each model output's loss as the check sees it: its weight in the total, its stock-loss
spec or the user's per-token function, and its per-token values in numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pytest_maskloss.check.lossspec import LossSpec, resolve_loss_spec
from pytest_maskloss.check.reference import activation_unwrapped_by_keras, per_token_loss
from pytest_maskloss.compat import model as M
from pytest_maskloss.errors import MaskLossInputError


@dataclass
class Output:
    name: str
    index: int
    loss_text: str
    spec: LossSpec | None  # a stock loss: the numpy reference computes it
    fn: object  # per_token_loss_fn: the caller's numpy per-token function, or None
    weight: float = 1.0
    # TensorFlow stacks compute a cross-entropy from the logits under a softmax/sigmoid output
    unwrapped: str | None = None
    loss: object = None  # what compile() was given for this output

    @property
    def custom(self) -> bool:
        """No numpy reference: the loss itself is evaluated per token inside the step."""
        return self.spec is None and self.fn is None

    def per_token(self, y_true, y_pred, stack):
        if self.fn is not None:
            return np.asarray(self.fn(np.asarray(y_true), np.asarray(y_pred)), dtype=np.float64)
        return per_token_loss(self.spec, y_true, y_pred, flavour=stack, unwrapped_activation=self.unwrapped)


def resolve_outputs(model, stack: str, per_token_loss_fn) -> list:
    """One Output per output with a loss, or MaskLossInputError saying what cannot be checked."""
    loss = M.compiled_loss(model)
    names = M.output_names(model)
    if loss is None:
        raise MaskLossInputError(
            f"model {model.name!r} was compiled without a loss: there is no reported loss to check"
        )
    if isinstance(loss, dict):
        per_output = [(n, loss.get(n)) for n in names]
    elif isinstance(loss, (list, tuple)):
        per_output = list(zip(names, loss))
    else:
        per_output = [(names[0] if len(names) == 1 else n, loss) for n in names]
    weights = M.loss_weights(model, names)
    layers = M.output_layers(model)
    outputs = []
    for index, (name, item) in enumerate(per_output):
        if item is None:
            continue
        fn = per_token_loss_fn.get(name) if isinstance(per_token_loss_fn, dict) else per_token_loss_fn
        spec = resolve_loss_spec(item)
        text = spec.source if spec is not None else describe_loss(item)
        reason = couples_tokens(item)
        if fn is None and spec is None and reason:
            raise MaskLossInputError(
                f"the loss {text} of output {name!r} is not comparable token by token ({reason}): "
                "pass per_token_loss_fn=fn where fn(y_true, y_pred) returns per-token losses as numpy"
            )
        if fn is not None:
            text += " (reference: per_token_loss_fn)"
        elif spec is None:
            text += " (reference: the loss itself, token by token)"
        layer = layers[index] if index < len(layers) else None
        unwrapped = None
        if layer is not None and spec is not None and not spec.from_logits:
            unwrapped = activation_unwrapped_by_keras(layer, stack)
        outputs.append(Output(name, index, text, spec, fn, weights.get(name, 1.0), unwrapped, item))
    return outputs


_COUPLED = {"ctc": "CTC aligns whole label sequences"}


def couples_tokens(loss) -> str:
    """Why a loss cannot be split into per-token terms ("" when it can)."""
    names = [loss if isinstance(loss, str) else "", getattr(loss, "__name__", ""),
             getattr(loss, "name", "") or "", type(loss).__name__]
    for name in names:
        for key, reason in _COUPLED.items():
            if isinstance(name, str) and key in name.lower():
                return reason
    return ""


def describe_loss(loss) -> str:
    name = getattr(loss, "__name__", None) or type(loss).__name__
    module = getattr(loss, "__module__", None) or type(loss).__module__
    return f"{module}.{name}"


def as_list(structure, names) -> list:
    """Per-output values of a prediction or label structure, in output order."""
    if isinstance(structure, dict):
        return [structure.get(n) for n in names] if all(n in structure for n in names) else list(structure.values())
    if isinstance(structure, (list, tuple)):
        return list(structure)
    return [structure]
