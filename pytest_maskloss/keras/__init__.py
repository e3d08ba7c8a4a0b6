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

The classes are built for the Keras this process trains with (``keras_module()``): Keras 3 on
TensorFlow, JAX or PyTorch, tf_keras when ``TF_USE_LEGACY_KERAS=1``, or tf.keras on TensorFlow
2.10. What the reported figures are, on every one of them:

* the loss of a batch is ``sum(l * w * m) / sum(w * m)``: ``l`` the per-token loss, ``w`` the
  sample weights (1 when none are given), ``m`` the padding mask, which is the product of the
  Keras mask on the model output, ``sample_weight != 0`` and (optionally) ``labels != pad_id``.
  A batch of nothing but padding gives 0.
* under ``tf.distribute`` the denominator is the number of real tokens of the whole step (all
  replicas), so the loss and its gradients are those of a single-device run.
* the metrics keep ``sum(l * w * m)`` and ``sum(w * m)`` as variables: their epoch figure is the
  corpus token mean (and its ``exp`` the token perplexity), whatever the padded lengths and
  numbers of real tokens of the batches, and across replicas.

How the losses stay exact is explained in ``pytest_maskloss.keras.losses``.
"""

from pytest_maskloss.compat.detect import process_keras as keras_module
from pytest_maskloss.keras.losses import (
    MaskedBinaryCrossentropy,
    MaskedCategoricalCrossentropy,
    MaskedLoss,
    MaskedMeanSquaredError,
    MaskedSparseCategoricalCrossentropy,
    masked_sparse_categorical_crossentropy,
)
from pytest_maskloss.keras.metrics import TokenMeanLoss, TokenPerplexity
from pytest_maskloss.keras.terms import keras

__all__ = [
    "keras_module",
    "keras",
    "MaskedLoss",
    "MaskedSparseCategoricalCrossentropy",
    "MaskedCategoricalCrossentropy",
    "MaskedBinaryCrossentropy",
    "MaskedMeanSquaredError",
    "masked_sparse_categorical_crossentropy",
    "TokenMeanLoss",
    "TokenPerplexity",
]
