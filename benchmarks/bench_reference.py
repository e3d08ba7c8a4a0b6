"""Cost of the numpy reference against Keras on a language-model batch.

Batch 32 x 128 tokens, vocabulary 8,000, float32 probabilities (and logits): the numpy
per-token sparse cross-entropy against the same per-token losses computed by Keras
(``reduction="none"``) on the same arrays, in the same run. Run on any stack:

    python benchmarks/bench_reference.py                      # Keras 3 on TensorFlow
    KERAS_BACKEND=jax python benchmarks/bench_reference.py    # Keras 3 on JAX
    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_reference.py

Takes about 20-40 s on two cores (most of it building the inputs and Keras' first calls).
"""

from __future__ import annotations

import time

import numpy as np

from pytest_maskloss.compat.detect import module_info, process_keras
from pytest_maskloss.compat.ops import tensor_ops
from pytest_maskloss.reference import LossSpec, per_token_loss

BATCH, STEPS, VOCABULARY = 32, 128, 8000
REPEATS = 3


def best_of(function, repeats=REPEATS):
    """Fastest of ``repeats`` timed calls (after one warm-up call), and its result."""
    result = function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def to_numpy(x):
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def main():
    keras = process_keras()
    flavour = module_info(keras).stack
    rng = np.random.default_rng(0)
    shape = (BATCH, STEPS, VOCABULARY)
    logits = rng.standard_normal(shape, dtype=np.float32)
    logits *= 2.0
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    probs[0, 0] = 0.0  # an exactly one-hot row, so clipping is exercised
    labels = rng.integers(0, VOCABULARY, size=shape[:-1])
    probs[0, 0, labels[0, 0]] = 1.0

    convert = tensor_ops(keras).convert
    tensors = {"probabilities": convert(probs), "logits": convert(logits)}
    arrays = {"probabilities": probs, "logits": logits}
    label_tensor = convert(labels)

    print(f"stack {flavour}, keras {keras.__version__}, numpy {np.__version__}")
    print(f"batch {BATCH}x{STEPS}, vocabulary {VOCABULARY}, float32; best of {REPEATS}")
    for kind in ("probabilities", "logits"):
        from_logits = kind == "logits"
        spec = LossSpec("sparse_categorical_crossentropy", from_logits=from_logits)
        loss = keras.losses.SparseCategoricalCrossentropy(
            from_logits=from_logits, reduction="none"
        )
        reference_seconds, reference = best_of(
            lambda: per_token_loss(spec, labels, arrays[kind], flavour=flavour)
        )
        keras_seconds, expected = best_of(
            lambda: to_numpy(loss(label_tensor, tensors[kind]))
        )
        difference = np.abs(reference - expected)
        # The one-hot row's loss is ~8e-4 and carries Keras' float32 summation error
        # (~2e-6 absolute); relative figures are shown for the ordinary tokens.
        ordinary = np.abs(expected) > 1e-2
        print(
            f"sparse CE from {kind:13s}: numpy {reference_seconds * 1e3:7.1f} ms, "
            f"keras {keras_seconds * 1e3:7.1f} ms, ratio numpy/keras "
            f"{reference_seconds / keras_seconds:5.2f}; max |diff| {difference.max():.1e}, "
            f"max rel (loss > 0.01) {np.max(difference[ordinary] / expected[ordinary]):.1e}"
        )


if __name__ == "__main__":
    main()
