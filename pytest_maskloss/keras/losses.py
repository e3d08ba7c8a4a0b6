"""Losses whose reported value is the mean over real tokens: ``MaskedLoss`` around any
per-token loss, and masked versions of the stock losses.

How they stay exact: they override ``Loss.__call__`` (the level at which Keras hands the loss
``y_pred`` with its mask and the sample weights, and after which it applies nothing but the
distribution scaling described below) and compute the ratio of sums themselves, so no Keras
reduction rescales the result. Keras 2 (tf.keras 2.10, tf_keras) multiplies the mask into the
sample weights before calling the loss, Keras 3 leaves the mask on ``y_pred``; a ratio of sums
is the same either way. The loss declares ``reduction="sum"``: Keras 2 then neither rescales
the mask nor divides the loss by the number of replicas, and multiplies only the *reported*
value by the number of replicas; Keras 3 never scales a loss that does its own reduction and
multiplies the reported value by the number of replicas too. Under ``tf.distribute`` each
replica's gradient comes from its share ``sum_replica(l*w*m) / sum_global(w*m)`` (Keras sums
the replicas' gradients: the gradient of the global token mean), while its value is
``global_mean / replicas`` (through ``stop_gradient``): Keras reports ``replicas * value``
averaged over the replicas weighted by their batch sizes, which is the global token mean
whatever the split, and the values summed over replicas are the global mean.
"""

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


@register
class MaskedLoss(TokenTerms, keras.losses.Loss):
    """Wrap a per-token Keras loss so that the reported loss is the mean over real tokens.

    Args:
        loss: a per-token loss: a name (``"sparse_categorical_crossentropy"``), a function
            ``(y_true, y_pred) -> per-token values`` or a ``keras.losses.Loss`` instance (its
            ``call``, the unreduced values, is used; its reduction is ignored).
        pad_id: label value that marks padding (in addition to the Keras mask and zero
            sample weights). ``None``: labels are not inspected.
        name: loss name.
    """

    def __init__(self, loss="sparse_categorical_crossentropy", pad_id=None, name=None, **kwargs):
        kwargs.pop("reduction", None)
        kwargs.pop("dtype", None)
        super().__init__(name=name or _default_name(self, loss), reduction="sum", **kwargs)
        self.loss = loss
        self.pad_id = pad_id
        self._per_token_fn = resolve_loss(loss)

    def __call__(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        numerator = ops.sum(values * weights)
        denominator = ops.stop_gradient(ops.sum(weights))
        replicas = ops.replicas_in_sync()
        if replicas == 1:
            return ops.divide_no_nan(numerator, denominator)
        # tf.distribute: the gradients must come from this replica's share of the global token
        # mean (Keras sums the replicas' gradients) ...
        global_numerator, global_denominator = ops.global_sums(numerator, denominator)
        share = ops.divide_no_nan(numerator, global_denominator)
        # ... and the value must be global_mean / replicas on every replica: Keras reports
        # replicas * value averaged over replicas weighted by their batch sizes, which is then
        # the global mean even when a batch is split unevenly, and the values summed over the
        # replicas (a custom loop's strategy.reduce) are the global mean too.
        report = ops.divide_no_nan(global_numerator, global_denominator) / float(replicas)
        return share + ops.stop_gradient(report - share)

    def call(self, y_true, y_pred):
        """Unreduced per-token loss (padding not removed): what the wrapper averages."""
        return self._per_token_fn(y_true, y_pred)

    @property
    def inner_loss(self):
        """The wrapped per-token loss as a Keras identifier (string, function or ``Loss``)."""
        return self.loss

    def get_config(self):
        return {"loss": serialize_loss(self.loss), "pad_id": self.pad_id, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("reduction", None)
        if "loss" in config:
            config["loss"] = deserialize_loss(config["loss"])
        return cls(**config)


def _default_name(obj, loss):
    if type(obj) is not MaskedLoss:
        return None
    base = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", "loss"))
    return f"masked_{base}"


class _StockMasked(MaskedLoss):
    """A masked version of a stock loss function with keyword options."""

    _fn_name = None
    _stock_class = None
    _options = ()

    def __init__(self, pad_id=None, name=None, **kwargs):
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in self._options}
        fn = getattr(keras.losses, self._fn_name)
        self._fn_options = options

        def per_token(y_true, y_pred):
            return fn(y_true, y_pred, **options)

        per_token.__name__ = self._fn_name
        super().__init__(loss=per_token, pad_id=pad_id, name=name, **kwargs)

    @property
    def inner_loss(self):
        """The stock Keras ``Loss`` this class averages over real tokens."""
        return getattr(keras.losses, self._stock_class)(**self._fn_options)

    def get_config(self):
        return {"pad_id": self.pad_id, "name": self.name, **self._fn_options}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("reduction", None)
        config.pop("loss", None)
        return cls(**config)


@register
class MaskedSparseCategoricalCrossentropy(_StockMasked):
    """``sparse_categorical_crossentropy`` averaged over real tokens (see ``MaskedLoss``)."""

    _fn_name = "sparse_categorical_crossentropy"
    _stock_class = "SparseCategoricalCrossentropy"
    _options = ("from_logits",)

    def __init__(self, from_logits=False, pad_id=None, name="masked_sparse_categorical_crossentropy",
                 ignore_class=None, **kw):
        # ignore_class: the stock loss's name for the same thing (a rewrite keeps it working)
        pad_id = ignore_class if pad_id is None else pad_id
        super().__init__(pad_id=pad_id, name=name, from_logits=from_logits, **kw)


@register
class MaskedCategoricalCrossentropy(_StockMasked):
    """``categorical_crossentropy`` over real tokens; ``pad_id`` matches the argmax label."""

    _fn_name = "categorical_crossentropy"
    _stock_class = "CategoricalCrossentropy"
    _options = ("from_logits", "label_smoothing")
    _pad_match = "argmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, pad_id=None,
                 name="masked_categorical_crossentropy", **kw):
        super().__init__(pad_id=pad_id, name=name, from_logits=from_logits,
                         label_smoothing=label_smoothing, **kw)


@register
class MaskedBinaryCrossentropy(_StockMasked):
    """``binary_crossentropy`` over real tokens (per token = mean over its last axis)."""

    _fn_name = "binary_crossentropy"
    _stock_class = "BinaryCrossentropy"
    _options = ("from_logits", "label_smoothing")

    def __init__(self, from_logits=False, label_smoothing=0.0, pad_id=None,
                 name="masked_binary_crossentropy", **kw):
        super().__init__(pad_id=pad_id, name=name, from_logits=from_logits,
                         label_smoothing=label_smoothing, **kw)


@register
class MaskedMeanSquaredError(_StockMasked):
    """``mean_squared_error`` over real positions (per position = mean over its last axis)."""

    _fn_name = "mean_squared_error"
    _stock_class = "MeanSquaredError"

    def __init__(self, pad_id=None, name="masked_mean_squared_error", **kw):
        super().__init__(pad_id=pad_id, name=name, **kw)


def masked_sparse_categorical_crossentropy(y_true, y_pred, sample_weight=None, from_logits=False,
                                           pad_id=None):
    """Functional form: the token mean of sparse categorical cross-entropy for one batch.

    Use the ``Masked*`` classes in ``compile``: a plain function passed there is reduced by
    Keras, which divides by all positions.
    """
    return MaskedSparseCategoricalCrossentropy(from_logits=from_logits, pad_id=pad_id)(
        y_true, y_pred, sample_weight
    )
