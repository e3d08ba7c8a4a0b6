"""Keras masks: the one getter for a tensor's mask, the layers that start a mask, and the
first layer that drops one."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass

from pytest_maskloss.compat import flavours as F
from pytest_maskloss.compat.model import all_layers, is_keras_class

_MASK_ATTRIBUTE = "_keras_mask"


def keras_mask(tensor):
    """The Keras mask carried by ``tensor`` (None without one), on every flavour and backend.

    TensorFlow tensors carry it as an attribute on every flavour. Keras >= 3.6 keeps the masks
    of arrays that take no attributes (JAX, PyTorch) in a table that only its own getter reads;
    it is asked only when Keras 3 is loaded already (nothing is imported here).
    """
    if tensor is None:
        return None
    mask = getattr(tensor, _MASK_ATTRIBUTE, None)
    if mask is not None:
        return mask
    getter = _keras3_getter()
    return getter(tensor) if getter is not None else None


def _keras3_getter():
    keras = sys.modules.get("keras")
    version = str(getattr(keras, "__version__", "") or "")
    if not version[:1].isdigit() or int(version.split(".")[0]) < 3:
        return None
    try:
        from keras.src.backend import get_keras_mask
    except ImportError:  # Keras < 3.6: the attribute is all there is
        return None
    return get_keras_mask


def mask_source_layers(model) -> list:
    """Layers that start a mask: Embedding(mask_zero=True), Masking, or a project layer whose
    class defines compute_mask."""
    sources = []
    for layer in all_layers(model):
        name = type(layer).__name__
        if name == "Embedding" and getattr(layer, "mask_zero", False):
            sources.append(layer)
        elif name == "Masking" or _defines_compute_mask(layer):
            sources.append(layer)
    return sources


def _defines_compute_mask(layer) -> bool:
    for cls in type(layer).__mro__:
        if is_keras_class(cls):
            return False
        if "compute_mask" in cls.__dict__:
            return True
    return False


# How a layer loses the mask (see MaskDropper).
DROPS = "drops"  # a masked input, an unmasked output
CLEARS_INPUTS = "clears-inputs"  # removes the mask from the tensors it is given (shared inputs)
MERGE_UNMASKED_INPUT = "merge-unmasked-input"  # a merge with one input that carries no mask
BACKEND = "backend"  # the backend's arrays keep no mask at all (Keras 3.0–3.5 on JAX)


@dataclass(frozen=True)
class MaskDropper:
    """The first layer after which the mask is gone, and how it lost it."""

    layer: str
    cls: str
    how: str = DROPS
    unmasked_input: str | None = None  # for a merge: the layer whose output carries no mask

    def __str__(self) -> str:
        if self.how == BACKEND:
            return (f"{self.layer} keeps no Keras mask on JAX arrays (they take no _keras_mask "
                    "attribute), so no mask reaches the loss whatever the layers do; fixed in "
                    "Keras 3.6.0")
        if self.how == CLEARS_INPUTS:
            return (f"layer {self.layer!r} ({self.cls}) clears the masks of its inputs: the "
                    "layers that share those inputs (a residual Add, ...) see no mask")
        if self.how == MERGE_UNMASKED_INPUT:
            return (f"layer {self.layer!r} ({self.cls}) drops the mask: its input from "
                    f"{self.unmasked_input!r} carries none, and the merge keeps a mask only when "
                    "every input has one")
        return f"layer {self.layer!r} drops the mask"


def first_mask_dropper(info, model, x):
    """The first layer after which the mask is gone (a MaskDropper), found by running the
    model on ``x``; None when no layer drops it or it cannot be told."""
    if F.backend_keeps_masks(info.flavour, info.version_tuple, info.backend) is False:
        return MaskDropper(f"Keras {info.version}", "", BACKEND)
    if type(model).__name__ != "Sequential":
        return _functional_mask_dropper(info, model, x)
    value, mask = x, None
    for layer in model.layers:
        out = layer(value, mask=mask) if mask is not None and _accepts_mask(layer) else layer(value)
        out_mask = keras_mask(out)
        if out_mask is None and mask is None:
            try:  # a layer can start a mask only as its output's mask
                out_mask = layer.compute_mask(value, None)
            except Exception:
                out_mask = None
        if mask is not None and out_mask is None:
            return MaskDropper(layer.name, type(layer).__name__)
        value, mask = out, out_mask
    return None


def _accepts_mask(layer) -> bool:
    try:
        return "mask" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _as_list(tensors) -> list:
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _producer(tensor) -> str:
    history = getattr(tensor, "_keras_history", None)
    layer = history[0] if history else None
    return getattr(layer, "name", None) or getattr(tensor, "name", "?")


def _functional_mask_dropper(info, model, x):
    """The first layer (in model order) that receives a masked tensor and outputs an unmasked
    one, found by evaluating its inputs and output as sub-models of the model's inputs.

    Each input is evaluated by itself (only its own ancestors run): a merge whose inputs do not
    all carry a mask is named with the unmasked one; when every input carries its mask by
    itself yet the layer's output has none, a layer sharing one of those inputs cleared it in
    place (Keras >= 3.8 ``MultiHeadAttention`` does), and that layer is named.
    """
    if not hasattr(model, "inputs"):
        return None
    model_inputs = getattr(model, "input", None)
    if model_inputs is None:
        model_inputs = model.inputs

    def carries(tensors):
        probe = info.module.Model(model_inputs, list(tensors))
        outs = _as_list(probe(x, training=False))
        return [keras_mask(o) is not None for o in outs]

    layers = [l for l in getattr(model, "layers", []) if type(l).__name__ != "InputLayer"]
    for layer in layers:
        try:
            inputs = _as_list(layer.input)
            alone = [carries([t])[0] for t in inputs]
            if not any(alone) or any(carries(_as_list(layer.output))):
                continue
            if len(inputs) > 1 and not all(alone):
                unmasked = inputs[alone.index(False)]
                return MaskDropper(layer.name, type(layer).__name__, MERGE_UNMASKED_INPUT, _producer(unmasked))
            clearer = _clearer(layers, layer, [t for t, m in zip(inputs, alone) if m], carries)
            if clearer is not None:
                return MaskDropper(clearer.name, type(clearer).__name__, CLEARS_INPUTS)
            return MaskDropper(layer.name, type(layer).__name__)
        except Exception:  # a layer used twice, nested model, ...: no name rather than a wrong one
            continue
    return None


def _clearer(layers, receiver, masked_inputs, carries):
    """Another layer given one of ``masked_inputs`` that leaves it without its mask once it ran."""
    for tensor in masked_inputs:
        for other in layers:
            if other is receiver or not any(t is tensor for t in _as_list(other.input)):
                continue
            if not carries([tensor, other.output])[0]:
                return other
    return None


def output_carries_mask(model, x) -> bool | None:
    """Does a mask reach the model's output on ``x``? None when the model cannot be called."""
    try:
        out = model(x, training=False)
    except Exception:
        return None
    outs = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
    return any(keras_mask(o) is not None for o in outs)
