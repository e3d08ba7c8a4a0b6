"""The fixes of ``pytest_maskloss.keras`` against the failure modes they remove, on real Keras.

Every expected figure is computed here in numpy from the model's own predictions (per-token
cross-entropy, then the reduction written out by hand): "before" asserts the wrong figure the
stock loss reports (docs/failure-modes.md), "after" asserts the token mean for the fix.

Stacks: Keras 3 on TensorFlow (default), Keras 3 on JAX (``KERAS_BACKEND=jax``), tf_keras
(``TF_USE_LEGACY_KERAS=1``), tf.keras 2.10 (its own venv).
"""

import math
import os

import numpy as np
import pytest
from stack import BACKEND, KERAS3, to_numpy

mk = pytest.importorskip("pytest_maskloss.keras", reason="needs TensorFlow or Keras")
K = mk.keras

VERSION = tuple(int(p) for p in K.__version__.split(".")[:2])
TF210 = not KERAS3 and VERSION < (2, 11)  # tf.keras 2.10: mask in the denominator
STACK = f"{'keras' if KERAS3 else ('tf_keras' if K.__name__ == 'tf_keras' else 'tf.keras')} {K.__version__} ({BACKEND})"

RTOL32 = 1e-5
V, T = 7, 6
# 4 sequences with 6, 6, 2 and 1 real tokens; 0 is padding (inputs and labels).
X = np.array(
    [[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 1], [3, 4, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]], "int32"
)
Y = np.array(
    [[2, 3, 4, 5, 6, 1], [3, 4, 5, 6, 1, 2], [4, 5, 0, 0, 0, 0], [6, 0, 0, 0, 0, 0]], "int32"
)
M = (Y != 0).astype("float64")


# --- numpy reference ---------------------------------------------------------------------


def np_sparse_ce(y, out, from_logits=False):
    """Per-token sparse categorical cross-entropy in float64."""
    out = np.asarray(out, "float64")
    if from_logits:
        z = out - out.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    else:
        p = np.clip(out / out.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
        logp = np.log(p)
    return -np.take_along_axis(logp, np.asarray(y)[..., None].astype("int64"), -1)[..., 0]


def token_mean(l, w):
    """Σ l·w / Σ w (0 for no real token): the figure a person means."""
    s = float(np.sum(w))
    return float(np.sum(l * w)) / s if s else 0.0


def padded_mean(l, w):
    """Σ l·w / (B·T): padding in the denominator."""
    return float(np.sum(l * w)) / l.size


def batches(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def by_sequences(l, w, size, per_batch=token_mean):
    """Keras' epoch figure: per-batch figures averaged with weight = batch size."""
    parts = [(per_batch(l[s], w[s]), l[s].shape[0]) for s in batches(len(l), size)]
    return sum(v * n for v, n in parts) / sum(n for _, n in parts)


# --- models --------------------------------------------------------------------------------


def build(mask_zero=True, logits=False, seq_len=T, seed=0):
    K.utils.set_random_seed(seed)
    inp = K.Input((seq_len,), dtype="int32")
    h = K.layers.Embedding(V, 8, mask_zero=mask_zero)(inp)
    out = K.layers.Dense(V, activation=None if logits else "softmax")(h)
    return K.Model(inp, out)


def compiled(loss, metrics=(), lr=0.0, **kw):
    model = build(**kw)
    model.compile(optimizer=K.optimizers.SGD(learning_rate=lr), loss=loss, metrics=list(metrics))
    return model


def outputs(model, x):
    """The model's output on ``x`` as numpy (a direct call: no predict function to trace)."""
    return to_numpy(model(x, training=False))


def per_token(model, x=X, y=Y, logits=False):
    return np_sparse_ce(y, outputs(model, x), from_logits=logits)


def scalar(result):
    return float(result[0] if isinstance(result, (list, tuple)) else result)


def logs(model, result):
    if isinstance(result, dict):
        return {k: float(v) for k, v in result.items()}
    names = model.metrics_names
    result = result if isinstance(result, (list, tuple)) else [result]
    return dict(zip(names, map(float, result)))


ALL_PATHS = ("evaluate", "test_on_batch", "train_on_batch", "fit")
QUICK_PATHS = ("test_on_batch", "train_on_batch")  # one test and one train function


def all_paths(model, x, y, sample_weight=None, batch_size=4, paths=ALL_PATHS):
    """The loss each reporting path gives on one batch of ``x`` (SGD lr=0: weights fixed)."""
    kw = {} if sample_weight is None else {"sample_weight": sample_weight}
    run = {
        "evaluate": lambda: scalar(model.evaluate(x, y, batch_size=batch_size, verbose=0, **kw)),
        "test_on_batch": lambda: scalar(model.test_on_batch(x, y, **kw)),
        "train_on_batch": lambda: scalar(model.train_on_batch(x, y, **kw)),
        "fit": lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, **kw)
        .history["loss"][0],
    }
    return {path: run[path]() for path in paths}


def assert_paths(figures, expected, rtol=RTOL32):
    for path, value in figures.items():
        assert value == pytest.approx(expected, rel=rtol), (path, value, expected, STACK)


MASKED_FORMS = {
    "MaskedSparseCategoricalCrossentropy": lambda: mk.MaskedSparseCategoricalCrossentropy(),
    "MaskedLoss(str)": lambda: mk.MaskedLoss("sparse_categorical_crossentropy"),
    "MaskedLoss(function)": lambda: mk.MaskedLoss(K.losses.sparse_categorical_crossentropy),
    "MaskedLoss(Loss)": lambda: mk.MaskedLoss(K.losses.SparseCategoricalCrossentropy()),
}


def test_keras_module_follows_the_environment():
    if os.environ.get("TF_USE_LEGACY_KERAS", "") in ("1", "true"):
        assert K.__name__ == "tf_keras"
    elif KERAS3:
        assert K.__name__ == "keras" and VERSION >= (3, 0)
    else:
        import tensorflow as tf

        assert K is tf.keras and TF210
    assert mk.keras_module() is K


# --- padding as sample_weight, default reduction (every stack) -----------------------------


def test_before_sample_weight_padding_is_in_the_denominator():
    model = compiled("sparse_categorical_crossentropy", mask_zero=False)
    l = per_token(model)
    wrong, right = padded_mean(l, M), token_mean(l, M)
    assert abs(wrong - right) > 0.1  # the case discriminates
    assert_paths(all_paths(model, X, Y, sample_weight=M), wrong)


@pytest.mark.parametrize("form", sorted(MASKED_FORMS))
def test_after_sample_weight_padding_gives_token_mean(form):
    model = compiled(MASKED_FORMS[form](), mask_zero=False)
    l = per_token(model)
    paths = ALL_PATHS if form == "MaskedSparseCategoricalCrossentropy" else QUICK_PATHS
    assert_paths(all_paths(model, X, Y, sample_weight=M, paths=paths), token_mean(l, M))


def test_after_non_binary_sample_weights_weight_and_normalise():
    w = M * np.array([[1.0], [2.0], [0.5], [3.0]])
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), mask_zero=False)
    l = per_token(model)
    assert_paths(all_paths(model, X, Y, sample_weight=w, paths=QUICK_PATHS), token_mean(l, w))


@pytest.mark.parametrize("option", ["pad_id", "ignore_class"])
def test_after_pad_id_in_labels_without_mask_or_weights(option):
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(**{option: 0}), mask_zero=False)
    assert model.loss.get_config()["pad_id"] == 0
    l = per_token(model)
    assert abs(token_mean(l, np.ones_like(M)) - token_mean(l, M)) > 1e-3
    assert_paths(all_paths(model, X, Y, paths=QUICK_PATHS), token_mean(l, M))


# --- Embedding(mask_zero=True): tf.keras 2.10 divides by all positions ----------------------


@pytest.mark.skipif(not TF210, reason=f"{STACK} divides a masked batch by its real tokens; "
                    "padding in the denominator is tf.keras <= 2.10 only")
def test_before_tf210_mask_zero_padding_in_denominator():
    model = compiled("sparse_categorical_crossentropy")
    l = per_token(model)
    assert_paths(all_paths(model, X, Y), padded_mean(l, M))


@pytest.mark.skipif(TF210, reason="tf.keras 2.10 puts padding in the denominator (tested above)")
def test_before_mask_zero_per_batch_already_right_here():
    model = compiled("sparse_categorical_crossentropy")
    l = per_token(model)
    assert_paths(all_paths(model, X, Y, paths=QUICK_PATHS), token_mean(l, M))


@pytest.mark.parametrize("form", sorted(MASKED_FORMS))
def test_after_mask_zero_gives_token_mean(form):
    model = compiled(MASKED_FORMS[form]())
    l = per_token(model)
    paths = ALL_PATHS if form == "MaskedSparseCategoricalCrossentropy" else QUICK_PATHS
    assert_paths(all_paths(model, X, Y, paths=paths), token_mean(l, M))


def test_after_per_sequence_sample_weights_with_mask():
    w = np.array([1.0, 0.0, 2.0, 1.0], "float32")  # one weight per sequence, (B,)
    model = compiled(mk.MaskedSparseCategoricalCrossentropy())
    l = per_token(model)
    assert_paths(all_paths(model, X, Y, sample_weight=w, paths=QUICK_PATHS), token_mean(l, M * w[:, None]))


def test_after_mask_and_sample_weight_combine():
    w = np.array([[1.0], [0.0], [2.0], [1.0]]) * np.ones((4, T))  # second sequence dropped
    model = compiled(mk.MaskedSparseCategoricalCrossentropy())
    l = per_token(model)
    assert_paths(all_paths(model, X, Y, sample_weight=w, paths=QUICK_PATHS), token_mean(l, M * w))


# --- epoch aggregation across batches with different numbers of real tokens -----------------


def test_before_epoch_loss_is_weighted_by_sequences():
    model = compiled("sparse_categorical_crossentropy")
    l = per_token(model)
    per_batch = padded_mean if TF210 else token_mean
    expected = by_sequences(l, M, 2, per_batch)
    assert abs(expected - token_mean(l, M)) > 1e-3
    got = scalar(model.evaluate(X, Y, batch_size=2, verbose=0))
    assert got == pytest.approx(expected, rel=RTOL32)


def test_after_token_metrics_give_corpus_mean_and_perplexity():
    # pad_id=0: the metrics find padding in the labels too (the Keras mask does not reach
    # compiled metrics on Keras 3 JAX training paths, see the next test)
    metrics = [mk.TokenMeanLoss(pad_id=0), mk.TokenPerplexity(pad_id=0)]
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), metrics)
    l = per_token(model)
    corpus = token_mean(l, M)
    for result in (
        logs(model, model.evaluate(X, Y, batch_size=2, verbose=0, return_dict=True)),
        {k: v[0] for k, v in model.fit(X, Y, batch_size=2, verbose=0, shuffle=False).history.items()},
    ):
        assert result["token_mean_loss"] == pytest.approx(corpus, rel=RTOL32)
        assert result["token_perplexity"] == pytest.approx(math.exp(corpus), rel=RTOL32)
        # the loss itself is exact per batch; Keras averages batches by sequence count
        assert result["loss"] == pytest.approx(by_sequences(l, M, 2), rel=RTOL32)


@pytest.mark.skipif(BACKEND != "jax", reason=f"{STACK}: compiled metrics see the Keras mask on every path")
def test_jax_training_paths_drop_the_mask_before_metrics_pad_id_restores_it():
    """Keras 3 on JAX computes metrics outside the differentiated function: y_pred comes back
    without its mask, so on fit/train_on_batch every compiled metric (stock ones too) counts
    padding. The loss is computed inside and keeps it."""
    metrics = ["sparse_categorical_crossentropy", mk.TokenMeanLoss(), mk.TokenMeanLoss(pad_id=0, name="padded")]
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), metrics)
    l = per_token(model)
    result = model.train_on_batch(X, Y, return_dict=True)
    unmasked, right = token_mean(l, np.ones_like(M)), token_mean(l, M)
    assert abs(unmasked - right) > 1e-3
    assert float(result["loss"]) == pytest.approx(right, rel=RTOL32)
    assert float(result["sparse_categorical_crossentropy"]) == pytest.approx(unmasked, rel=RTOL32)
    assert float(result["token_mean_loss"]) == pytest.approx(unmasked, rel=RTOL32)
    assert float(result["padded"]) == pytest.approx(right, rel=RTOL32)
    evaluated = model.evaluate(X, Y, verbose=0, return_dict=True)  # evaluate keeps the mask
    assert float(evaluated["token_mean_loss"]) == pytest.approx(right, rel=RTOL32)


def test_after_token_metrics_exact_across_padded_lengths():
    """Batches of padded length 6 and 3 (12 and 3 real tokens) through one variable-length model."""
    metrics = [mk.TokenMeanLoss(), mk.TokenPerplexity()]
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), metrics, seq_len=None)
    parts = [(X[:2], Y[:2]), (X[2:, :3], Y[2:, :3])]
    sums = [per_token(model, x, y) for x, y in parts]
    masks = [(y != 0).astype("float64") for _, y in parts]
    corpus = sum(float((l * m).sum()) for l, m in zip(sums, masks)) / sum(m.sum() for m in masks)

    def data():
        yield from parts

    result = logs(model, model.evaluate(data(), steps=2, verbose=0, return_dict=True))
    assert result["token_mean_loss"] == pytest.approx(corpus, rel=RTOL32)
    assert result["token_perplexity"] == pytest.approx(math.exp(corpus), rel=RTOL32)
    for (x, y), l, m in zip(parts, sums, masks):
        assert scalar(model.test_on_batch(x, y)) == pytest.approx(token_mean(l, m), rel=RTOL32)


def test_metric_standalone_accumulates_sums():
    rng = np.random.default_rng(0)
    metric = mk.TokenMeanLoss(from_logits=True)
    total, count = 0.0, 0.0
    for seq_len, real in ((5, [5, 1]), (3, [0, 2]), (7, [7, 7])):
        z = rng.normal(size=(2, seq_len, V)).astype("float32")
        y = rng.integers(1, V, size=(2, seq_len))
        w = (np.arange(seq_len)[None, :] < np.array(real)[:, None]).astype("float32")
        metric.update_state(y, z, sample_weight=w)
        l = np_sparse_ce(y, z, from_logits=True)
        total, count = total + float((l * w).sum()), count + float(w.sum())
    assert float(metric.result()) == pytest.approx(total / count, rel=RTOL32)
    metric.reset_state()
    assert float(metric.result()) == 0.0


# --- an all-padding batch ------------------------------------------------------------------


EMPTY_X = np.zeros((2, T), "int32")


@pytest.mark.skipif(KERAS3 or TF210, reason=f"{STACK} already reports 0.0 on an all-padding batch")
def test_before_empty_batch_is_nan():
    model = compiled("sparse_categorical_crossentropy")
    assert math.isnan(scalar(model.test_on_batch(EMPTY_X, EMPTY_X)))


def test_after_empty_batch_is_zero():
    metrics = [mk.TokenMeanLoss()]
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), metrics)
    figures = all_paths(model, EMPTY_X, EMPTY_X, batch_size=2)
    assert figures == {k: 0.0 for k in figures}
    # an empty batch adds nothing to the token metrics
    l = per_token(model)
    xs, ys = np.concatenate([X, EMPTY_X]), np.concatenate([Y, EMPTY_X])
    result = logs(model, model.evaluate(xs, ys, batch_size=2, verbose=0, return_dict=True))
    assert result["token_mean_loss"] == pytest.approx(token_mean(l, M), rel=RTOL32)
    # and all-zero sample weights are an empty batch too
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(), mask_zero=False)
    assert scalar(model.test_on_batch(X, Y, sample_weight=np.zeros((4, T)))) == 0.0


# --- the other stock losses ------------------------------------------------------------------


def _dense_model(units, activation):
    K.utils.set_random_seed(1)
    inp = K.Input((T,), dtype="int32")
    h = K.layers.Embedding(V, 8, mask_zero=True)(inp)
    out = K.layers.Dense(units, activation=activation)(h)
    model = K.Model(inp, out)
    return model


def test_masked_categorical_crossentropy_with_one_hot_and_pad_id():
    model = _dense_model(V, "softmax")
    model.compile(K.optimizers.SGD(0.0), loss=mk.MaskedCategoricalCrossentropy(pad_id=0))
    onehot = np.eye(V, dtype="float32")[Y]
    l = np_sparse_ce(Y, outputs(model, X))
    assert_paths(all_paths(model, X, onehot, paths=QUICK_PATHS), token_mean(l, M))


def test_masked_binary_crossentropy_and_mse():
    rng = np.random.default_rng(2)
    target = rng.integers(0, 2, size=(4, T, 3)).astype("float32")
    model = _dense_model(3, "sigmoid")
    p = np.clip(outputs(model, X).astype("float64"), 1e-7, 1 - 1e-7)
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p)).mean(-1)
    mse = ((target - p) ** 2).mean(-1)
    model.compile(K.optimizers.SGD(0.0), loss=mk.MaskedBinaryCrossentropy())
    assert_paths(all_paths(model, X, target, paths=("test_on_batch",)), token_mean(bce, M), rtol=1e-4)
    model.compile(K.optimizers.SGD(0.0), loss=mk.MaskedMeanSquaredError())
    assert_paths(all_paths(model, X, target, paths=("test_on_batch",)), token_mean(mse, M), rtol=1e-4)


# --- mixed precision -------------------------------------------------------------------------


@pytest.fixture
def mixed_float16():
    K.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        K.mixed_precision.set_global_policy("float32")


def test_after_mixed_float16(mixed_float16):
    metrics = [mk.TokenMeanLoss(from_logits=True), mk.TokenPerplexity(from_logits=True)]
    model = compiled(mk.MaskedSparseCategoricalCrossentropy(from_logits=True), metrics, logits=True)
    z = outputs(model, X)
    assert z.dtype == np.float16  # the output really is half precision
    l = np_sparse_ce(Y, z, from_logits=True)
    assert_paths(all_paths(model, X, Y, paths=QUICK_PATHS), token_mean(l, M), rtol=1e-3)
    result = logs(model, model.evaluate(X, Y, batch_size=2, verbose=0, return_dict=True))
    assert result["token_perplexity"] == pytest.approx(math.exp(token_mean(l, M)), rel=1e-3)
    assert scalar(model.test_on_batch(EMPTY_X, EMPTY_X)) == 0.0


# --- serialisation -------------------------------------------------------------------------


SERIALISABLE = {
    "MaskedSparseCategoricalCrossentropy": lambda: mk.MaskedSparseCategoricalCrossentropy(from_logits=True, pad_id=0),
    "MaskedLoss(str)": lambda: mk.MaskedLoss("sparse_categorical_crossentropy", pad_id=0),
    "MaskedLoss(Loss)": lambda: mk.MaskedLoss(K.losses.SparseCategoricalCrossentropy(from_logits=True)),
}


@pytest.mark.parametrize("form", sorted(SERIALISABLE))
def test_get_config_round_trip(form):
    loss = SERIALISABLE[form]()
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    rebuilt = K.losses.deserialize(K.losses.serialize(loss))
    assert type(rebuilt) is type(loss) and rebuilt.get_config() == loss.get_config()
    for metric in (mk.TokenMeanLoss(pad_id=0, from_logits=True), mk.TokenPerplexity(from_logits=True)):
        again = type(metric).from_config(metric.get_config())
        assert again.get_config() == metric.get_config()


SAVE_CASES = [(form, "model.keras" if KERAS3 else "model.h5") for form in sorted(SERIALISABLE)]
if not KERAS3:  # SavedModel is slow to write: one form
    SAVE_CASES.append(("MaskedSparseCategoricalCrossentropy", "savedmodel"))


@pytest.mark.parametrize("form,filename", SAVE_CASES)
def test_save_and_load_round_trip(tmp_path, filename, form):
    logits = form != "MaskedLoss(str)"
    metrics = [mk.TokenMeanLoss(from_logits=logits), mk.TokenPerplexity(from_logits=logits)]
    model = compiled(SERIALISABLE[form](), metrics, logits=logits, mask_zero=False)
    l = per_token(model, logits=logits)
    path = str(tmp_path / filename)
    model.save(path)
    loaded = K.models.load_model(path)
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.get_config() == model.loss.get_config()
    # no mask in this model: padding is dropped only by pad_id=0 (the metrics count every position)
    weights = M if getattr(model.loss, "pad_id", None) == 0 else np.ones_like(M)
    result = logs(loaded, loaded.evaluate(X, Y, batch_size=2, verbose=0, return_dict=True))
    assert result["token_mean_loss"] == pytest.approx(token_mean(l, np.ones_like(M)), rel=RTOL32)
    assert scalar(loaded.test_on_batch(X, Y)) == pytest.approx(token_mean(l, weights), rel=RTOL32)


# --- tf.distribute.MirroredStrategy with two logical CPU devices ------------------------------


@pytest.fixture(scope="module")
def mirrored():
    if BACKEND != "tensorflow":
        pytest.skip(f"{STACK}: tf.distribute needs the TensorFlow backend (JAX has no MirroredStrategy)")
    import tensorflow as tf

    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (set up in tests/conftest.py)")
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def _one_step(strategy, loss_factory, metrics_factory=lambda: []):
    """Loss reported by fit on the 4 sequences (global batch 4 → 2 per replica) and the
    weight change of one SGD(lr=1) step, i.e. minus the gradients."""
    import tensorflow as tf

    with (strategy or tf.distribute.get_strategy()).scope():
        model = build()
        model.compile(K.optimizers.SGD(learning_rate=1.0), loss=loss_factory(), metrics=metrics_factory())
    l = per_token(model)
    before = model.get_weights()
    history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    grads = [b - a for a, b in zip(model.get_weights(), before)]
    return l, {k: v[0] for k, v in history.items()}, grads


@pytest.mark.distributed
@pytest.mark.skipif(TF210, reason="tf.keras 2.10: padding in the denominator, replicas of equal "
                    "B*T: the stock loss is not replica-weighted there (the fix is tested below)")
def test_before_mirrored_weights_replicas_equally(mirrored):
    stock = lambda: "sparse_categorical_crossentropy"  # noqa: E731
    l, history, grads = _one_step(mirrored, stock)
    _, _, single = _one_step(None, stock)
    replica_means = [token_mean(l[:2], M[:2]), token_mean(l[2:], M[2:])]  # 12 and 3 real tokens
    assert history["loss"] == pytest.approx(np.mean(replica_means), rel=RTOL32)
    assert abs(np.mean(replica_means) - token_mean(l, M)) > 1e-3
    assert max(np.abs(a - b).max() for a, b in zip(grads, single)) > 1e-3


@pytest.mark.distributed
def test_after_mirrored_matches_single_device(mirrored):
    loss = mk.MaskedSparseCategoricalCrossentropy
    metrics = lambda: [mk.TokenMeanLoss(), mk.TokenPerplexity()]  # noqa: E731
    l, history, grads = _one_step(mirrored, loss, metrics)
    l1, history1, single = _one_step(None, loss, metrics)
    np.testing.assert_allclose(l, l1, rtol=1e-6)
    expected = token_mean(l, M)
    assert history["loss"] == pytest.approx(expected, rel=RTOL32)
    assert history["token_mean_loss"] == pytest.approx(expected, rel=RTOL32)
    assert history["token_perplexity"] == pytest.approx(math.exp(expected), rel=RTOL32)
    assert history1["loss"] == pytest.approx(expected, rel=RTOL32)
    for a, b in zip(grads, single):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(np.abs(g).max() for g in grads) > 1e-2  # the step really moved the weights


@pytest.mark.distributed
@pytest.mark.skipif(KERAS3, reason=f"{STACK}: evaluate crashes on a batch split unevenly over "
                    "replicas (AddN shape mismatch), with the stock loss too")
def test_after_mirrored_uneven_split_is_exact(mirrored):
    """A global batch of 3: 2 sequences (8 real tokens) on one replica, 1 (1 token) on the other."""
    with mirrored.scope():
        model = compiled(mk.MaskedSparseCategoricalCrossentropy(), [mk.TokenMeanLoss()])
    l = per_token(model)
    s = slice(1, 4)
    result = logs(model, model.evaluate(X[s], Y[s], batch_size=3, verbose=0, return_dict=True))
    assert result["loss"] == pytest.approx(token_mean(l[s], M[s]), rel=RTOL32)
    assert result["token_mean_loss"] == pytest.approx(token_mean(l[s], M[s]), rel=RTOL32)


@pytest.mark.distributed
def test_after_mirrored_custom_loop_sums_to_global_mean(mirrored):
    """strategy.run + strategy.reduce(SUM): the per-replica values and gradients add up to the
    global token mean and its gradients."""
    import tensorflow as tf

    loss_fn = mk.MaskedSparseCategoricalCrossentropy()
    with mirrored.scope():
        model = build()
    l = per_token(model)

    def step(x, y):
        with tf.GradientTape() as tape:
            value = loss_fn(y, model(x, training=True))
        return value, tape.gradient(value, model.trainable_variables)

    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    x, y = next(iter(mirrored.experimental_distribute_dataset(dataset)))
    value, grads = mirrored.run(tf.function(step), args=(x, y))
    total = float(mirrored.reduce(tf.distribute.ReduceOp.SUM, value, axis=None))
    assert total == pytest.approx(token_mean(l, M), rel=RTOL32)
    single_value, single_grads = tf.function(step)(tf.constant(X), tf.constant(Y))
    assert float(single_value) == pytest.approx(token_mean(l, M), rel=RTOL32)
    for g, g1 in zip(grads, single_grads):
        summed = mirrored.reduce(tf.distribute.ReduceOp.SUM, g, axis=None)
        np.testing.assert_allclose(np.asarray(tf.convert_to_tensor(summed)),
                                   np.asarray(tf.convert_to_tensor(g1)), rtol=1e-5, atol=1e-7)


@pytest.mark.distributed
def test_after_mirrored_evaluate_and_metrics_over_steps(mirrored):
    with mirrored.scope():
        model = compiled(mk.MaskedSparseCategoricalCrossentropy(), [mk.TokenMeanLoss()])
    l = per_token(model)
    # two steps of global batch 2 (one sequence per replica): 12 then 3 real tokens; the
    # second replica of the second step holds a single real token
    result = logs(model, model.evaluate(X, Y, batch_size=2, verbose=0, return_dict=True))
    assert result["token_mean_loss"] == pytest.approx(token_mean(l, M), rel=RTOL32)
    assert result["loss"] == pytest.approx(by_sequences(l, M, 2), rel=RTOL32)
    for s in batches(4, 2):
        assert scalar(model.test_on_batch(X[s], Y[s])) == pytest.approx(token_mean(l[s], M[s]), rel=RTOL32)




# --- the runtime check is the judge: it fails on the stock loss, passes on the fix -----------

try:
    from pytest_maskloss import MaskLossMismatch
    from pytest_maskloss import check
except ImportError:  # only these tests need the runtime check
    check = None
needs_check = pytest.mark.skipif(check is None, reason="pytest_maskloss.check is not importable")


def np_reference(y_true, y_pred):
    return np_sparse_ce(y_true, y_pred)


@needs_check
def test_check_sample_weight_padding_before_fails_after_passes():
    stock = compiled("sparse_categorical_crossentropy", mask_zero=False)
    with pytest.raises(MaskLossMismatch) as caught:
        check.assert_masked_loss(stock, X, Y, M, batch_size=2)
    assert caught.value.mode == "padding-in-denominator"
    fixed = compiled(mk.MaskedSparseCategoricalCrossentropy(), mask_zero=False)
    report = check.assert_masked_loss(fixed, X, Y, M, batch_size=2, per_token_loss_fn=np_reference)
    assert report.ok and report.real_tokens == int(M.sum())
    assert {c.path for c in report.comparisons} == set(check.ALL_PATHS)


@needs_check
def test_check_mask_zero_before_fails_on_tf210_after_passes_everywhere():
    if TF210:  # elsewhere the stock loss passes per batch (tests/runtime/test_check.py)
        stock = compiled("sparse_categorical_crossentropy")
        with pytest.raises(MaskLossMismatch) as caught:
            check.assert_masked_loss(stock, X, Y, batch_size=2)
        assert caught.value.mode == "padding-in-denominator"
    fixed = compiled(mk.MaskedSparseCategoricalCrossentropy())
    assert check.assert_masked_loss(fixed, X, Y, batch_size=2, per_token_loss_fn=np_reference).ok


@needs_check
def test_check_token_granularity():
    """At token granularity a one-batch epoch passes; over batches with different real-token
    counts the Keras epoch *loss* stays weighted by sequences (the loss tracker weights batches
    by size, whatever the loss returns): without a token metric that is a finding, with
    TokenMeanLoss compiled the metric carries the token-level figure and is judged instead."""
    epochs = ("evaluate", "fit")
    bare = compiled(mk.MaskedSparseCategoricalCrossentropy())
    assert check.assert_masked_loss(bare, X, Y, batch_size=4, granularity="token",
                                    per_token_loss_fn=np_reference, paths=epochs).ok
    with pytest.raises(MaskLossMismatch) as caught:
        check.assert_masked_loss(bare, X, Y, batch_size=2, granularity="token",
                                 per_token_loss_fn=np_reference, paths=epochs)
    findings = caught.value.findings
    assert {f.mode for f in findings} == {"epoch-weighted-by-sequences"}
    assert {f.path for f in findings} == set(epochs)
    assert all(f.scope.startswith("epoch") and f.quantity == "loss" for f in findings)
    assert findings[0].reference == pytest.approx(token_mean(per_token(bare), M), rel=RTOL32)

    metric = compiled(mk.MaskedSparseCategoricalCrossentropy(), [mk.TokenMeanLoss(pad_id=0)])
    report = check.assert_masked_loss(metric, X, Y, batch_size=2, granularity="token",
                                      per_token_loss_fn=np_reference, paths=epochs)
    judged = [c for c in report.comparisons if c.quantity == "token_mean_loss"]
    assert {c.path for c in judged} == set(epochs)
    for c in judged:
        assert c.reported == pytest.approx(token_mean(per_token(metric), M), rel=RTOL32)


@needs_check
def test_check_mixed_float16_passes(mixed_float16):
    fixed = compiled(mk.MaskedSparseCategoricalCrossentropy())
    assert outputs(fixed, X).dtype == np.float16
    assert check.assert_masked_loss(fixed, X, Y, batch_size=2, per_token_loss_fn=np_reference,
                                    paths=("evaluate", "train_on_batch")).ok


@needs_check
@pytest.mark.distributed
def test_check_mirrored_before_fails_after_passes(mirrored):
    if not TF210:
        with mirrored.scope():
            stock = compiled("sparse_categorical_crossentropy")
        with pytest.raises(MaskLossMismatch) as caught:
            check.assert_masked_loss(stock, X, Y, batch_size=4, paths=("evaluate",))
        assert caught.value.mode == "replicas-weighted-equally"
    with mirrored.scope():
        fixed = compiled(mk.MaskedSparseCategoricalCrossentropy())
    # fit under the strategy is compared with a single-device run above
    report = check.assert_masked_loss(fixed, X, Y, batch_size=4, per_token_loss_fn=np_reference,
                                      paths=("evaluate", "train_on_batch"))
    assert report.ok and {c.path for c in report.comparisons} == {"evaluate", "train_on_batch"}
