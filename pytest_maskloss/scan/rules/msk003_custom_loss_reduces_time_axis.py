"""MSK003 custom-loss-reduces-time-axis."""

from __future__ import annotations

from pytest_maskloss.scan.rules.base import Invalid, Raw, Rule, mask_origin, where
from pytest_maskloss.scan.values import MASKED, ClassRef, FuncRef, LossV, ReductionV


class CustomLossReducesTimeAxis(Rule):
    """A custom loss used by a masked model reduces over the time axis before returning.

    ## What it does
    Finds loss functions and `Loss.call` methods compiled on a masked model (linked as for
    MSK001) whose return value is a reduction over the time axis: `reduce_mean`,
    `reduce_sum`, `mean` or `sum` (TensorFlow, `keras.ops`, the backend, numpy) with
    `axis=1`, with no axis (everything), or with `axis=-1` applied to a per-token loss (the
    result of a Keras loss function or of a `*_cross_entropy_with_logits` op).
    `reduce_mean(loss * mask)` is reported too (padding stays in the denominator);
    `reduce_sum(loss * mask) / reduce_sum(mask)` is not. The finding is placed on the
    reduction, in the file that defines the loss.

    ## Why is this bad?
    Keras can only weight a per-token loss by the mask. A loss already reduced over time
    either fails on the shape or is broadcast silently, so padding is averaged in.

    Severity: **error** on every Keras version.

    ## Example
    ```python
    def loss_fn(y_true, y_pred):
        loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return tf.reduce_mean(loss, axis=1)
    ```

    ## Use instead
    ```python
    def loss_fn(y_true, y_pred):
        return tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)  # (batch, time)
    ```
    """

    code = "MSK003"
    name = "custom-loss-reduces-time-axis"
    summary = "a custom loss used by a masked model reduces over the time axis before returning"
    VALID = [
        """
import tensorflow as tf
def loss_fn(y_true, y_pred):
    return tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", loss_fn)
""",
        """
import tensorflow as tf
def mse(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", mse)
""",
        """
import tensorflow as tf
def loss_fn(y_true, y_pred):
    return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4), tf.keras.layers.Dense(3)])
model.compile("adam", loss_fn)
""",
    ]
    INVALID = [
        Invalid(
            code="""
import tensorflow as tf
def loss_fn(y_true, y_pred):
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return tf.reduce_mean(loss, axis=1)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", loss=loss_fn)
""",
            fixed="""
import tensorflow as tf
def loss_fn(y_true, y_pred):
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    return loss
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", loss=loss_fn)
""",
        ),
        Invalid(
            code="""
import keras
from keras import ops
class SeqLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ops.mean(per_token, axis=-1)
inp = keras.Input((None,))
out = keras.layers.Dense(3)(keras.layers.Embedding(10, 4, mask_zero=True)(inp))
model = keras.Model(inp, out)
model.compile(loss=SeqLoss())
""",
            fixed="""
import keras
from keras import ops
class SeqLoss(keras.losses.Loss):
    def call(self, y_true, y_pred):
        per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return per_token
inp = keras.Input((None,))
out = keras.layers.Dense(3)(keras.layers.Embedding(10, 4, mask_zero=True)(inp))
model = keras.Model(inp, out)
model.compile(loss=SeqLoss())
""",
        ),
        Invalid(
            code="""
import tensorflow as tf
def masked_loss(y_true, y_pred):
    mask = tf.cast(y_true != 0, tf.float32)
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return tf.reduce_mean(loss * mask)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", masked_loss)
""",
            fixed="""
import tensorflow as tf
def masked_loss(y_true, y_pred):
    mask = tf.cast(y_true != 0, tf.float32)
    loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return tf.reduce_sum(loss * mask) / tf.reduce_sum(mask)
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile("adam", masked_loss)
""",
        ),
    ]

    def check(self, an):
        seen = set()
        for fact in an.compiles:
            t = fact.model.output()
            if t.state != MASKED:
                continue
            for value, node in fact.losses:
                fn = None
                if isinstance(value, FuncRef):
                    fn = value
                elif isinstance(value, LossV) and value.kind == "custom_cls" and isinstance(value.ref, ClassRef):
                    fn = value.ref.find_method("call")
                if fn is None:
                    continue
                ret = fn.returns()
                if not isinstance(ret, ReductionV) or not ret.over_time:
                    continue
                if id(ret.loc.node) in seen:
                    continue
                seen.add(id(ret.loc.node))
                related = () if ret.loc.module is an else (an.path,)
                origin, rel2 = mask_origin(t, an)
                yield Raw(
                    ret.loc,
                    f"custom loss {fn.node.name.value} reduces over the time axis ({ret.axis_text}) "
                    f"before returning; the model compiled at {where(fact.loc, ret.loc.module)} is "
                    f"masked{origin}, and Keras can only apply the mask to a per-token loss, so "
                    f"padding is averaged in (or shapes mismatch); return the (batch, time) loss",
                    "error",
                    None,
                    tuple(sorted(set(related) | set(rel2))),
                )
