"""Name resolution and model linking inside one module: every import form and model shape."""

import textwrap

import pytest

from pytest_maskloss.scan.engine import check_source

FLAGGED = {
    "import-as-L": """
        import tensorflow.keras.layers as L
        import tensorflow as tf
        m = tf.keras.Sequential([L.Embedding(10, 4, mask_zero=True), L.Dense(3)])
        m.compile(loss="sparse_categorical_crossentropy")
    """,
    "from-import-as": """
        from tensorflow.keras import layers as L
        from tensorflow.keras.models import Sequential
        m = Sequential([L.Embedding(10, 4, mask_zero=True), L.Dense(3)])
        m.compile(loss="sparse_categorical_crossentropy")
    """,
    "assignment-alias": """
        import tensorflow as tf
        layers = tf.keras.layers
        losses = tf.keras.losses
        m = tf.keras.Sequential([layers.Masking(), layers.Dense(3)])
        m.compile(loss=losses.SparseCategoricalCrossentropy())
    """,
    "try-except-import": """
        try:
            import tf_keras as keras
        except ImportError:
            from tensorflow import keras
        m = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        m.compile("adam", "categorical_crossentropy")
    """,
    "star-import": """
        from keras.layers import *
        from keras.models import Sequential
        m = Sequential([Embedding(10, 4, mask_zero=True), Dense(3)])
        m.compile(loss="sparse_categorical_crossentropy")
    """,
    "tf-losses-alias": """
        import tensorflow as tf
        m = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
        m.compile(loss=tf.losses.SparseCategoricalCrossentropy(from_logits=True))
    """,
    "loss-function-object": """
        import keras
        m = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        m.compile(loss=keras.losses.sparse_categorical_crossentropy)
    """,
    "loss-from-variable-in-list": """
        import keras
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        m = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        m.compile(optimizer="adam", loss=[loss_fn, None])
    """,
    "dict-loss-variable": """
        import keras
        losses = {"out": "sparse_categorical_crossentropy"}
        m = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        m.compile("adam", losses)
    """,
    "functional-bidirectional-timedistributed": """
        import tf_keras as keras
        from tf_keras.losses import sparse_categorical_crossentropy as scce
        inp = keras.Input(shape=(None,))
        x = keras.layers.Masking()(inp)
        x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(x)
        out = keras.layers.TimeDistributed(keras.layers.Dense(3))(x)
        model = keras.Model(inp, out)
        model.compile(optimizer="adam", loss=scce)
    """,
    "functional-layer-variables": """
        import keras
        emb = keras.layers.Embedding(10, 4, mask_zero=True)
        dense = keras.layers.Dense(3)
        inp = keras.Input(shape=(None,))
        model = keras.Model(inputs=inp, outputs=dense(emb(inp)))
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "project-layer-with-compute-mask": """
        import keras
        class MyEmb(keras.layers.Layer):
            def call(self, x):
                return x
            def compute_mask(self, inputs, mask=None):
                return inputs != 0
        model = keras.Sequential([MyEmb(), keras.layers.Dense(3)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "factory-in-trainer-class": """
        import keras
        def build():
            return keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        class Trainer:
            def __init__(self):
                self.model = build()
            def setup(self):
                self.model.compile(loss="sparse_categorical_crossentropy")
    """,
    "subclassed-model": """
        from tensorflow import keras
        class LM(keras.Model):
            def __init__(self):
                super().__init__()
                self.emb = keras.layers.Embedding(10, 4, mask_zero=True)
                self.rnn = keras.layers.GRU(4, return_sequences=True)
                self.out = keras.layers.Dense(10)
            def call(self, inputs, training=False):
                x = self.emb(inputs)
                x = self.rnn(x)
                return self.out(x)
        lm = LM()
        lm.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """,
    "subclassed-model-compiles-itself": """
        import keras
        class LM(keras.Model):
            def __init__(self):
                super().__init__()
                self.emb = keras.layers.Embedding(10, 4, mask_zero=True)
                self.out = keras.layers.Dense(10)
            def call(self, x):
                return self.out(self.emb(x))
            def setup(self):
                self.compile(loss="sparse_categorical_crossentropy")
    """,
    "keras-hub-style-mask-zero-keyword": """
        import keras
        import keras_hub
        inp = keras.Input(shape=(None,))
        x = keras_hub.layers.TokenAndPositionEmbedding(100, 16, 8, mask_zero=True)(inp)
        out = keras.layers.Dense(100)(x)
        model = keras.Model(inp, out)
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "mask-zero-from-a-variable": """
        import keras
        def build(mask):
            return keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=mask), keras.layers.Dense(3)])
        model = build(True)
        model.compile(loss="sparse_categorical_crossentropy")
    """,
}

NOT_FLAGGED = {
    "rnn-consumes-mask": """
        import keras
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.LSTM(4), keras.layers.Dense(3)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "bidirectional-consumes-mask": """
        import keras
        inp = keras.Input(shape=(None,))
        x = keras.layers.Embedding(10, 4, mask_zero=True)(inp)
        x = keras.layers.Bidirectional(keras.layers.LSTM(8))(x)
        model = keras.Model(inp, keras.layers.Dense(3)(x))
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "slice-ends-mask": """
        import keras
        inp = keras.Input(shape=(None,))
        x = keras.layers.Embedding(10, 4, mask_zero=True)(inp)
        x = keras.layers.LSTM(4, return_sequences=True)(x)
        x = x[:, -1]
        model = keras.Model(inp, keras.layers.Dense(3)(x))
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "global-pooling": """
        import keras
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.GlobalMaxPooling1D(), keras.layers.Dense(3)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "mask-zero-false": """
        import keras
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=False), keras.layers.Dense(3)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "reduction-sum": """
        import keras
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum"))
    """,
    "masked-loss-wrapper": """
        import keras
        from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), keras.layers.Dense(3)])
        model.compile(loss=MaskedSparseCategoricalCrossentropy())
    """,
    "not-keras-embedding": """
        from mylib import Embedding, Sequential
        model = Sequential([Embedding(10, 4, mask_zero=False)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
    "unknown-custom-layer-ends-certainty": """
        import keras
        from somewhere import Block
        model = keras.Sequential([keras.layers.Embedding(10, 4, mask_zero=True), Block(), keras.layers.Dense(3)])
        model.compile(loss="sparse_categorical_crossentropy")
    """,
}


@pytest.mark.parametrize("name", sorted(FLAGGED))
@pytest.mark.parametrize("version,severity", [("2.10", "error"), (None, "warning"), ("3.7", "note"), ("2.15", "note")])
def test_shape_is_linked(name, version, severity):
    findings = [f for f in check_source(textwrap.dedent(FLAGGED[name]), version) if f.code == "MSK001"]
    assert findings, name
    assert {f.severity for f in findings} == {severity}


@pytest.mark.parametrize("name", sorted(NOT_FLAGGED))
def test_shape_is_not_flagged(name):
    findings = check_source(textwrap.dedent(NOT_FLAGGED[name]), "2.10")
    assert [f.code for f in findings if f.code == "MSK001"] == [], [f.message for f in findings]


@pytest.mark.parametrize(
    "version,expected",
    [("3.7", True), ("2.10", False), (None, True)],
)
def test_mask_zero_sixth_positional_is_keras3(version, expected):
    code = """
import keras
model = keras.Sequential([keras.layers.Embedding(10, 4, "uniform", None, None, True), keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
"""
    assert any(f.code == "MSK001" for f in check_source(code, version)) is expected


@pytest.mark.parametrize(
    "version,expected",
    [("2.10", True), ("3.7", False), (None, True)],
)
def test_mask_zero_seventh_positional_is_keras2(version, expected):
    code = """
import tensorflow as tf
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, "uniform", None, None, None, True), tf.keras.layers.Dense(3)])
model.compile(loss="sparse_categorical_crossentropy")
"""
    assert any(f.code == "MSK001" for f in check_source(code, version)) is expected


def test_severity_and_version_in_message():
    code = textwrap.dedent(FLAGGED["import-as-L"])
    (err,) = check_source(code, "2.10")
    assert "tf.keras 2.10" in err.message and err.severity == "error"
    (warn,) = check_source(code, None)
    assert "Keras version unknown" in warn.message
    (note,) = check_source(code, "3.7")
    assert "weighted by sequences" in note.message and note.fix is None


def test_unsafe_fix_offered_for_error():
    (f,) = check_source(textwrap.dedent(FLAGGED["import-as-L"]), "2.10")
    assert f.fix is not None and not f.fix.safe
    assert any("MaskedLoss" in e.replacement for e in f.fix.edits)
