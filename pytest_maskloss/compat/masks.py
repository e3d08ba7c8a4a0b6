"""Keras masks: the one getter for a tensor's mask, the layers that start a mask, and the
first layer that drops one."""

from __future__ import annotations

import inspect
import sys

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


def first_mask_dropper(info, model, x):
    """The name of the first layer whose input carries a mask and whose output does not, found
    by running the model on ``x`` (None when no layer drops it or it cannot be told)."""
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
            return layer.name
        value, mask = out, out_mask
    return None


def _accepts_mask(layer) -> bool:
    try:
        return "mask" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _functional_mask_dropper(info, model, x):
    """The first layer (in model order) that receives a masked tensor and outputs an unmasked
    one, found by evaluating its inputs and output as sub-models of the model's inputs."""
    if not hasattr(model, "inputs"):
        return None

    def masked(tensors):
        probe = info.module.Model(model.inputs, tensors)
        out = probe(x, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return [keras_mask(o) is not None for o in outs]

    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        try:
            inputs = layer.input
            if not any(masked(inputs if isinstance(inputs, (list, tuple)) else [inputs])):
                continue
            if not any(masked([layer.output])):
                return layer.name
        except Exception:  # a layer used twice, nested model, ...: no name rather than a wrong one
            continue
    return None


def output_carries_mask(model, x) -> bool | None:
    """Does a mask reach the model's output on ``x``? None when the model cannot be called."""
    try:
        out = model(x, training=False)
    except Exception:
        return None
    outs = out if isinstance(out, (list, tuple)) else list(out.values()) if isinstance(out, dict) else [out]
    return any(keras_mask(o) is not None for o in outs)
