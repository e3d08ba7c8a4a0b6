"""A sparse categorical cross-entropy is observed through per-token statistics computed inside the
step (the label's value and the row's log-sum-exp or sum), not through the (batch, time,
vocabulary) predictions, whenever nothing compared needs those: the report says which
(``report.observed``), and the figures are the same as the numpy reference the test derives from
``model.predict`` (or from the model's own logits). A compiled metric the check judges, a custom
loss or mixed precision keep the predictions path.
"""

import numpy as np
import pytest

from probe import VOCAB, padded_tokens
from stack import KERAS3, OLD_TF_KERAS, TF_BACKEND, TF_VERSION, keras, sce

from pytest_maskloss import MaskLossInputError, MaskLossMismatch, assert_masked_loss, check_masked_loss

ALL_PATHS = {"evaluate", "test_on_batch", "train_on_batch", "fit"}
STATISTICS = {path: "token statistics" for path in ALL_PATHS}


def lm(*, logits=False, loss=None, metrics=None, time_distributed=False):
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(inp)
    h = keras.layers.LSTM(8, return_sequences=True)(h)
    head = keras.layers.Dense(VOCAB, activation=None if logits else "softmax", name="head")
    out = keras.layers.TimeDistributed(head)(h) if time_distributed else head(h)
    model = keras.Model(inp, out)
    loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    model.compile("sgd", loss, metrics=metrics)
    return model


def log_softmax_loss(labels, logits):
    """-log softmax(logits)[label] per token, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    peak = z.max(axis=-1, keepdims=True)
    lse = peak[..., 0] + np.log(np.exp(z - peak).sum(axis=-1))
    return lse - np.take_along_axis(z, labels[..., None].astype(int), axis=-1)[..., 0]


def masked_mean(losses, real):
    return float(np.sum(losses * real) / np.sum(real))


def checked(model, x, y, **kwargs):
    """``assert_masked_loss``'s report; on tf.keras < 2.11, which counts the padding, the report
    of a check whose findings are that and nothing else."""
    if not OLD_TF_KERAS:
        return assert_masked_loss(model, x, y, **kwargs)
    report = check_masked_loss(model, x, y, **kwargs)
    assert {c.mode for c in report.findings} <= {"padding-in-denominator"}
    return report


@pytest.mark.parametrize("logits", [False, True], ids=["softmax", "logits"])
def test_every_path_is_observed_through_statistics_and_matches_numpy(logits):
    x = padded_tokens()
    model = lm(logits=logits)
    outputs = model.predict(x, verbose=0)
    expected = log_softmax_loss(x, outputs) if logits else sce(x, outputs)
    report = checked(model, x, x, batch_size=2)
    assert report.observed == STATISTICS
    assert {c.path for c in report.comparisons} == ALL_PATHS
    assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)


@pytest.mark.parametrize("logits", [False, True], ids=["softmax", "logits"])
def test_statistics_give_the_figures_of_the_predictions_path(logits):
    """The same model, once with a compiled accuracy (predictions sent), once without (statistics):
    every batch's reference agrees within the float32 tolerance."""
    x = padded_tokens()
    with_metric = check_masked_loss(lm(logits=logits, metrics=["accuracy"]), x, x, batch_size=2,
                                    paths=("evaluate", "test_on_batch"))
    without = check_masked_loss(lm(logits=logits), x, x, batch_size=2, paths=("evaluate", "test_on_batch"))
    assert with_metric.observed == {"evaluate": "predictions", "test_on_batch": "predictions"}
    assert without.observed == {"evaluate": "token statistics", "test_on_batch": "token statistics"}
    assert without.ok or OLD_TF_KERAS
    def losses(report):
        return {(c.path, c.scope): c for c in report.comparisons if c.quantity == "loss"}

    predicted, observed = losses(with_metric), losses(without)
    assert set(predicted) == set(observed) and len(observed) >= 4  # each batch of both paths
    for key, c in observed.items():
        assert c.reference == pytest.approx(predicted[key].reference, rel=1e-5)
        assert c.reported == pytest.approx(predicted[key].reported, rel=1e-6)


def test_a_metric_the_check_judges_keeps_the_predictions_and_metrics_false_drops_them():
    x = padded_tokens()
    model = lm(metrics=["sparse_categorical_accuracy"])
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    assert report.observed == {"evaluate": "predictions"}
    assert any(c.quantity == "sparse_categorical_accuracy" for c in report.comparisons)
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",), metrics=False)
    assert report.observed == {"evaluate": "token statistics"}
    assert all(c.quantity == "loss" for c in report.comparisons)


def test_a_custom_loss_keeps_its_own_per_token_path():
    def my_loss(y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)

    x = padded_tokens()
    report = check_masked_loss(lm(loss=my_loss), x, x, batch_size=2, paths=("evaluate",))
    assert "token statistics" not in report.observed["evaluate"]


def test_ignore_class_negative_padding_is_left_out_from_the_labels():
    x = padded_tokens()
    labels = np.where(x == 0, -1, x)
    model = lm(loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=-1))
    expected = sce(np.where(labels < 0, 0, labels), model.predict(x, verbose=0))
    report = checked(model, x, labels, batch_size=2, paths=("evaluate", "fit"))
    assert report.observed == {"evaluate": "token statistics", "fit": "token statistics"}
    assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)


def test_a_probability_output_keras_does_not_unwrap_is_clipped_as_keras_clips_it():
    """Behind TimeDistributed the TensorFlow losses find no logits and clip the probabilities
    (the statistics are the label's probability and the clipped row sum)."""
    x = padded_tokens()
    model = lm(time_distributed=True)
    report = checked(model, x, x, batch_size=2, paths=("evaluate", "train_on_batch"))
    assert report.observed == {"evaluate": "token statistics", "train_on_batch": "token statistics"}
    expected = sce(x, model.predict(x, verbose=0))  # nothing near the clip bounds here
    assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)


def tensorflow_statistics(from_logits, model, predictions_read=True):
    """The statistics evaluator of ``model``'s stack, with the loss spec and flavour it needs."""
    from pytest_maskloss.check.lossspec import resolve_loss_spec
    from pytest_maskloss.compat.detect import keras_info
    from pytest_maskloss.compat.tokenstats import statistics_evaluator

    info = keras_info(model)
    spec = resolve_loss_spec(keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    return statistics_evaluator([from_logits], info, predictions_read=predictions_read), spec, info


def per_token(spec, labels, statistics, info):
    from pytest_maskloss.check.tokenstats import per_token_from_statistics

    (kind,) = statistics
    numpy_statistics = {kind: tuple(np.asarray(v) for v in statistics[kind])}
    return kind, per_token_from_statistics(spec, labels, numpy_statistics, info.stack)


@pytest.mark.skipif(not TF_BACKEND, reason="the graph Softmax op Keras takes the logits from is TensorFlow's")
@pytest.mark.parametrize("read", [True, False], ids=["predictions-read", "predictions-unread"])
@pytest.mark.parametrize("traced", [True, False], ids=["traced", "eager"])
def test_tensorflow_statistics_are_the_labels_softmax_probability(traced, read):
    """A softmax output (its own probabilities where the step reads them anyway, traced; else
    the softmax of the logits under it, in chunks when traced) and a logits output both send the
    label's probability with a shift of 0: numpy's log-softmax of the logits from ``-log p``."""
    import tensorflow as tf

    x = padded_tokens()
    for from_logits in (False, True):
        model = lm(logits=from_logits)
        evaluate, spec, info = tensorflow_statistics(from_logits, model, predictions_read=read)
        predictions = model.predict(x, verbose=0)
        expected = log_softmax_loss(x, predictions) if from_logits else sce(x, predictions)
        run = (lambda t: evaluate(t, model(t)))
        (statistics,) = (tf.function(run) if traced else run)(tf.constant(x))
        assert not np.any(np.asarray(statistics["softmax"][0]))
        kind, losses = per_token(spec, x, statistics, info)
        assert kind == "softmax"
        np.testing.assert_allclose(losses, expected, rtol=2e-6, atol=2e-6)


@pytest.mark.skipif(not TF_BACKEND, reason="the softmax in chunks is TensorFlow's")
def test_the_softmax_in_chunks_is_the_whole_softmax(monkeypatch):
    """5 rows a chunk over 24 rows (the last chunk 4), labels outside the vocabulary NaN, and a
    batch of no rows: the label's probability from the chunks equals the one from one softmax
    over the whole batch, to the bit on TensorFlow 2.21 (2.10's softmax rounds the last bit of
    some rows by the row count: within 2 ulp there)."""
    import tensorflow as tf

    from pytest_maskloss.compat import tokenstats
    from pytest_maskloss.compat.ops import tensor_ops

    monkeypatch.setattr(tokenstats, "_CHUNK", 5 * VOCAB)
    ops = tensor_ops(keras)
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(0, 4, size=(4, 6, VOCAB)).astype("float32"))
    labels = padded_tokens()
    labels[0, :2] = (-100, VOCAB)
    chunked = tf.function(lambda y, z: tokenstats._picked_in_chunks(ops, y, z))
    whole = tokenstats._picked(ops, tf.constant(labels), tf.nn.softmax(logits, axis=-1))
    got, want = chunked(tf.constant(labels), logits).numpy(), whole.numpy()
    if TF_VERSION >= (2, 21):
        np.testing.assert_array_equal(got, want)
    inside = ~np.isnan(want)
    assert np.array_equal(np.isnan(got), ~inside)
    np.testing.assert_array_max_ulp(got[inside], want[inside], maxulp=2)
    assert np.isnan(whole.numpy()[0, :2]).all()
    empty = chunked(tf.zeros((0, 6), "int32"), tf.zeros((0, 6, VOCAB)))
    assert empty.shape == (0, 6)


@pytest.mark.skipif(not TF_BACKEND, reason="the graph Softmax op is TensorFlow's")
@pytest.mark.parametrize("read", [True, False], ids=["predictions-read", "predictions-unread"])
def test_a_softmax_output_is_read_only_where_the_step_reads_it_anyway(read):
    """Keras's loss comes from the logits under a softmax output; where nothing else reads that
    output (no compiled metrics, Keras's own step), the statistics take the softmax of the
    logits in chunks and leave the output's op unread, so it is pruned as without the check."""
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inp = keras.Input((6,), dtype="int32")  # no LSTM: the only loop is the chunks'
    out = keras.layers.Dense(VOCAB, activation="softmax")(keras.layers.Embedding(VOCAB, 8)(inp))
    model = keras.Model(inp, out)
    evaluate, _, _ = tensorflow_statistics(False, model, predictions_read=read)
    graph = tf.function(lambda t: evaluate(t, model(t))).get_concrete_function(
        tf.TensorSpec((None, 6), tf.int32)).graph
    (softmax,) = [op for op in graph.get_operations() if op.type == "Softmax"]
    assert bool(softmax.outputs[0].consumers()) is read
    assert any(op.type in ("While", "StatelessWhile") for op in graph.get_operations()) is not read


@pytest.mark.skipif(not TF_BACKEND, reason="the softmax statistics are TensorFlow's")
def test_an_underflowed_probability_sends_the_exact_form_for_its_batch():
    """Logits 0..150 apart: most labels' probabilities are below float32's normal range, so the
    batch sends ``(logit - max, max p)``, and the losses (up to 150) are still numpy's."""
    import tensorflow as tf

    x = padded_tokens()
    model, row = saturated(with_metric=False)
    evaluate, spec, info = tensorflow_statistics(False, model)
    (statistics,) = tf.function(lambda t: evaluate(t, model(t)))(tf.constant(x))
    assert np.any(np.asarray(statistics["softmax"][0]) < -100)
    kind, losses = per_token(spec, x, statistics, info)
    expected = log_softmax_loss(x, np.broadcast_to(row, x.shape + row.shape))
    assert kind == "softmax" and expected.max() > 100
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-4)


def saturated(with_metric):
    """Logits 0..150 apart: the softmax underflows to exactly 0 for most classes in float32."""
    model = lm(metrics=["accuracy"] if with_metric else None)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.linspace(0.0, 150.0, bias.size).astype(bias.dtype)])
    return model, np.linspace(0.0, 150.0, bias.size)


def test_saturated_softmax_is_exact_from_the_logits_where_keras_uses_them():
    """On the TensorFlow stacks Keras computes this loss from the logits under the softmax; the
    statistics take them there too, so the check is exact where the predictions path can only
    refuse (an underflowed probability). Keras 3 on JAX and PyTorch clip the probabilities."""
    x = padded_tokens()
    model, logits = saturated(with_metric=False)
    if TF_BACKEND:
        expected = log_softmax_loss(x, np.broadcast_to(logits, x.shape + logits.shape))
        report = checked(model, x, x, batch_size=2, paths=("evaluate", "test_on_batch"))
        assert report.observed == {"evaluate": "token statistics", "test_on_batch": "token statistics"}
        assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)
        assert report.token_mean > 50
        model, _ = saturated(with_metric=True)  # the predictions path: refused, as before
        with pytest.raises(MaskLossInputError, match="underflowed"):
            assert_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    else:
        report = checked(model, x, x, batch_size=2, paths=("evaluate",))
        expected = sce(x, model.predict(x, verbose=0))  # -log(1e-7) where p underflowed
        assert report.observed == {"evaluate": "token statistics"}
        assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)


@pytest.mark.skipif(not OLD_TF_KERAS, reason="the padding-in-denominator mask bug is tf.keras < 2.11 only")
def test_statistics_path_diagnoses_the_original_problem_on_tf210():
    x = padded_tokens()
    model = lm()
    losses = sce(x, model.predict(x, verbose=0))
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    err = caught.value
    assert err.mode == "padding-in-denominator" and err.report.observed == {"evaluate": "token statistics"}
    epoch = next(c for c in err.findings if c.scope.startswith("epoch"))
    assert epoch.reference == pytest.approx(masked_mean(losses, x != 0), rel=1e-5)
    assert epoch.reported == pytest.approx(np.sum(losses * (x != 0)) / x.size, rel=1e-5)


@pytest.mark.skipif(not TF_BACKEND, reason="XLA steps are a TensorFlow matter")
def test_an_xla_step_carries_the_statistics_in_its_logs():
    x = padded_tokens()
    keras.utils.set_random_seed(3)
    model = lm()
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
    expected = sce(x, model.predict(x, verbose=0))
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate", "fit"))
    assert report.observed == {"evaluate": "token statistics", "fit": "token statistics"}
    assert report.token_mean == pytest.approx(masked_mean(expected, x != 0), rel=1e-5)
    assert not report.skipped and (report.ok or OLD_TF_KERAS)
    history = model.fit(x, x, batch_size=2, epochs=1, verbose=0)
    assert set(history.history) == {"loss"}


@pytest.mark.skipif(not KERAS3, reason="a mixed-precision policy of Keras 3")
def test_mixed_precision_keeps_the_predictions_path():
    x = padded_tokens()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = lm()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    assert report.observed == {"evaluate": "predictions"}
