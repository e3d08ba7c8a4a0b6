"""A small padded language-model test suite, as a model repo would have it.

Two next-token models on the same padded batches:
- ``test_sample_weight_padding`` trains with the padding passed as ``sample_weight`` and the
  default ``sum_over_batch_size`` reduction: Keras reports Σ l·w / (B·T), padding in the
  denominator, on every Keras version. The check fails and says so.
- ``test_masked_embedding`` masks with ``Embedding(mask_zero=True)``: Keras ≥ 2.11 and Keras 3
  report the mean over real tokens, so the check passes (tf.keras 2.10 fails it: the original
  problem).
"""

import numpy as np

VOCAB = 50
LENGTH = 12


def padded_batches(n=64, seed=0):
    """Sequences of 2..12 tokens, padded with 0 to length 12 (inputs and next-token labels)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, LENGTH + 1), dtype="int32")
    for row, length in zip(tokens, rng.integers(3, LENGTH + 2, size=n)):
        row[:length] = rng.integers(1, VOCAB, size=length)
    return tokens[:, :-1], tokens[:, 1:]


def build(keras, *, mask_zero):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 16, mask_zero=mask_zero),
            keras.layers.LSTM(16, return_sequences=True),
            keras.layers.Dense(VOCAB, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_sample_weight_padding(maskloss):
    import keras

    x, y = padded_batches()
    model = build(keras, mask_zero=False)
    model.fit(x, y, sample_weight=(y != 0).astype("float32"), batch_size=16, epochs=1, verbose=0)
    maskloss(model, x, y, sample_weight=(y != 0).astype("float32"), batch_size=16)


def test_masked_embedding(maskloss):
    import keras

    x, y = padded_batches()
    model = build(keras, mask_zero=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    report = maskloss(model, x, y, batch_size=16)
    print(report)
