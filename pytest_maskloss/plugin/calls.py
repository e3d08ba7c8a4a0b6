"""What the check is given for an audited call: the call's own data arguments (cut as Keras
cuts a ``validation_split``), or the reason the call cannot be audited."""

from __future__ import annotations

import math

from pytest_maskloss.check.data import is_one_shot, leading_dim, slice_rows


def has_zero_weights(bound) -> bool:
    """Does the call pass zero sample weights (or a dataset yielding weights)?"""
    sw = bound.get("sample_weight")
    if sw is not None:
        import numpy as np

        values = sw.values() if isinstance(sw, dict) else sw if isinstance(sw, (list, tuple)) else [sw]
        try:
            return any(bool(np.any(np.asarray(v) == 0)) for v in values)
        except Exception:
            return False
    spec = getattr(bound.get("x"), "element_spec", None)  # a tf.data.Dataset of (x, y, sample_weight)
    return isinstance(spec, tuple) and len(spec) == 3


def check_data(method, bound):
    """The check's data arguments for a call, or the reason the call cannot be audited."""
    x, y, sw = bound.get("x"), bound.get("y"), bound.get("sample_weight")
    if x is None:
        return "no x given (nothing to read the data from)"
    if is_one_shot(x):
        return "one-shot generator: the data cannot be read a second time"
    if bound.get("class_weight"):
        return "class_weight is not modelled by the masked reference"
    data = {"x": x, "y": y, "sample_weight": sw}
    if method in ("train_on_batch", "test_on_batch"):
        data["batch_size"] = leading_dim(x)
        return data
    data["batch_size"] = bound.get("batch_size")
    data["steps"] = bound.get("steps_per_epoch" if method == "fit" else "steps")
    split = bound.get("validation_split") or 0.0
    if method == "fit" and split:
        if y is None or not _is_array_like(x):
            return "validation_split with non-array data"
        stop = int(math.floor(leading_dim(x) * (1.0 - split)))  # Keras trains on the first part
        for key in ("x", "y", "sample_weight"):
            data[key] = slice_rows(data[key], 0, stop)
    return data


def _is_array_like(x) -> bool:
    if isinstance(x, dict):
        return all(hasattr(v, "shape") for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(hasattr(v, "shape") for v in x)
    return hasattr(x, "shape")
