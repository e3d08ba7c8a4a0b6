"""Ecosystem knowledge and version-aware rules: keras and layers passed as arguments, KerasHub
layers and tasks, MultiHeadAttention and merges dropping masks on Keras 3, ``ignore_class`` on
tf.keras 2.10, ``tf.data`` sample weights, and the links across modules (a helper that compiles
the model it is given, ``keras`` re-exported by a project module), plus the bundled example
suite's findings."""

import json
import pathlib
import textwrap

import pytest

from pytest_maskloss.cli import main
from pytest_maskloss.compat import flavours
from pytest_maskloss.scan.engine import check_source
from tests.scan.conftest import write

ROOT = pathlib.Path(__file__).resolve().parents[2]


def codes(source, version=None):
    return [(f.code, f.line, f.severity) for f in check_source(textwrap.dedent(source), version)]


def line_of(source: str, needle: str) -> int:
    """1-based line of the first line containing ``needle`` (expected positions come from the
    text, not from the scanner)."""
    return next(i for i, text in enumerate(textwrap.dedent(source).splitlines(), 1) if needle in text)


KERAS_ARGUMENT = """
    def build(keras, *, mask_zero):
        model = keras.Sequential([keras.layers.Embedding(50, 16, mask_zero=mask_zero), keras.layers.Dense(50)])
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    def test_weights():
        import keras
        model = build(keras, mask_zero=False)
        model.fit(x, y, sample_weight=(y != 0).astype("float32"))
"""


def test_keras_passed_as_an_argument_and_mask_zero_false_at_the_call():
    found = codes(KERAS_ARGUMENT, "3.15")
    assert found == [("MSK005", line_of(KERAS_ARGUMENT, "sample_weight="), "error")]


def test_the_same_function_called_twice_gives_each_call_its_arguments():
    source = KERAS_ARGUMENT + """
    def test_mask():
        import keras
        build(keras, mask_zero=True)
"""
    found = codes(source, "2.10")
    assert ("MSK001", line_of(source, "model.compile"), "error") in found
    assert ("MSK005", line_of(source, "sample_weight="), "error") in found


def test_layer_passed_as_an_argument_drops_the_mask_where_it_is_made():
    source = """
        def language_model(keras, middle):
            return keras.Sequential([keras.layers.Embedding(50, 16, mask_zero=True), middle, keras.layers.Dense(50)])

        def test_conv():
            import keras
            language_model(keras, keras.layers.Conv1D(16, 3, padding="causal"))
    """
    assert codes(source) == [("MSK006", line_of(source, "Conv1D"), "error")]


MHA_ADD = """
    import keras
    inp = keras.Input((None,), dtype="int32")
    e = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
    a = keras.layers.MultiHeadAttention(2, 8)(e, e)
    x = keras.layers.Add()([e, a])
    model = keras.Model(inp, keras.layers.Dense(5)(x))
    model.compile(loss="sparse_categorical_crossentropy")
"""


@pytest.mark.parametrize("version,expected", [
    ("3.15", [("MSK006", "MultiHeadAttention", "error")]),
    ("3.8", [("MSK006", "MultiHeadAttention", "error")]),
    (None, [("MSK006", "MultiHeadAttention", "warning")]),
    ("3.6", [("MSK001", "compile", "note")]),
    ("tf-keras", [("MSK001", "compile", "note")]),
])
def test_multi_head_attention_clears_the_residual_mask_from_keras_3_8(version, expected):
    found = codes(MHA_ADD, version)
    assert found == [(code, line_of(MHA_ADD, needle), sev) for code, needle, sev in expected]


POSITIONS_ADD = """
    import keras
    import keras_hub
    inp = keras.Input((None,), dtype="int32")
    tokens = keras.layers.Embedding(100, 16, mask_zero=True)(inp)
    positions = keras_hub.layers.PositionEmbedding(32)(tokens)
    x = keras.layers.Add()([tokens, positions])
    model = keras.Model(inp, keras.layers.Dense(5)(x))
    model.compile(loss="sparse_categorical_crossentropy")
"""


@pytest.mark.parametrize("version,expected", [
    ("3.15", [("MSK006", "Add()", "error")]),
    (None, [("MSK006", "Add()", "warning")]),
    ("2.15", [("MSK001", "compile", "note")]),
])
def test_merge_with_an_unmasked_input_drops_the_mask_on_keras_3(version, expected):
    found = codes(POSITIONS_ADD, version)
    assert found == [(code, line_of(POSITIONS_ADD, needle), sev) for code, needle, sev in expected]


@pytest.mark.parametrize("ignore,severity", [("0", "note"), ("-1", "error")])
def test_ignore_class_of_the_padding_label_is_exact_on_tf_keras_2_10(ignore, severity):
    source = f"""
        import tensorflow as tf
        model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8, mask_zero=True), tf.keras.layers.Dense(5)])
        model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(ignore_class={ignore}))
    """
    assert codes(source, "2.10") == [("MSK001", line_of(source, "compile"), severity)]


def test_keras_hub_embedding_and_decoder_by_keyword():
    source = """
        import keras
        import keras_nlp
        inp = keras.Input((None,), dtype="int32")
        x = keras_nlp.layers.TokenAndPositionEmbedding(vocabulary_size=100, sequence_length=32, embedding_dim=16, mask_zero=True)(inp)
        x = keras_nlp.layers.TransformerDecoder(intermediate_dim=64, num_heads=4)(decoder_sequence=x, encoder_sequence=enc)
        model = keras.Model(inp, keras.layers.Dense(100)(x))
        model.compile("rmsprop", loss="sparse_categorical_crossentropy")
    """
    assert codes(source, "2.10") == [("MSK001", line_of(source, "compile"), "error")]


@pytest.mark.parametrize("body,needle", [
    ('lm = keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en")\nlm.fit(texts)', "lm.fit"),
    ('lm = keras_hub.models.CausalLM.from_preset("gemma3_1b")\nlm.compile(sampler="greedy")\nlm.generate("a")\n'
     'lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))\nlm.fit(texts)', "loss="),
    ('lm = keras_hub.models.BertMaskedLM.from_preset("bert_tiny_en_uncased")\nlm.compile(optimizer="adam")\nlm.evaluate(texts)',
     'optimizer="adam"'),
])
def test_keras_hub_tasks_are_reported_where_compiled_or_fit(body, needle):
    source = "import keras\nimport keras_hub\n" + body + "\n"
    assert codes(source, "3.15") == [("MSK005", line_of(source, needle), "error")]


@pytest.mark.parametrize("body", [
    'lm = keras_hub.models.GemmaCausalLM.from_preset("gemma_2b_en")\nlm.compile(sampler="top_k")\nlm.generate("hi")',
    'lm = keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en", preprocessor=None)\nlm.fit(x, y)',
    'lm = keras_hub.models.GPT2CausalLM.from_preset("gpt2_base_en")\n'
    'lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"))\nlm.fit(texts)',
    'clf = keras_hub.models.BertTextClassifier.from_preset("bert_base_en", num_classes=2)\nclf.fit(texts, labels)',
])
def test_keras_hub_tasks_not_reported(body):
    assert codes("import keras\nimport keras_hub\n" + body + "\n", "3.15") == []


def test_tf_data_padding_weights_without_a_mask():
    source = """
        import tensorflow as tf
        def format_dataset(eng, spa):
            labels = spa[:, 1:]
            return {"english": eng, "spanish": spa[:, :-1]}, labels, labels != 0
        ds = tf.data.Dataset.from_tensor_slices((eng, spa)).batch(64).map(format_dataset).cache()
        model = tf.keras.Sequential([tf.keras.layers.Embedding(100, 8), tf.keras.layers.Dense(5)])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(ds, epochs=2)
    """
    assert codes(source, "3.15") == [("MSK005", line_of(source, "model.fit"), "error")]


def test_version_facts():
    assert flavours.attention_clears_input_masks(flavours.KERAS3, (3, 8)) is True
    assert flavours.attention_clears_input_masks(flavours.KERAS3, (3, 6)) is False
    assert flavours.attention_clears_input_masks(flavours.TF_KERAS, None) is False
    assert flavours.attention_clears_input_masks(None, None) is None
    assert flavours.merge_drops_mask_of_masked_inputs(flavours.KERAS3, (3, 3)) is True
    assert flavours.merge_drops_mask_of_masked_inputs(flavours.KERAS3, (3, 4)) is False
    assert flavours.ignore_class_divides_by_real_tokens(flavours.TF_DOT_KERAS, (2, 10)) is True
    assert flavours.ignore_class_divides_by_real_tokens(flavours.TF_DOT_KERAS, (2, 9)) is False
    assert flavours.negative_labels_scored_zero(flavours.KERAS3, flavours.JAX) is True
    assert flavours.negative_labels_scored_zero(flavours.KERAS3, flavours.TENSORFLOW) is False


# -- across modules ------------------------------------------------------------------------


@pytest.fixture
def scan_json(capsys):
    def _scan(*argv):
        code = main(["scan", "--output-format", "json", *map(str, argv)])
        out, _ = capsys.readouterr()
        return code, json.loads(out)

    return _scan


HELPER_PROJECT = {
    "pkg/__init__.py": "",
    "pkg/compat.py": "from tensorflow import keras\n",
    "pkg/models.py": """
        from pkg.compat import keras

        def build_model(vocab=100):
            return keras.Sequential([keras.layers.Embedding(vocab, 8, mask_zero=True), keras.layers.Dense(vocab)])
    """,
    "pkg/training.py": """
        def compile_model(model, loss="sparse_categorical_crossentropy"):
            model.compile(optimizer="adam", loss=loss)
            return model
    """,
    "train.py": """
        from pkg.models import build_model
        from pkg.training import compile_model

        model = compile_model(build_model())
        model.fit(x, y)
    """,
}


@pytest.fixture
def helper_project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.maskloss]\nkeras-version = '2.10'\n")
    for name, text in HELPER_PROJECT.items():
        write(tmp_path / name, text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("target", [".", "pkg/training.py"])
def test_helper_compiling_the_model_it_is_given_through_a_re_exported_keras(helper_project, scan_json, target):
    code, data = scan_json(target)
    assert code == 1
    expected_line = line_of(HELPER_PROJECT["pkg/training.py"], "model.compile")
    assert [(d["path"], d["line"], d["code"], d["severity"]) for d in data] == [
        ("pkg/training.py", expected_line, "MSK001", "error")
    ]
    assert "pkg/models.py:5" in data[0]["message"]  # the Embedding, through pkg.compat's keras


def test_example_suite_gets_its_findings(scan_json, monkeypatch):
    """examples/lm_suite: the sample_weight-padding model (MSK005) and the Conv1D dropper
    (MSK006) its docstrings describe, plus the stock loss on the masked models (MSK001)."""
    monkeypatch.chdir(ROOT)
    suite = ROOT / "examples" / "lm_suite"
    code, data = scan_json("--isolated", suite / "test_language_model.py", suite / "test_training.py")
    lm, training = ((suite / n).read_text() for n in ("test_language_model.py", "test_training.py"))
    got = {(pathlib.Path(d["path"]).name, d["line"], d["code"]) for d in data}
    assert got == {
        ("test_language_model.py", line_of(lm, "model.compile("), "MSK001"),
        ("test_language_model.py", line_of(lm, "model.fit(x, y, sample_weight="), "MSK005"),
        ("test_training.py", line_of(training, "model.compile("), "MSK001"),
        ("test_training.py", line_of(training, "keras.layers.Conv1D("), "MSK006"),
    }
    assert code == 1


@pytest.mark.parametrize("text, provides", [
    ("from tensorflow import keras\n", True),
    ("import keras\n", True),
    ("x = tf.keras.layers.Dense(3)\n", True),
    ("import keras_hub\n", True),
    ("class Block(Layer):\n    pass\n", True),
    ("def build():\n    return Sequential([])\n", True),
    ("def head(x):\n    return x  # keeps the mask\n", True),
    ("from keras_core import ops\n\ndef head(x):\n    return ops.softmax(x)\n", True),
    # a package whose name only starts with keras_
    ("from keras_preprocessing.text import Tokenizer\n\ndef tokenizer():\n    return Tokenizer()\n", False),
    ("import numpy as np\n\ndef pad(rows):\n    return np.asarray(rows)\n", False),
])
def test_what_an_imported_module_can_provide(text, provides):
    """An imported module that fails the prefilter is parsed only when it can give its
    importers a model, a layer or a loss (``engine._provides``)."""
    from pytest_maskloss.scan.engine import _provides

    assert _provides(text.encode()) is provides


KERAS_CORE = """
    import keras_core as keras

    model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.Dense(100)])
    model.compile("adam", "sparse_categorical_crossentropy")
"""


def test_keras_core_is_keras_3():
    """keras-core (``import keras_core``, Keras 3's preview package) is read as Keras."""
    assert codes(KERAS_CORE, "3.0") == [("MSK001", line_of(KERAS_CORE, "model.compile"), "note")]


def test_keras_core_is_keras_even_in_a_checkout_of_keras_core(tmp_path, monkeypatch, scan_json):
    """As ``keras`` in a checkout of Keras, ``keras_core`` in a checkout of keras-core is the
    Keras the rules know, not project code to analyse (its own layers are read where they are
    scanned): here its stub ``layers`` package would hide the Embedding."""
    (tmp_path / "pyproject.toml").write_text("[tool.maskloss]\nkeras-version = '3.0'\n")
    write(tmp_path / "keras_core" / "__init__.py", "from keras_core import layers\n")
    write(tmp_path / "keras_core" / "layers" / "__init__.py", "Embedding = None\n")
    write(tmp_path / "examples" / "lm.py", KERAS_CORE)
    monkeypatch.chdir(tmp_path)
    code, data = scan_json("examples/lm.py")
    assert [(d["code"], d["line"]) for d in data] == [("MSK001", line_of(KERAS_CORE, "model.compile"))]


def test_negative_padding_label_is_the_first_in_the_source_and_the_backend_the_last():
    source = """
        import os
        os.environ["KERAS_BACKEND"] = "tensorflow"
        os.environ["KERAS_BACKEND"] = "jax"
        import keras
        import numpy as np
        labels = np.full((4, 8), fill_value=-100)
        labels = np.where(labels == 0, labels, -1)
        model = keras.Sequential([keras.layers.Embedding(100, 8), keras.layers.Dense(100)])
        model.compile("adam", "sparse_categorical_crossentropy")
    """
    found = check_source(textwrap.dedent(source), "3.15")
    assert [(f.code, f.line) for f in found] == [("MSK007", line_of(source, "model.compile"))]
    assert "ignore_class=-100" in found[0].message and "KERAS_BACKEND=jax" in found[0].message
