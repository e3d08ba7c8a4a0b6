"""The probe batch the runtime tests share (docs/failure-modes.md): 4 sequences of length 6 with
6, 6, 2 and 1 real tokens of a 7-word vocabulary, padding 0. numpy only, so the Keras 3.5 venv,
which has no TensorFlow, can use it too."""

import numpy as np

VOCAB = 7
LENGTHS = [6, 6, 2, 1]  # 15 real tokens of 24; with batch size 2 the first batch has no padding


def padded_tokens(lengths=LENGTHS, T=6, seed=0, vocab=VOCAB):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), T), dtype="int32")
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, vocab, size=n)
    return tokens
