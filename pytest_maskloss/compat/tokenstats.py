"""Per-token sufficient statistics of a sparse categorical cross-entropy, computed inside the
model's step with its backend's operations, so that the step hands the host two (batch, time)
arrays per output instead of its (batch, time, vocabulary) predictions.

For each token, one of four kinds, chosen the way Keras chooses what its loss is computed from:

* ``"softmax"`` (TensorFlow stacks, wherever the loss is taken from logits: ``from_logits=True``,
  or the logits Keras finds under a softmax output, ``_keras_logits`` on the tensor or the
  graph's ``Softmax`` op, the same lookup as Keras' own ``_get_logits``): ``(0, p_label)``, the
  label's probability of the softmax of those logits. One softmax and a gather are the cheapest
  exact statistics there. A float32 graph softmax output of exactly those logits is that softmax
  already, and is read where something else in the step reads the predictions too (compiled
  metrics, the model's own step); else Keras's loss, taken from the logits, leaves that output
  unused (pruned), and the softmax is taken here, in chunks of 16 MiB rows (outside XLA: each
  chunk's buffer is reused where one (batch, time, vocabulary) buffer is mapped afresh each
  step, 6 ms of a (64, 128, 8000) batch's 35). A batch where a label's probability has underflowed (below the smallest normal
  float32) sends the exact form instead, ``(logit - max, max p)``, as the largest probability
  is ``1 / Σ exp(logits - max)``; the host's formula is the same for both;
* ``"logits"`` (Keras 3 on JAX and PyTorch, ``from_logits=True``): the label's logit minus the
  row's maximum, and the sum of the exponentials of the row minus its maximum (in
  ``[1, vocabulary]``; the host takes its log in float64);
* ``"clipped"`` (TensorFlow stacks, probabilities): the label's probability and the row sum of
  the probabilities clipped to ``[1e-7, 1 - 1e-7]`` (Keras clips, then renormalises by that sum);
* ``"probabilities"`` (Keras 3 on JAX and PyTorch): the label's probability and the row sum.

The loss itself is not formed here: the host's numpy reference does that
(``pytest_maskloss.check.tokenstats``). A label outside ``[0, vocabulary)`` (``ignore_class``,
``-100`` padding) is gathered at 0 and its picked value set to NaN; the host knows the labels and
leaves out the positions Keras does not score. Everything is computed in float32.
"""

from __future__ import annotations

import importlib

from pytest_maskloss.compat import flavours as F
from pytest_maskloss.compat.ops import tensor_ops

EPSILON = 1e-7  # Keras' backend.epsilon() default, the clip of a probability output
_CHUNK = 1 << 22  # float32 values in a chunk of the softmax: 16 MiB, under glibc's mmap threshold
_NORMAL = 2.0 ** -126  # the smallest normal float32: below it a probability loses precision


def applies(spec) -> bool:
    """Can a loss of this spec (``check.lossspec.LossSpec``) be observed through statistics?"""
    return (spec is not None and spec.name == "sparse_categorical_crossentropy"
            and spec.axis == -1 and not spec.label_smoothing)


def statistics_evaluator(from_logits, info, *, predictions_read=True, xla=False):
    """``evaluate(y, y_pred) -> [{kind: (picked, total)}, ...]``, one entry per output, in the
    order of ``from_logits`` (one bool per output; ``y``/``y_pred`` a tensor for one output, a
    list/tuple for several). None when the stack has no tested statistics path.
    ``predictions_read``: something else in the step reads the predictions, so a softmax output
    is computed anyway and is read here; ``xla``: the step is compiled by XLA (which fuses one
    whole softmax: no chunks)."""
    if not F.token_statistics_in_step(info.stack):
        return None
    ops = tensor_ops(_keras_module(info))
    tensorflow = info.backend == F.TENSORFLOW
    renormalises = F.sparse_crossentropy_renormalises_clipped(info.stack)
    flags = list(from_logits)

    def evaluate(y, y_pred):
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        preds = list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]
        if len(ys) != len(flags) or len(preds) != len(flags):
            raise ValueError(f"{len(flags)} output(s) expected, the step has {len(preds)}")
        return [_statistics(ops, labels, pred, logits, tensorflow, renormalises, predictions_read, xla)
                for labels, pred, logits in zip(ys, preds, flags)]

    evaluate.from_logits = tuple(flags)  # for compat.ordering
    return evaluate


def _statistics(ops, labels, y_pred, from_logits, tensorflow, renormalises, predictions_read, xla):
    logits = y_pred if from_logits else (_logits_under_softmax(y_pred) if tensorflow else None)
    values = ops.cast(logits if logits is not None else y_pred, "float32")
    if logits is not None and tensorflow:
        reuse = predictions_read and not from_logits and _is_softmax_of(y_pred, logits)
        return {"softmax": _softmax_statistics(ops, labels, values, y_pred if reuse else None,
                                               in_chunks=not xla)}
    picked = _picked(ops, labels, values)
    if logits is not None:
        peak = ops.max(values, axis=-1)
        return {"logits": (picked - peak, ops.sum(ops.exp(values - peak[..., None]), axis=-1))}
    if renormalises:
        return {"clipped": (picked, ops.sum(ops.clip(values, EPSILON, 1.0 - EPSILON), axis=-1))}
    return {"probabilities": (picked, ops.sum(values, axis=-1))}


def _softmax_statistics(ops, labels, logits, probabilities=None, in_chunks=True):
    """``(shift, probability)`` with ``-log probability - shift`` the label's log-softmax of the
    float32 ``logits``. Where every label's probability is a normal float32, ``(0, p_label)``:
    one softmax and a gather, the cheapest exact way on TensorFlow (about half the cost of a
    max pass plus an exp-sum pass over the vocabulary), of ``probabilities`` when given. Where
    one has underflowed, a ``tf.cond`` takes the exact form for the batch: ``(logit - max, max
    p)``, since the largest probability is ``1 / Σ exp(logits - max)``."""
    import tensorflow as tf

    if probabilities is not None:
        picked = _picked(ops, labels, probabilities)
    elif in_chunks and not tf.executing_eagerly() and logits.shape[-1] is not None:
        picked = _picked_in_chunks(ops, labels, logits)
    else:
        probabilities = tf.nn.softmax(logits, axis=-1)
        picked = _picked(ops, labels, probabilities)

    def exact():
        largest = tf.reduce_max(tf.nn.softmax(logits, axis=-1) if probabilities is None else probabilities, axis=-1)
        return _picked(ops, labels, logits) - tf.reduce_max(logits, axis=-1), largest

    normal = tf.reduce_all(tf.logical_or(picked >= _NORMAL, tf.math.is_nan(picked)))
    return tf.cond(normal, lambda: (tf.zeros_like(picked), picked), exact)


def _picked_in_chunks(ops, labels, logits):
    """``_picked`` of the softmax of ``logits``, taken over chunks of rows of ``_CHUNK`` values
    in a ``tf.while_loop``: the softmax is row by row, so the values are the whole softmax's
    (to the bit on TensorFlow 2.21; 2.10 rounds the last bit of some rows by the row count)."""
    import tensorflow as tf

    vocabulary = logits.shape[-1]
    if len(labels.shape) == len(logits.shape) and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, axis=-1)
    shape = tf.shape(labels)
    rows, flat = tf.reshape(logits, [-1, vocabulary]), tf.reshape(labels, [-1])
    size = max(1, _CHUNK // vocabulary)
    chunks = (tf.shape(rows)[0] + size - 1) // size

    def body(i, picked):
        window = slice(i * size, (i + 1) * size)
        return i + 1, picked.write(i, _picked(ops, flat[window], tf.nn.softmax(rows[window], axis=-1)))

    _, picked = tf.while_loop(lambda i, _: i < chunks, body,
                              (0, tf.TensorArray(tf.float32, size=chunks, infer_shape=False,
                                                  element_shape=tf.TensorShape([None]))))
    return tf.reshape(picked.concat(), shape)


def _logits_under_softmax(y_pred):
    """The logits Keras' TensorFlow losses take instead of a softmax output (its
    ``_get_logits``): the tensor's ``_keras_logits``, else the input of a graph ``Softmax`` op."""
    logits = getattr(y_pred, "_keras_logits", None)
    if logits is not None:
        return logits
    op = getattr(y_pred, "op", None)
    try:
        if op is not None and op.type == "Softmax" and len(op.inputs) == 1:
            return op.inputs[0]
    except Exception:  # an eager tensor has no op
        return None
    return None


def _is_softmax_of(y_pred, logits) -> bool:
    """Is ``y_pred`` the float32 output of a graph ``Softmax`` op (the last axis) of exactly
    ``logits``? Anything else (an eager tensor, a softmax over another axis, a cast) is not."""
    try:
        op = y_pred.op
        return (op.type == "Softmax" and y_pred.dtype.name == "float32" and len(op.inputs) == 1
                and op.inputs[0].name == logits.name)
    except Exception:  # an eager tensor has no op and no name
        return False


def _picked(ops, labels, values):
    """The value at each label, NaN where the label is outside the vocabulary."""
    rank = len(values.shape)
    if len(labels.shape) == rank and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    labels = ops.cast(labels, "int32")
    inside = ops.logical_and(labels >= 0, labels < ops.shape(values)[-1])
    safe = ops.where(inside, labels, ops.zeros_like(labels))
    return ops.where(inside, ops.take_last(values, safe), ops.full(ops.shape(labels), float("nan"), dtype="float32"))


def _keras_module(info):
    """The Keras module of the model's flavour, for ``compat.ops.tensor_ops``."""
    if info.flavour == F.TF_DOT_KERAS:  # the bare keras 2.x package lacks parts of tf.keras' API
        import tensorflow as tf

        return tf.keras
    return importlib.import_module(F.MODEL_PACKAGES[info.flavour])
