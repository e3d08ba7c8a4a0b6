"""Metrics whose epoch figure is the corpus token mean of a per-token loss (and its ``exp``):
``TokenMeanLoss`` and ``TokenPerplexity``."""

from __future__ import annotations

from pytest_maskloss.keras.terms import (
    TokenTerms,
    deserialize_loss,
    keras,
    ops,
    register,
    resolve_loss,
    serialize_loss,
)


class _TokenMetricBase(TokenTerms, keras.metrics.Metric):
    def __init__(self, loss, pad_id=None, from_logits=None, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype or "float32", **kwargs)
        self.loss = loss
        self.pad_id = pad_id
        self.from_logits = from_logits
        fn = resolve_loss(loss)
        if from_logits is not None and not isinstance(loss, keras.losses.Loss):
            inner = fn

            def fn(y_true, y_pred):
                return inner(y_true, y_pred, from_logits=from_logits)

        self._per_token_fn = fn
        self.total = ops.add_scalar_variable(self, "total")
        self.count = ops.add_scalar_variable(self, "count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def _mean(self):
        return ops.divide_no_nan(ops.convert(self.total), ops.convert(self.count))

    def get_config(self):
        config = {"name": self.name, "pad_id": self.pad_id, "loss": serialize_loss(self.loss)}
        if self.from_logits is not None:
            config["from_logits"] = self.from_logits
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("dtype", None)
        if "loss" in config:
            config["loss"] = deserialize_loss(config["loss"])
        return cls(**config)


@register
class TokenMeanLoss(_TokenMetricBase):
    """Epoch mean of a per-token loss over real tokens: Σ l·w·m / Σ w·m over all batches.

    Args:
        loss: per-token loss (name, function or ``Loss`` instance).
        pad_id: label value that marks padding (besides the Keras mask and zero weights).
        from_logits: passed to the loss function when not None.
    """

    def __init__(self, loss="sparse_categorical_crossentropy", pad_id=None, from_logits=None,
                 name="token_mean_loss", **kwargs):
        super().__init__(loss, pad_id=pad_id, from_logits=from_logits, name=name, **kwargs)

    def result(self):
        return self._mean()


@register
class TokenPerplexity(_TokenMetricBase):
    """``exp`` of the epoch token-mean cross-entropy (named so as not to clash with keras-hub's
    ``Perplexity``). 1.0 before any real token was seen."""

    def __init__(self, from_logits=False, pad_id=None, loss="sparse_categorical_crossentropy",
                 name="token_perplexity", **kwargs):
        super().__init__(loss, pad_id=pad_id, from_logits=from_logits, name=name, **kwargs)

    def result(self):
        return ops.exp(self._mean())
