"""Token-exact masked losses and token-level metrics to put in ``model.compile``.

Import this module in a training script (it does not need pytest)::

    from pytest_maskloss.keras import (
        MaskedSparseCategoricalCrossentropy, TokenMeanLoss, TokenPerplexity)

    model.compile(
        optimizer="adam",
        loss=MaskedSparseCategoricalCrossentropy(from_logits=True),
        metrics=[TokenMeanLoss("sparse_categorical_crossentropy", from_logits=True),
                 TokenPerplexity(from_logits=True)],
    )

What the reported figures are, on every supported stack (Keras 3 on TensorFlow or JAX,
tf_keras, tf.keras 2.10):

* the loss of a batch is ``sum(l * w * m) / sum(w * m)``: ``l`` the per-token loss, ``w`` the
  sample weights (1 when none are given), ``m`` the padding mask, which is the product of the
  Keras mask on the model output, ``sample_weight != 0`` and (optionally) ``labels != pad_id``.
  A batch of nothing but padding gives 0.
* under ``tf.distribute`` the denominator is the number of real tokens of the whole step (all
  replicas), so the loss and its gradients are those of a single-device run.
* the metrics keep ``sum(l * w * m)`` and ``sum(w * m)`` as variables: their epoch figure is the
  corpus token mean (and its ``exp`` the token perplexity), whatever the padded lengths and
  numbers of real tokens of the batches, and across replicas.

How it stays exact: the losses override ``Loss.__call__`` (the level at which Keras hands the
loss ``y_pred`` with its mask and the sample weights, and after which it applies nothing but
the distribution scaling described below) and compute the ratio of sums themselves, so no
Keras reduction rescales the result: Keras 2 (tf.keras 2.10, tf_keras) multiplies the mask into
the sample weights (2.10 and later alike) before calling the loss, Keras 3 leaves the mask on
``y_pred``; a ratio of sums is the same either way. The loss declares ``reduction="sum"``: Keras
2 then neither rescales the mask nor divides the loss by the number of replicas, and multiplies
only the *reported* value by the number of replicas; Keras 3 never scales a loss that does its
own reduction and multiplies the reported value by the number of replicas too. Under
``tf.distribute`` each replica's gradient comes from its share ``sum_replica(l*w*m) /
sum_global(w*m)`` (Keras sums the replicas' gradients: the gradient of the global token mean),
while its value is ``global_mean / replicas`` (through ``stop_gradient``): Keras reports
``replicas * value`` averaged over the replicas weighted by their batch sizes, which is the
global token mean whatever the split, and the values summed over replicas are the global mean.
"""

import math
import os

__all__ = [
    "keras_module",
    "MaskedLoss",
    "MaskedSparseCategoricalCrossentropy",
    "MaskedCategoricalCrossentropy",
    "MaskedBinaryCrossentropy",
    "MaskedMeanSquaredError",
    "masked_sparse_categorical_crossentropy",
    "TokenMeanLoss",
    "TokenPerplexity",
]

PACKAGE = "pytest_maskloss"


def keras_module():
    """The Keras this process trains with.

    ``tf_keras`` when ``TF_USE_LEGACY_KERAS`` is set to 1/true; else Keras 3 (``import keras``,
    version 3 or later); else ``tf.keras`` (TensorFlow 2.10 and earlier ship ``keras`` 2.x,
    which ``tf.keras`` is).
    """
    if os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes"):
        try:
            import tf_keras

            return tf_keras
        except ImportError:  # TensorFlow <= 2.15 without tf_keras: tf.keras is Keras 2 anyway
            pass
    try:
        import keras

        if int(str(keras.__version__).split(".")[0]) >= 3:
            return keras
    except ImportError:
        pass
    import tensorflow as tf

    return tf.keras


keras = keras_module()
KERAS3 = int(str(keras.__version__).split(".")[0]) >= 3

if KERAS3:
    from keras import ops as _k3ops

    def _backend_name():
        return keras.backend.backend()

    _register = keras.saving.register_keras_serializable(package=PACKAGE)
else:
    import tensorflow as tf

    def _backend_name():
        return "tensorflow"

    _register = keras.utils.register_keras_serializable(package=PACKAGE)


# --- a few tensor operations, on keras.ops (Keras 3) or TensorFlow (Keras 2) -------------

if KERAS3:
    _cast = _k3ops.cast
    _sum = _k3ops.sum
    _ones_like = _k3ops.ones_like
    _not_equal = _k3ops.not_equal
    _argmax = _k3ops.argmax
    _any = _k3ops.any

    def _is_int(x):
        return "int" in keras.backend.standardize_dtype(x.dtype)

    _squeeze = _k3ops.squeeze
    _expand_dims = _k3ops.expand_dims
    _exp = _k3ops.exp
    _convert = _k3ops.convert_to_tensor

    def _divide_no_nan(a, b):
        return _k3ops.divide_no_nan(a, b)

    def _stop_gradient(x):
        return _k3ops.stop_gradient(x)

    def _get_mask(x):
        try:
            from keras.src.backend import get_keras_mask
        except ImportError:  # Keras < 3.6: the mask is an attribute
            return getattr(x, "_keras_mask", None)
        return get_keras_mask(x)

else:
    _cast = tf.cast
    _sum = tf.reduce_sum
    _ones_like = tf.ones_like
    _not_equal = tf.not_equal
    _argmax = tf.argmax
    _any = tf.reduce_any

    def _is_int(x):
        return x.dtype.is_integer

    _squeeze = tf.squeeze
    _expand_dims = tf.expand_dims
    _exp = tf.exp
    _divide_no_nan = tf.math.divide_no_nan
    _stop_gradient = tf.stop_gradient

    def _convert(x, dtype=None):
        return tf.convert_to_tensor(x, dtype=dtype)

    def _get_mask(x):
        return getattr(x, "_keras_mask", None)


def _rank(x):
    return len(x.shape)


def _to_rank(x, rank):
    """Squeeze trailing 1-axes / append 1-axes until ``x`` has ``rank`` axes."""
    while _rank(x) > rank and x.shape[-1] == 1:
        x = _squeeze(x, axis=-1)
    while _rank(x) < rank:
        x = _expand_dims(x, axis=-1)
    return x


def _replicas_in_sync():
    """Number of replicas of the current ``tf.distribute`` replica context (1 outside one)."""
    if _backend_name() != "tensorflow":
        return 1
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def _global_sums(*values):
    """Each scalar summed over the replicas of the current ``tf.distribute`` step.

    Only called with more than one replica (TensorFlow). JAX computes the loss on global
    arrays, so its sums are already global.
    """
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    stacked = tf.stack([tf.cast(v, tf.float32) for v in values])

    # Not ``ctx.all_reduce``: a collective op there takes the collective instance key that a
    # MirroredStrategy created earlier in the same process may have used for something else
    # (measured: "Shape mismatch in the collective instance 100"). A merge_call that adds the
    # per-replica values needs no collective.
    def _add(strategy, per_replica):
        return tf.add_n([tf.identity(v) for v in strategy.experimental_local_results(per_replica)])

    total = tf.identity(ctx.merge_call(_add, args=(stacked,)))
    return tuple(tf.unstack(tf.stop_gradient(total)))


def _resolve_loss(loss):
    """A callable ``(y_true, y_pred) -> per-token values`` for a loss identifier."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # ``Loss.call`` is the unreduced per-element loss (LossFunctionWrapper included).
        return loss.call
    if callable(loss):
        return loss
    raise TypeError(f"MaskedLoss: cannot use {loss!r} as a per-token loss")


def _serialize_loss(loss):
    if isinstance(loss, str):
        return loss
    return keras.losses.serialize(loss)


def _deserialize_loss(config):
    if isinstance(config, str):
        return config
    return keras.losses.deserialize(config)


class _TokenTerms:
    """Shared arithmetic: per-token values and the weights ``w * m`` in float32."""

    #: how ``pad_id`` is matched against labels with one axis more than the per-token values:
    #: "argmax" (one-hot labels), "all" (every entry equals ``pad_id``)
    _pad_match = "all"

    def _terms(self, y_true, y_pred, sample_weight=None):
        mask = _get_mask(y_pred)
        y_pred = _cast(y_pred, "float32")
        y_true_f = _convert(y_true)
        if not _is_int(y_true_f):
            y_true_f = _cast(y_true_f, "float32")
        values = _cast(self._per_token_fn(y_true_f, y_pred), "float32")
        rank = _rank(values)
        weights = _ones_like(values)
        if mask is not None:
            weights = weights * _to_rank(_cast(mask, "float32"), rank)
        if sample_weight is not None:
            sw = _cast(_convert(sample_weight), "float32")
            weights = weights * _to_rank(sw, rank)
        if self.pad_id is not None:
            labels = _convert(y_true)
            if _rank(labels) > rank and labels.shape[-1] == 1:
                labels = _squeeze(labels, axis=-1)
            pad = _cast(_convert(self.pad_id), labels.dtype)
            if _rank(labels) > rank and self._pad_match == "argmax":
                real = _not_equal(_cast(_argmax(labels, axis=-1), "int32"), int(self.pad_id))
            elif _rank(labels) > rank:
                real = _any(_not_equal(labels, pad), axis=-1)
            else:
                real = _not_equal(labels, pad)
            weights = weights * _to_rank(_cast(real, "float32"), rank)
        return values, weights


@_register
class MaskedLoss(_TokenTerms, keras.losses.Loss):
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
        self._per_token_fn = _resolve_loss(loss)

    def __call__(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        numerator = _sum(values * weights)
        denominator = _stop_gradient(_sum(weights))
        replicas = _replicas_in_sync()
        if replicas == 1:
            return _divide_no_nan(numerator, denominator)
        # tf.distribute: the gradients must come from this replica's share of the global token
        # mean (Keras sums the replicas' gradients) ...
        global_numerator, global_denominator = _global_sums(numerator, denominator)
        share = _divide_no_nan(numerator, global_denominator)
        # ... and the value must be global_mean / replicas on every replica: Keras reports
        # replicas * value averaged over replicas weighted by their batch sizes, which is then
        # the global mean even when a batch is split unevenly, and the values summed over the
        # replicas (a custom loop's strategy.reduce) are the global mean too.
        report = _divide_no_nan(global_numerator, global_denominator) / float(replicas)
        return share + _stop_gradient(report - share)

    def call(self, y_true, y_pred):
        """Unreduced per-token loss (padding not removed): what the wrapper averages."""
        return self._per_token_fn(y_true, y_pred)

    @property
    def inner_loss(self):
        """The wrapped per-token loss as a Keras identifier (string, function or ``Loss``)."""
        return self.loss

    def get_config(self):
        return {"loss": _serialize_loss(self.loss), "pad_id": self.pad_id, "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("reduction", None)
        if "loss" in config:
            config["loss"] = _deserialize_loss(config["loss"])
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


@_register
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


@_register
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


@_register
class MaskedBinaryCrossentropy(_StockMasked):
    """``binary_crossentropy`` over real tokens (per token = mean over its last axis)."""

    _fn_name = "binary_crossentropy"
    _stock_class = "BinaryCrossentropy"
    _options = ("from_logits", "label_smoothing")

    def __init__(self, from_logits=False, label_smoothing=0.0, pad_id=None,
                 name="masked_binary_crossentropy", **kw):
        super().__init__(pad_id=pad_id, name=name, from_logits=from_logits,
                         label_smoothing=label_smoothing, **kw)


@_register
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


# --- metrics -------------------------------------------------------------------------------


class _TokenMetricBase(_TokenTerms, keras.metrics.Metric):
    def __init__(self, loss, pad_id=None, from_logits=None, name=None, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype or "float32", **kwargs)
        self.loss = loss
        self.pad_id = pad_id
        self.from_logits = from_logits
        fn = _resolve_loss(loss)
        if from_logits is not None and not isinstance(loss, keras.losses.Loss):
            inner = fn

            def fn(y_true, y_pred):
                return inner(y_true, y_pred, from_logits=from_logits)

        self._per_token_fn = fn
        if KERAS3:
            self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")
            self.count = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="count")
        else:
            self.total = self.add_weight(name="total", initializer="zeros", dtype="float32")
            self.count = self.add_weight(name="count", initializer="zeros", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        self.total.assign_add(_sum(values * weights))
        self.count.assign_add(_sum(weights))

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def _mean(self):
        return _divide_no_nan(_convert(self.total), _convert(self.count))

    def get_config(self):
        config = {"name": self.name, "pad_id": self.pad_id}
        config["loss"] = _serialize_loss(self.loss)
        if self.from_logits is not None:
            config["from_logits"] = self.from_logits
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("dtype", None)
        if "loss" in config:
            config["loss"] = _deserialize_loss(config["loss"])
        return cls(**config)


@_register
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


@_register
class TokenPerplexity(_TokenMetricBase):
    """``exp`` of the epoch token-mean cross-entropy (named so as not to clash with keras-hub's
    ``Perplexity``). 1.0 before any real token was seen."""

    def __init__(self, from_logits=False, pad_id=None, loss="sparse_categorical_crossentropy",
                 name="token_perplexity", **kwargs):
        super().__init__(loss, pad_id=pad_id, from_logits=from_logits, name=name, **kwargs)

    def result(self):
        return _exp(self._mean())


def perplexity_from_mean(mean_loss):
    """``exp`` of a token-mean loss (a plain float helper for reports)."""
    return math.exp(float(mean_loss))
