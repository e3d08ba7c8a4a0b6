"""A custom loss evaluated token by token, inside the model's step, with the tensor operations of
its flavour: the reference for a loss that has no numpy counterpart is the user's own loss on
each token alone.

The loss is called once on all tokens laid out as a batch of one-token sequences
(``(B·T, 1, ...)``); a function that returns per-token values, or reduces only the time axis, then
gives one value per token. A loss that reduces further (a ``Loss`` object with a reduction, a
``__call__`` override, a function ending in a mean) returns fewer values than tokens and is
mapped over the tokens one at a time instead. Padding positions get whatever the loss gives a
lone padding token; the check masks them out.
"""

from __future__ import annotations

from pytest_maskloss.compat import flavours as F


def token_callable(loss):
    """The callable the tokens are fed to: a ``Loss`` object's own ``__call__`` (a user override
    included) or ``call``, or the function itself."""
    if hasattr(loss, "call") and callable(getattr(loss, "call")) and _keeps_stock_call(loss):
        return loss.call
    return loss


def _keeps_stock_call(loss) -> bool:
    """True when ``__call__`` is Keras' own (then ``call`` is the per-element loss)."""
    for klass in type(loss).__mro__:
        if "__call__" in vars(klass):
            return klass.__module__.split(".")[0] in F.KERAS_PACKAGES
    return True


def per_token_evaluator(loss, info):
    """``evaluate(y_true, y_pred) -> (B, T)`` float32 tensor of ``loss`` on each token alone."""
    fn = token_callable(loss)
    if info.is_keras3:
        from keras import ops

        reshape, shape, cast = ops.reshape, ops.shape, ops.cast

        def vmap(f, elements):
            return ops.vectorized_map(f, elements)
    else:
        import tensorflow as tf

        reshape, shape, cast = tf.reshape, tf.shape, tf.cast

        def vmap(f, elements):
            return tf.vectorized_map(f, elements, fallback_to_while_loop=True)

    def evaluate(y_true, y_pred):
        lead = shape(y_pred)[:2]
        tokens_true = reshape(y_true, (-1, 1) + tuple(y_true.shape[2:]))
        tokens_pred = reshape(y_pred, (-1, 1) + tuple(y_pred.shape[2:]))
        values = fn(tokens_true, tokens_pred)
        if not _one_per_token(values, tokens_pred):
            values = vmap(lambda pair: fn(pair[0][None], pair[1][None]), (tokens_true, tokens_pred))
        return reshape(cast(values, "float32"), lead)

    return evaluate


def _one_per_token(values, tokens) -> bool:
    """Does ``values`` hold one value per token ((N,) or (N, 1))?"""
    dims = tuple(values.shape)
    if len(dims) == 0 or len(dims) > 2 or (len(dims) == 2 and dims[1] != 1):
        return False
    return dims[0] is None or tokens.shape[0] is None or dims[0] == tokens.shape[0]
