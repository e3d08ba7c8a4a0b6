"""Numpy reference for Keras per-token losses: :func:`per_token_loss` computes the per-element
loss *before* masking and reduction, the way Keras computes it, so that a masked mean over these
values is an independent reference for the loss Keras reports. (What ``model.loss`` holds is
mapped to a :class:`LossSpec` by ``pytest_maskloss.check.lossspec``; both are re-exported here.)

This module imports numpy only: importing it never loads TensorFlow, Keras or JAX.

Stack differences that exceed float32 tolerance (measured, see tests/runtime/test_reference.py)
and that :func:`per_token_loss` therefore models through ``flavour`` (a stack name of
``compat.flavours``; the facts are asked there):

* sparse categorical cross-entropy from probabilities: Keras 3 on TensorFlow, tf_keras and
  tf.keras clip the probabilities to ``[eps, 1 - eps]`` and then feed ``log(p)`` to a softmax
  cross-entropy, which renormalises by the sum of the *clipped* probabilities; Keras 3 on JAX
  (and torch, numpy) divide by the sum first and clip afterwards. With exact zeros in a large
  vocabulary the two differ by about ``n_zeros * 1e-7`` (8e-4 for V = 8000).
* binary cross-entropy from probabilities: tf_keras and tf.keras take ``log(p + eps)`` and
  ``log(1 - p + eps)`` after clipping; Keras 3 takes ``log(p)`` and ``log(1 - p)``. At a
  clipped probability the two differ by ``log 2``.

Everything else matches across the four stacks to float32 tolerance.

A third difference is bigger and depends on the model, not only the stack: on the TensorFlow
stacks (Keras 3 on TensorFlow, tf_keras, tf.keras) a cross-entropy whose ``y_pred`` was made
by a ``softmax`` or ``sigmoid`` activation is computed from the logits *under* the activation
(Keras keeps them on the tensor as ``_keras_logits``, or finds the Softmax/Sigmoid op in the
graph), so no clipping happens at all; Keras 3 on JAX always uses the probabilities. Pass
``unwrapped_activation`` (see :func:`activation_unwrapped_by_keras`) to get that value from
the probabilities.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from pytest_maskloss.check.lossspec import LossSpec, resolve_loss_spec, supported_losses
from pytest_maskloss.compat import flavours as F
from pytest_maskloss.compat.detect import current_stack
from pytest_maskloss.compat.model import is_keras_class

__all__ = [
    "FLAVOURS",
    "activation_unwrapped_by_keras",
    "LossSpec",
    "detect_flavour",
    "negative_labels",
    "per_token_loss",
    "resolve_loss_spec",
    "supported_losses",
    "valid_token_mask",
]

# Keras' backend.epsilon() default; every stack clips with this value.
EPSILON = 1e-7
# The stacks ``flavour=`` accepts (their names come from compat.flavours).
FLAVOURS = F.STACKS
detect_flavour = current_stack  # the stack of the Keras already imported (nothing imported)

def _layer_activation_name(layer: Any) -> str | None:
    if type(layer).__name__ == "Softmax" and is_keras_class(type(layer)):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def activation_unwrapped_by_keras(layer: Any, flavour: str | None = None) -> str | None:
    """``"softmax"``/``"sigmoid"`` when Keras computes a cross-entropy on ``layer``'s output
    from the logits under that activation, else None.

    ``layer`` is the layer whose output the loss receives. Measured on all four stacks
    (fit/evaluate): the logits are used on Keras 3 with TensorFlow, tf_keras and tf.keras for
    ``Dense(..., activation="softmax"|"sigmoid")``, an ``Activation`` layer and a ``Softmax``
    layer, also behind a ``Masking`` mask; not behind ``TimeDistributed`` (its reshape hides
    the op) and never on Keras 3 with JAX. A wrapper layer therefore gives None.
    """
    flavour = _check_flavour(flavour)
    if not F.crossentropy_from_logits_under_activation(flavour):
        return None
    return _layer_activation_name(layer)


def _check_flavour(flavour: str | None) -> str:
    if flavour is None:
        return detect_flavour()
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    return flavour


# --------------------------------------------------------------------------------------
# Per-token losses
# --------------------------------------------------------------------------------------


def _clip_bounds(dtype: np.dtype) -> tuple[float, float]:
    """Keras' clip bounds as the backend rounds them for the input's dtype.

    In float32, ``1 - 1e-7`` rounds to ``1 - 2**-23``; using the float64 value instead would
    make ``-log(1 - p)`` at a clipped ``p = 1`` come out 16.12 where Keras has 15.94.
    """
    if np.dtype(dtype).itemsize <= 4:
        low = np.float32(EPSILON)
        return float(low), float(np.float32(1.0) - low)
    return EPSILON, 1.0 - EPSILON


def _jax_x64_enabled() -> bool:
    jax = sys.modules.get("jax")
    try:
        return bool(jax.config.jax_enable_x64)
    except AttributeError:  # jax not imported (or an unusual build): JAX's default is off
        return False


def _as_float(x: Any, flavour: str) -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize < 4:
        # Integers, and float16/bfloat16 outputs of mixed precision: Keras 3 Loss objects
        # cast to float32 (their dtype); tf_keras would compute in float16, which only float16
        # tolerances (about 1e-3) can compare anyway.
        x = x.astype(np.float32)
    elif x.dtype == np.float64 and F.parse_stack(flavour)[1] == F.JAX and not _jax_x64_enabled():
        # JAX without x64 turns float64 arrays into float32 before computing anything.
        x = x.astype(np.float32)
    return x


def _align_ranks(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras' squeeze_or_expand_to_same_rank, as the Loss wrapper applies it.

    compile() always wraps losses in a Loss object whose call() aligns ranks that differ by
    one through a trailing axis of size 1. Note the consequence Keras has: labels (B, T)
    with predictions (B, T, 1) squeeze the predictions, and a loss that averages the last
    axis then averages over T.
    """
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        if y_pred.ndim == 1:
            y_pred = y_pred[..., None]
        else:
            y_true = y_true[..., 0]
    elif y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        if y_true.ndim == 1:
            y_true = y_true[..., None]
        else:
            y_pred = y_pred[..., 0]
    return y_true, y_pred


def _sparse_labels(spec: LossSpec, y_true: Any, y_pred: np.ndarray) -> np.ndarray:
    labels = np.asarray(y_true)
    if labels.ndim == y_pred.ndim and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.shape != y_pred.shape[:-1]:
        raise ValueError(
            f"sparse labels of shape {labels.shape} do not match predictions of shape "
            f"{y_pred.shape} (expected {y_pred.shape[:-1]} or {y_pred.shape[:-1] + (1,)})"
        )
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.trunc(labels)):
            raise ValueError("sparse labels must be whole numbers")
    return labels.astype(np.int64)


def valid_token_mask(
    spec: LossSpec, y_true: Any, *, prediction_ndim: int | None = None
) -> np.ndarray | None:
    """Positions Keras scores, for a sparse loss with ``ignore_class``; None otherwise.

    Keras gives ignored positions a loss of 0 and attaches a mask that excludes them from
    the denominator, so a reference mean should treat them like padding. The mask has the
    per-token loss's shape: labels with a trailing axis of 1 are squeezed when their rank
    equals ``prediction_ndim`` (Keras' rule); without it, when they have rank 3 or more
    (``(B, T, 1)`` sequence labels).
    """
    if spec.name != "sparse_categorical_crossentropy" or spec.ignore_class is None:
        return None
    labels = np.asarray(y_true)
    squeeze = labels.ndim == prediction_ndim if prediction_ndim is not None else labels.ndim >= 3
    if squeeze and labels.shape[-1] == 1:
        labels = labels[..., 0]
    return labels != spec.ignore_class


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    """log-sum-exp over the last axis, stable (max subtracted), in float64."""
    peak = np.max(logits, axis=-1, keepdims=True)
    # exp in the input precision is enough: each term has relative error ~1e-7 and the
    # terms are summed in float64. On 32x128x8000 float32 logits a float64 exp measured
    # 5-8 times slower.
    shifted = np.exp(logits - peak)
    total = np.sum(shifted, axis=-1, dtype=np.float64)
    return peak[..., 0].astype(np.float64) + np.log(total)


def _check_label_range(spec: LossSpec, labels: np.ndarray, vocabulary: int) -> None:
    # TensorFlow raises on such labels and JAX silently scores them 0; neither is a value
    # worth reproducing.
    if labels.size and (labels.min() < 0 or labels.max() >= vocabulary):
        raise ValueError(
            f"sparse labels must lie in [0, {vocabulary}); got "
            f"[{labels.min()}, {labels.max()}]"
            + ("" if spec.ignore_class is None else f" besides ignore_class={spec.ignore_class}")
        )


def _row_sum(y_pred: np.ndarray) -> np.ndarray:
    """Sum over the last axis as float64; float32 inputs are summed pairwise in float32
    (relative error about 1e-7 · log2(V), below Keras' own float32 arithmetic) because a
    float64 accumulation over a large vocabulary costs twice the time."""
    if y_pred.dtype == np.float32:
        return np.sum(y_pred, axis=-1).astype(np.float64)
    return np.sum(y_pred, axis=-1, dtype=np.float64)


def _clipped_row_sum(y_pred: np.ndarray, low: float, high: float) -> np.ndarray:
    """Σ clip(p, low, high) over the last axis without clipping every row.

    A row whose smallest entry is at least ``low`` needs no clipping at all (an entry above
    ``high`` forces the others below ``low``, so it is caught too): its clipped sum is its
    plain sum. Only the other rows are clipped and summed.
    """
    total = _row_sum(y_pred)
    needs_clip = np.min(y_pred, axis=-1) < low
    if np.any(needs_clip):
        rows = y_pred[needs_clip]
        total[needs_clip] = _row_sum(np.clip(rows, low, high))
    return total


def negative_labels(spec: LossSpec, y_true: Any, prediction_ndim: int) -> np.ndarray | None:
    """Where a sparse cross-entropy's labels are negative (``-100``, ``-1`` padding) and not its
    ``ignore_class``, with the per-token loss's shape; None for other losses or when there are
    none. Keras 3 on JAX (and on PyTorch for ``-100``) scores such labels 0 and still counts them
    in the divisor (``compat.flavours.sparse_labels_scored_zero``); TensorFlow rejects them."""
    if spec.name not in ("sparse_categorical_crossentropy", "crossentropy"):
        return None
    labels = np.asarray(y_true)
    if labels.ndim == prediction_ndim and labels.shape[-1:] == (1,):
        labels = labels[..., 0]
    if labels.ndim != prediction_ndim - 1 or not np.issubdtype(labels.dtype, np.number):
        return None
    negative = labels < 0
    if spec.ignore_class is not None:
        negative &= labels != spec.ignore_class
    return negative if np.any(negative) else None


def scored_positions(spec: LossSpec, labels: np.ndarray, flavour: str):
    """Where Keras scores a sparse label (None: everywhere): not at ``ignore_class``, nor at
    negative labels on the stacks that score them 0."""
    valid = None
    if spec.ignore_class is not None:
        valid = labels != spec.ignore_class
    zero = F.sparse_labels_scored_zero(flavour, labels)
    if zero is not None and np.any(zero):
        valid = ~zero if valid is None else valid & ~zero
    return valid


def _picked_prediction(spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str):
    """The prediction at each sparse label, and where the position is scored
    (``scored_positions``)."""
    labels = _sparse_labels(spec, y_true, y_pred)
    valid = scored_positions(spec, labels, flavour)
    if valid is not None:
        labels = np.where(valid, labels, 0)
    _check_label_range(spec, labels, y_pred.shape[-1])
    return np.take_along_axis(y_pred, labels[..., None], axis=-1)[..., 0], valid


def _sparse_categorical_crossentropy(
    spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str
) -> np.ndarray:
    if spec.axis not in (-1, y_pred.ndim - 1):
        raise ValueError(f"sparse categorical cross-entropy needs axis=-1, got {spec.axis}")
    picked, valid = _picked_prediction(spec, y_true, y_pred, flavour)
    if spec.from_logits:
        loss = _logsumexp(y_pred) - picked.astype(np.float64)
    else:
        low, high = _clip_bounds(y_pred.dtype)
        if F.sparse_crossentropy_renormalises_clipped(flavour):
            # log of the clipped probabilities goes through a softmax cross-entropy, which
            # divides by the sum of the clipped probabilities.
            clipped_sum = _clipped_row_sum(y_pred, low, high)
            loss = np.log(clipped_sum) - np.log(np.clip(picked.astype(np.float64), low, high))
        else:
            total = _row_sum(y_pred)
            loss = -np.log(np.clip(picked.astype(np.float64) / total, low, high))
    if valid is not None:
        loss = np.where(valid, loss, 0.0)
    return loss


def _categorical_crossentropy(
    spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str
) -> np.ndarray:
    target = np.asarray(y_true, dtype=np.float64)
    if target.shape != y_pred.shape:
        raise ValueError(
            f"categorical labels of shape {target.shape} do not match predictions of shape "
            f"{y_pred.shape}"
        )
    axis = spec.axis
    if spec.label_smoothing:
        target = target * (1.0 - spec.label_smoothing) + spec.label_smoothing / y_pred.shape[axis]
    if spec.from_logits:
        pred = np.moveaxis(y_pred, axis, -1)
        log_prob = np.moveaxis(
            pred.astype(np.float64) - _logsumexp(pred)[..., None], -1, axis
        )
    else:
        low, high = _clip_bounds(y_pred.dtype)
        total = np.sum(y_pred, axis=axis, keepdims=True, dtype=np.float64)
        log_prob = np.log(np.clip(y_pred / total, low, high))
    return -np.sum(target * log_prob, axis=axis)


def _binary_crossentropy(
    spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str
) -> np.ndarray:
    target, pred = _align_ranks(np.asarray(y_true, dtype=np.float64), y_pred)
    if spec.label_smoothing:
        target = target * (1.0 - spec.label_smoothing) + 0.5 * spec.label_smoothing
    if spec.from_logits:
        z = pred.astype(np.float64)
        # max(z, 0) - z*t + log(1 + exp(-|z|)): TensorFlow's stable form, equal to JAX's
        # -t*log_sigmoid(z) - (1-t)*log_sigmoid(-z).
        elementwise = np.maximum(z, 0.0) - z * target + np.log1p(np.exp(-np.abs(z)))
    else:
        low, high = _clip_bounds(pred.dtype)
        p = np.clip(pred.astype(np.float64), low, high)
        if F.binary_crossentropy_adds_epsilon(flavour):
            elementwise = -(
                target * np.log(p + EPSILON) + (1.0 - target) * np.log(1.0 - p + EPSILON)
            )
        else:
            elementwise = -(target * np.log(p) + (1.0 - target) * np.log(1.0 - p))
    return np.mean(elementwise, axis=spec.axis)


def _regression(spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str) -> np.ndarray:
    target, pred = _align_ranks(np.asarray(y_true, dtype=np.float64), y_pred)
    p = pred.astype(np.float64)
    name = spec.name
    if name == "mean_squared_error":
        elementwise = np.square(target - p)
    elif name == "mean_absolute_error":
        elementwise = np.abs(target - p)
    elif name == "mean_absolute_percentage_error":
        elementwise = 100.0 * np.abs((target - p) / np.maximum(np.abs(target), EPSILON))
    elif name == "mean_squared_logarithmic_error":
        elementwise = np.square(
            np.log(np.maximum(p, EPSILON) + 1.0) - np.log(np.maximum(target, EPSILON) + 1.0)
        )
    elif name == "huber":
        error = p - target
        abs_error = np.abs(error)
        delta = spec.delta
        elementwise = np.where(
            abs_error <= delta, 0.5 * np.square(error), delta * abs_error - 0.5 * delta**2
        )
    elif name == "log_cosh":
        x = p - target
        # log(cosh(x)) = x + softplus(-2x) - log 2, stable for large |x|.
        elementwise = x + np.logaddexp(0.0, -2.0 * x) - np.log(2.0)
    elif name == "poisson":
        elementwise = p - target * np.log(p + EPSILON)
    else:  # pragma: no cover - guarded by the dispatch table
        raise AssertionError(name)
    return np.mean(elementwise, axis=-1)


def _kl_divergence(spec: LossSpec, y_true: Any, y_pred: np.ndarray, flavour: str) -> np.ndarray:
    low, _ = _clip_bounds(y_pred.dtype)
    target = np.clip(np.asarray(y_true, dtype=np.float64), low, 1.0)
    pred = np.clip(y_pred.astype(np.float64), low, 1.0)
    return np.sum(target * np.log(target / pred), axis=-1)


def _auto_crossentropy_name(y_true: Any, y_pred: np.ndarray) -> str:
    """Keras 3's compile("crossentropy"): the loss is chosen from the shapes."""
    y_true_shape = np.shape(y_true)
    if y_pred.shape[-1] == 1:
        return "binary_crossentropy"
    if len(y_true_shape) < y_pred.ndim or y_true_shape[-1] == 1:
        return "sparse_categorical_crossentropy"
    return "categorical_crossentropy"


def _exact_from_activation(
    spec: LossSpec, y_true: Any, y_pred: np.ndarray, activation: str, flavour: str
) -> np.ndarray:
    """The cross-entropy Keras computes from the logits under ``y_pred``'s activation.

    ``-log p`` of the activation's output is the log-softmax / log-sigmoid of those logits up
    to the float32 rounding of ``p`` (relative 6e-8), so no clipping applies. Where ``p``
    underflowed to 0 (or a sigmoid rounded to 1) the logits' value is not recoverable and
    the result is ``inf``; for a sigmoid, ``1 - p`` loses precision as ``p`` nears 1
    (absolute error about 6e-8 / (1 - p)).
    """
    expected = "sigmoid" if spec.name == "binary_crossentropy" else "softmax"
    if activation != expected:
        raise ValueError(
            f"Keras computes {spec.name} on a {activation} output from the logits under the "
            f"{activation}, as if they fed a {expected}; those values cannot be recovered "
            "from the probabilities: supply the logits"
        )
    with np.errstate(divide="ignore"):
        if spec.name == "sparse_categorical_crossentropy":
            # only the picked probability and the row sum are needed: no float64 copy of the
            # (batch, time, vocabulary) array, which dominates the cost at large vocabularies
            picked, valid = _picked_prediction(spec, y_true, y_pred, flavour)
            loss = np.log(_row_sum(y_pred)) - np.log(picked.astype(np.float64))
            return loss if valid is None else np.where(valid, loss, 0.0)
    p = y_pred.astype(np.float64)
    with np.errstate(divide="ignore"):
        if spec.name == "categorical_crossentropy":
            target = np.asarray(y_true, dtype=np.float64)
            axis = spec.axis
            if spec.label_smoothing:
                target = target * (1.0 - spec.label_smoothing) + (
                    spec.label_smoothing / y_pred.shape[axis]
                )
            log_prob = np.log(p) - np.log(np.sum(p, axis=axis, keepdims=True))
            # A zero target contributes nothing, also where p underflowed (finite logits).
            return -np.sum(np.where(target != 0, target * log_prob, 0.0), axis=axis)
        target, p = _align_ranks(np.asarray(y_true, dtype=np.float64), p)
        if spec.label_smoothing:
            target = target * (1.0 - spec.label_smoothing) + 0.5 * spec.label_smoothing
        positive = np.where(target != 0, target * np.log(p), 0.0)
        negative = np.where(target != 1, (1.0 - target) * np.log1p(-p), 0.0)
        return np.mean(-(positive + negative), axis=spec.axis)


_CROSSENTROPIES = {
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
}

_DISPATCH = {
    "sparse_categorical_crossentropy": _sparse_categorical_crossentropy,
    "categorical_crossentropy": _categorical_crossentropy,
    "binary_crossentropy": _binary_crossentropy,
    "mean_squared_error": _regression,
    "mean_absolute_error": _regression,
    "mean_absolute_percentage_error": _regression,
    "mean_squared_logarithmic_error": _regression,
    "huber": _regression,
    "log_cosh": _regression,
    "poisson": _regression,
    "kl_divergence": _kl_divergence,
}


def per_token_loss(
    spec: LossSpec,
    y_true: Any,
    y_pred: Any,
    *,
    flavour: str | None = None,
    unwrapped_activation: str | None = None,
) -> np.ndarray:
    """Per-element loss before masking and reduction, as Keras computes it (float64).

    Shapes follow Keras: losses that reduce the last axis return ``y_pred.shape[:-1]``.
    Sparse labels may be ``(B, T)`` or ``(B, T, 1)`` and must lie in ``[0, V)``; with
    ``spec.ignore_class`` the ignored positions get 0 (as in Keras; see
    :func:`valid_token_mask`), and so do the negative labels Keras 3 on JAX or PyTorch scores 0
    (see :func:`negative_labels`). Element-wise losses first align ranks the way Keras' Loss
    wrapper does (see ``_align_ranks``).

    Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` with the bounds rounded to the input's
    precision, as Keras does. ``flavour`` (one of :data:`FLAVOURS`; None detects the Keras
    already imported, see :func:`detect_flavour`) only matters for sparse cross-entropy and
    binary cross-entropy from probabilities; see the module docstring.

    ``unwrapped_activation`` (``"softmax"``, ``"sigmoid"`` or None; see
    :func:`activation_unwrapped_by_keras`) says that Keras computed a cross-entropy from the
    logits under ``y_pred``'s activation: the value is then ``-log p`` without clipping, with
    ``from_logits`` ignored as Keras ignores it there. Other losses ignore the argument.
    """
    flavour = _check_flavour(flavour)
    y_pred = _as_float(y_pred, flavour)
    name = spec.name
    if name == "crossentropy":
        name = _auto_crossentropy_name(y_true, y_pred)
        spec = LossSpec(name=name, from_logits=spec.from_logits, source=spec.source)
    if unwrapped_activation is not None and name in _CROSSENTROPIES:
        if unwrapped_activation not in ("softmax", "sigmoid"):
            raise ValueError(f"unknown activation {unwrapped_activation!r}")
        return _exact_from_activation(spec, y_true, y_pred, unwrapped_activation, flavour)
    compute = _DISPATCH.get(name)
    if compute is None:
        raise ValueError(f"no reference for loss {spec.name!r}; supported: {supported_losses()}")
    return compute(spec, y_true, y_pred, flavour)
