"""What the losses and metrics share: the Keras they are built for, its tensor operations,
and the per-token values with their weights ``w * m`` in float32."""

from __future__ import annotations

from pytest_maskloss.compat.detect import process_keras
from pytest_maskloss.compat.ops import tensor_ops

PACKAGE = "pytest_maskloss"  # the package name the classes are registered under for saving

keras = process_keras()
ops = tensor_ops(keras)
register = ops.register(package=PACKAGE)


def resolve_loss(loss):
    """A callable ``(y_true, y_pred) -> per-token values`` for a loss identifier."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # ``Loss.call`` is the unreduced per-element loss (LossFunctionWrapper included).
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(f"MaskedLoss: cannot use {loss!r} as a per-token loss")


def serialize_loss(loss):
    return loss if isinstance(loss, str) else keras.losses.serialize(loss)


def deserialize_loss(config):
    return config if isinstance(config, str) else keras.losses.deserialize(config)


def _rank(x):
    return len(x.shape)


def _to_rank(x, rank):
    """Squeeze trailing 1-axes / append 1-axes until ``x`` has ``rank`` axes."""
    while _rank(x) > rank and x.shape[-1] == 1:
        x = ops.squeeze(x, axis=-1)
    while _rank(x) < rank:
        x = ops.expand_dims(x, axis=-1)
    return x


class TokenTerms:
    """Per-token values and the weights ``w * m``, for a class with ``_per_token_fn`` and
    ``pad_id``."""

    #: how ``pad_id`` is matched against labels with one axis more than the per-token values:
    #: "argmax" (one-hot labels), "all" (every entry equals ``pad_id``)
    _pad_match = "all"

    def _terms(self, y_true, y_pred, sample_weight=None):
        mask = ops.keras_mask(y_pred)
        y_pred = ops.cast(y_pred, "float32")
        y_true_f = ops.convert(y_true)
        if not ops.is_int(y_true_f):
            y_true_f = ops.cast(y_true_f, "float32")
        values = ops.cast(self._per_token_fn(y_true_f, y_pred), "float32")
        rank = _rank(values)
        weights = ops.ones_like(values)
        if mask is not None:
            weights = weights * _to_rank(ops.cast(mask, "float32"), rank)
        if sample_weight is not None:
            weights = weights * _to_rank(ops.cast(ops.convert(sample_weight), "float32"), rank)
        if self.pad_id is not None:
            weights = weights * _to_rank(ops.cast(self._real_labels(y_true, rank), "float32"), rank)
        return values, weights

    def _real_labels(self, y_true, rank):
        labels = ops.convert(y_true)
        if _rank(labels) > rank and labels.shape[-1] == 1:
            labels = ops.squeeze(labels, axis=-1)
        if _rank(labels) > rank and self._pad_match == "argmax":
            return ops.not_equal(ops.cast(ops.argmax(labels, axis=-1), "int32"), int(self.pad_id))
        pad = ops.cast(ops.convert(self.pad_id), labels.dtype)
        if _rank(labels) > rank:
            return ops.any(ops.not_equal(labels, pad), axis=-1)
        return ops.not_equal(labels, pad)
