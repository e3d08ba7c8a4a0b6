"""Which Keras the runtime tests run on, chosen the way users choose it.

Keras 3 (TensorFlow, JAX or PyTorch backend by KERAS_BACKEND) unless TF_USE_LEGACY_KERAS=1 (tf_keras);
tf.keras where the installed keras is 2.x (TensorFlow 2.10).
"""

import os

import numpy as np
import pytest

import tensorflow as tf

if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
    import tf_keras as keras

    STACK = "tf_keras"
else:
    import keras

    if int(keras.__version__.split(".")[0]) >= 3:
        STACK = "keras3-" + keras.config.backend()
    else:
        keras = tf.keras
        STACK = "tf.keras"

KERAS3 = STACK.startswith("keras3")
BACKEND = keras.config.backend() if KERAS3 else "tensorflow"
TF_BACKEND = STACK in ("keras3-tensorflow", "tf_keras", "tf.keras")  # losses run on TensorFlow ops
TF_VERSION = tuple(int(p) for p in tf.__version__.split(".")[:2])
OLD_TF_KERAS = STACK == "tf.keras" and TF_VERSION < (2, 11)

only_tf210 = pytest.mark.skipif(not OLD_TF_KERAS, reason="the padding-in-denominator mask bug is tf.keras < 2.11 only")
tf_backend_only = pytest.mark.skipif(not TF_BACKEND, reason="needs the TensorFlow backend")


def to_numpy(x):
    """A tensor of the stack under test as numpy (a torch tensor may require grad)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def sce(labels, probs):
    """-log p[label] per token: the test's own independent per-token cross-entropy."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    picked = np.take_along_axis(probs, labels[..., None].astype(int), axis=-1)[..., 0]
    return -np.log(np.clip(picked, 1e-7, 1 - 1e-7))
