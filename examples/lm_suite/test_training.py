"""Plain training tests, as a model repo has them: no maskloss fixture, no check in sight.

``pytest --maskloss examples/lm_suite`` audits them anyway: every padded model they train or
evaluate is checked against the mean over real tokens, and the session summary lists what is
reported wrong.

- ``test_conv_language_model_learns``: a Conv1D between the masked Embedding and the output
  drops the mask (Keras 3 warns, tf_keras is silent), so the padding is scored as real tokens:
  the audit reports ``mask-lost`` on ``fit`` and ``evaluate``.
- ``test_lstm_language_model_learns``: the mask reaches the loss; nothing to report.
"""

import numpy as np

VOCAB = 50
LENGTH = 12


def padded_batches(n=64, seed=1):
    """Sequences of 2..12 tokens, padded with 0 to length 12 (inputs and next-token labels)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, LENGTH + 1), dtype="int32")
    for row, length in zip(tokens, rng.integers(3, LENGTH + 2, size=n)):
        row[:length] = rng.integers(1, VOCAB, size=length)
    return tokens[:, :-1], tokens[:, 1:]


def language_model(keras, middle):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((LENGTH,), dtype="int32"), keras.layers.Embedding(VOCAB, 16, mask_zero=True), middle,
         keras.layers.Dense(VOCAB, activation="softmax")],
        name=f"{type(middle).__name__.lower()}_lm",
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_conv_language_model_learns():
    import keras

    x, y = padded_batches()
    model = language_model(keras, keras.layers.Conv1D(16, 3, padding="causal"))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert np.isfinite(model.evaluate(x, y, batch_size=16, verbose=0))


def test_lstm_language_model_learns():
    import keras

    x, y = padded_batches()
    model = language_model(keras, keras.layers.LSTM(16, return_sequences=True))
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
