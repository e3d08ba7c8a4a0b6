"""The tensor operations the package's losses and metrics compute with: ``keras.ops`` on
Keras 3 (any backend), TensorFlow ops on Keras 2, with the same names on both; and the
``tf.distribute`` replica sums they need."""

from __future__ import annotations

from types import SimpleNamespace

from pytest_maskloss.compat import flavours as F
from pytest_maskloss.compat.detect import module_info
from pytest_maskloss.compat.masks import keras_mask


def tensor_ops(keras) -> SimpleNamespace:
    """Operations on the tensors of the Keras module ``keras`` (as ``process_keras`` gives)."""
    info = module_info(keras)
    if info.is_keras3:
        from keras import ops

        def is_int(x):
            return "int" in keras.backend.standardize_dtype(x.dtype)

        def add_scalar_variable(metric, name):
            return metric.add_variable(shape=(), initializer="zeros", dtype="float32", name=name)

        def take_last(values, index):  # values[..., index] per row
            return ops.squeeze(ops.take_along_axis(values, ops.expand_dims(index, -1), axis=-1), axis=-1)

        return SimpleNamespace(
            info=info, cast=ops.cast, sum=ops.sum, ones_like=ops.ones_like,
            not_equal=ops.not_equal, argmax=ops.argmax, any=ops.any, squeeze=ops.squeeze,
            expand_dims=ops.expand_dims, exp=ops.exp, convert=ops.convert_to_tensor,
            divide_no_nan=ops.divide_no_nan, stop_gradient=ops.stop_gradient, is_int=is_int,
            max=ops.max, clip=ops.clip, where=ops.where, zeros_like=ops.zeros_like,
            logical_and=ops.logical_and, shape=ops.shape, full=ops.full, take_last=take_last,
            keras_mask=keras_mask, add_scalar_variable=add_scalar_variable,
            register=keras.saving.register_keras_serializable,
            replicas_in_sync=replicas_in_sync if info.backend == F.TENSORFLOW else _one,
            global_sums=global_sums,
        )
    import tensorflow as tf

    def convert(x, dtype=None):
        return tf.convert_to_tensor(x, dtype=dtype)

    def add_scalar_variable(metric, name):
        return metric.add_weight(name=name, initializer="zeros", dtype="float32")

    def full(shape, fill_value, dtype="float32"):
        return tf.fill(shape, tf.constant(fill_value, dtype))

    def take_last(values, index):  # values[..., index] per row
        return tf.gather(values, index, batch_dims=len(index.shape))

    return SimpleNamespace(
        info=info, cast=tf.cast, sum=tf.reduce_sum, ones_like=tf.ones_like,
        not_equal=tf.not_equal, argmax=tf.argmax, any=tf.reduce_any, squeeze=tf.squeeze,
        expand_dims=tf.expand_dims, exp=tf.exp, convert=convert,
        divide_no_nan=tf.math.divide_no_nan, stop_gradient=tf.stop_gradient,
        max=tf.reduce_max, clip=tf.clip_by_value, where=tf.where, zeros_like=tf.zeros_like,
        logical_and=tf.logical_and, shape=tf.shape, full=full, take_last=take_last,
        is_int=lambda x: x.dtype.is_integer, keras_mask=keras_mask,
        add_scalar_variable=add_scalar_variable,
        register=keras.utils.register_keras_serializable,
        replicas_in_sync=replicas_in_sync, global_sums=global_sums,
    )


def _one():
    return 1


def replicas_in_sync() -> int:
    """Replicas of the current ``tf.distribute`` replica context (1 outside one)."""
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else int(ctx.num_replicas_in_sync)


def global_sums(*values):
    """Each scalar summed over the replicas of the current ``tf.distribute`` step.

    Only called with more than one replica (TensorFlow). Keras 3 on JAX computes the loss on
    global arrays, so its sums are already global.
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
