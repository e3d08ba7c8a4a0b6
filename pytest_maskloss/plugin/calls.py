"""Which calls the audit observes: the cheap tests on a call's arguments and model that say
padding may reach its loss."""

from __future__ import annotations


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


def pads_in_its_preprocessor(model) -> bool:
    """A KerasHub task with a preprocessor: the padding reaches its loss as sample weights made
    inside the data pipeline, invisible in the call's arguments."""
    return getattr(model, "preprocessor", None) is not None
