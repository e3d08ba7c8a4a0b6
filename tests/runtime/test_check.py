"""The runtime check on real Keras models: every failure mode reproduced where it happens,
diagnosed with the right mode and numbers, and correct models passing.

Expected figures are derived in the test itself (analytically, or with the test's own
per-token cross-entropy ``sce`` from the model's predictions), never from the check.
"""

import math

import numpy as np
import pytest

from stack import KERAS3, OLD_TF_KERAS, STACK, TF_BACKEND, keras, only_tf210, sce, tf, tf_backend_only

import pytest_maskloss
from pytest_maskloss import MaskLossInputError, MaskLossMismatch, assert_masked_loss
from probe import LENGTHS, VOCAB, padded_tokens



def language_model(*, mask_zero=True, middle=None, loss="sparse_categorical_crossentropy",
                   optimizer="sgd", metrics=None, T=6, seed=1, uniform=False, vocab=VOCAB):
    keras.utils.set_random_seed(seed)
    init = {"kernel_initializer": "zeros", "bias_initializer": "zeros"} if uniform else {}
    inp = keras.Input((T,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocab, 8, mask_zero=mask_zero, name="embedding")(inp)
    for layer in middle or []:
        h = layer(h)
    out = keras.layers.Dense(vocab, activation="softmax", name="next_token", **init)(h)
    model = keras.Model(inp, out, name="lm")
    model.compile(optimizer, loss, metrics=metrics)
    return model


def token_losses(model, x, y):
    return sce(y, model.predict(x, verbose=0))


# --- the original problem ----------------------------------------------------------------

SEED_LABELS = np.array([[1, 1, 2, 0, 0]])


def seed_model():
    """The seed case of docs/failure-modes.md: 5-class uniform softmax (p = 0.2 everywhere), mask_zero=True."""
    return language_model(T=5, uniform=True, vocab=5)


@only_tf210
def test_original_problem_is_padding_in_denominator_on_tf210():
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(seed_model(), SEED_LABELS, SEED_LABELS)
    err = caught.value
    assert err.mode == "padding-in-denominator"
    evaluate = next(c for c in err.findings if c.path == "evaluate")
    assert evaluate.reported == pytest.approx(-(3 * math.log(0.2)) / 5, rel=1e-6)  # 0.9656627
    assert evaluate.reference == pytest.approx(-math.log(0.2), rel=1e-6)  # 1.6094379
    assert {c.path for c in err.findings} == {"evaluate", "test_on_batch", "train_on_batch", "fit"}
    text = str(err)
    assert "0.9656627" in text and "1.609438" in text and "padding-in-denominator" in text
    assert "3 real of 5" in text and "tf.keras 2.10" in text


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports this case wrong")
def test_original_case_passes_where_keras_divides_by_real_tokens():
    report = assert_masked_loss(seed_model(), SEED_LABELS, SEED_LABELS)
    assert report.ok
    assert report.token_mean == pytest.approx(-math.log(0.2), rel=1e-6)
    assert (report.real_tokens, report.total_tokens) == (3, 5)
    assert {c.path for c in report.comparisons} == {"evaluate", "test_on_batch", "train_on_batch", "fit"}
    # every step was followed (on PyTorch, Keras' build on meta tensors is not a step)
    assert not [n for n in report.notes if "observing the steps failed" in n]


# --- padding as sample_weight --------------------------------------------------------------


def test_padding_as_sample_weight_with_default_reduction_is_padding_in_denominator():
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = language_model(mask_zero=False)
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, weights, batch_size=4, paths=("test_on_batch",))
    err = caught.value
    assert err.mode == "padding-in-denominator"
    losses = token_losses(model, x, x)
    (finding,) = err.findings
    assert finding.reported == pytest.approx(np.sum(losses * weights) / weights.size, rel=1e-5)
    assert finding.reference == pytest.approx(np.sum(losses * weights) / weights.sum(), rel=1e-5)


@pytest.mark.skipif(not KERAS3 or tuple(map(int, keras.__version__.split(".")[:2])) < (3, 7),
                    reason="reduction='mean_with_sample_weight' is Keras >= 3.7")
def test_mean_with_sample_weight_reduction_passes():
    x = padded_tokens()
    loss = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
    model = language_model(mask_zero=False, loss=loss)
    report = assert_masked_loss(model, x, x, (x != 0).astype("float32"), batch_size=2)
    assert report.ok and report.padding == "zero sample weights"


# --- mask lost inside the model ----------------------------------------------------------


def test_conv1d_after_the_embedding_loses_the_mask():
    x = padded_tokens()
    conv = keras.layers.Conv1D(8, 3, padding="same", name="conv")
    model = language_model(middle=[conv])
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    err = caught.value
    assert err.mode == "mask-lost"
    assert "'conv'" in err.findings[0].detail
    losses = token_losses(model, x, x)
    assert err.findings[0].reported == pytest.approx(losses.mean(), rel=1e-5)
    assert err.findings[0].reference == pytest.approx(losses[x != 0].mean(), rel=1e-5)
    assert "layer 'conv' drops the mask" in str(err)


# --- loss ignores the mask --------------------------------------------------------------


def dunder_call_loss():
    class MeanOverEverything(keras.losses.SparseCategoricalCrossentropy):
        """Overrides __call__: Keras never gets to apply the mask."""

        def __call__(self, y_true, y_pred, sample_weight=None):
            per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
            return tf.reduce_mean(per_token) if not KERAS3 else keras.ops.mean(per_token)

    return MeanOverEverything()


def test_loss_subclass_overriding_dunder_call_ignores_the_mask():
    x = padded_tokens()
    model = language_model(loss=dunder_call_loss())
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=4, paths=("evaluate", "test_on_batch"))
    err = caught.value
    assert err.mode == "loss-ignores-mask"
    losses = token_losses(model, x, x)
    evaluate = next(c for c in err.findings if c.path == "evaluate")
    assert evaluate.reported == pytest.approx(losses.mean(), rel=1e-5)
    assert "MeanOverEverything" in str(err)


# --- epoch aggregation ---------------------------------------------------------------------


def test_epoch_weighted_by_sequences_at_token_granularity():
    x = padded_tokens()  # batches of 2: 12 real tokens, then 3
    # learning rate 0: fit's steps predict what the model predicts now, so the test can derive them
    model = language_model(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    losses = token_losses(model, x, x)
    real = x != 0
    batch_means = [losses[:2][real[:2]].mean(), losses[2:][real[2:]].mean()]
    sequence_weighted = float(np.mean(batch_means))  # both batches hold 2 sequences
    token_mean = float(losses[real].mean())
    assert abs(sequence_weighted - token_mean) > 1e-3  # the data really separates the two
    if OLD_TF_KERAS:
        pytest.skip("tf.keras < 2.11 fails earlier, on padding in the denominator")
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=2, granularity="token", paths=("evaluate", "fit"))
    err = caught.value
    assert err.mode == "epoch-weighted-by-sequences"
    assert {c.path for c in err.findings} == {"evaluate", "fit"}
    for finding in err.findings:
        assert finding.reported == pytest.approx(sequence_weighted, rel=1e-5)
        assert finding.reference == pytest.approx(token_mean, rel=1e-5)
    # at batch granularity the same model passes, with a note about the epoch figure
    report = assert_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    assert report.ok and any("weighted by sequences" in note for note in report.notes)


# --- replicas ----------------------------------------------------------------------------


@pytest.mark.distributed
@tf_backend_only
@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 fails earlier, on padding in the denominator")
def test_mirrored_strategy_weights_replicas_equally():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy(devices[:2])
    x = padded_tokens()
    with strategy.scope():
        model = language_model()
    losses = token_losses(model, x, x)
    real = x != 0
    replica_means = [losses[:2][real[:2]].mean(), losses[2:][real[2:]].mean()]
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    err = caught.value
    assert err.mode == "replicas-weighted-equally"
    assert err.findings[0].reported == pytest.approx(np.mean(replica_means), rel=1e-5)
    assert err.findings[0].reference == pytest.approx(losses[real].mean(), rel=1e-5)


# --- empty batch -----------------------------------------------------------------------------


def test_all_padding_batch_is_diagnosed_as_empty_batch():
    x = padded_tokens([6, 6, 0, 0])  # second batch of 2 holds only padding
    model = language_model()
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=2, paths=("test_on_batch", "evaluate"))
    err = caught.value
    assert err.mode == "empty-batch"  # the first batch holds no padding at all: it is right
    first_batch = token_losses(model, x[:2], x[:2]).mean()
    evaluate = next(c for c in err.findings if c.path == "evaluate")
    assert evaluate.mode == "empty-batch" and evaluate.reference == pytest.approx(first_batch, rel=1e-5)
    # what each stack reports for a batch without a real token (docs/failure-modes.md): NaN is a
    # finding of its own; 0.0 is only noted, its harm shows in the epoch figure
    if STACK == "tf_keras" or (STACK == "tf.keras" and not OLD_TF_KERAS):
        empty = next(c for c in err.findings if c.path == "test_on_batch")
        assert empty.scope == "batch 1" and empty.real_tokens == 0 and math.isnan(empty.reported)
        assert math.isnan(evaluate.reported)
    else:
        assert [c.path for c in err.findings] == ["evaluate"]
        assert any("batch 1 holds no real token; Keras reports 0 " in n for n in err.report.notes)
        assert evaluate.reported == pytest.approx(first_batch / 2, rel=1e-5)  # 0 counted for 2 sequences


# --- metrics -------------------------------------------------------------------------------


def test_unweighted_accuracy_counts_padding_passed_as_sample_weight():
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = language_model(mask_zero=False, metrics=["accuracy"], uniform=True)
    head = model.get_layer("next_token")
    kernel, bias = head.get_weights()
    bias[0] = 5.0  # always predicts the pad id: right at every padded position, wrong elsewhere
    head.set_weights([kernel, bias])
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, weights, batch_size=4, paths=("evaluate",))
    accuracy = [c for c in caught.value.findings if c.quantity.endswith("accuracy")]
    assert accuracy and accuracy[0].mode == "metric-counts-padding"
    preds = model.predict(x, verbose=0)
    hits = (np.argmax(preds, -1) == x).astype(float)
    assert accuracy[0].reported == pytest.approx(hits.mean(), rel=1e-5) == 9 / 24
    assert accuracy[0].reference == pytest.approx(hits[x != 0].mean(), rel=1e-5)


# --- correct models pass ----------------------------------------------------------------------


def masked_mean_loss(y_true, y_pred):
    """A correct hand-written masked loss: Σ l·m / Σ m over labels != 0."""
    if KERAS3:
        ops = keras.ops
        per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        mask = ops.cast(ops.not_equal(y_true, 0), per_token.dtype)
        return ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)
    per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    mask = tf.cast(tf.not_equal(tf.cast(y_true, tf.int64), 0), per_token.dtype)
    return tf.reduce_sum(per_token * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def test_correct_hand_written_masked_loss_passes():
    x = padded_tokens()
    model = language_model(mask_zero=False, loss=masked_mean_loss)
    report = assert_masked_loss(model, x, x, batch_size=2, per_token_loss_fn=sce, pad_in="labels")
    assert report.ok
    assert len(report.comparisons) >= 6  # 2 batches × 2 per-batch paths + evaluate + fit


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_masked_language_model_passes_on_every_path_and_data_kind():
    x = padded_tokens()
    model = language_model(metrics=["accuracy", "sparse_categorical_crossentropy"])
    if STACK == "keras3-jax":
        # Keras 3 on JAX drops the mask before the compiled metrics of fit/train_on_batch (the
        # loss keeps it; docs/failure-modes.md): exactly those figures are found
        report = pytest_maskloss.check_masked_loss(model, x, x, batch_size=2)
        assert {(c.path, c.mode) for c in report.findings} <= {
            ("fit", "metric-counts-padding"), ("train_on_batch", "metric-counts-padding")}
        assert all(c.quantity != "loss" for c in report.findings) and report.findings
    paths = ("evaluate", "test_on_batch") if STACK == "keras3-jax" else ("evaluate", "test_on_batch", "train_on_batch", "fit")
    report = assert_masked_loss(model, x, x, batch_size=2, paths=paths)
    assert report.ok and report.batches == 2
    assert {c.quantity for c in report.comparisons} >= {"loss", "accuracy", "sparse_categorical_crossentropy"}
    dataset = tf.data.Dataset.from_tensor_slices((x, x)).batch(3)
    assert assert_masked_loss(model, dataset, paths=paths).batches == 2

    def generator():
        for start in (0, 2):
            yield x[start:start + 2], x[start:start + 2]

    assert assert_masked_loss(model, generator, paths=("evaluate", "test_on_batch")).ok
    assert assert_masked_loss(model, generator(), paths=("evaluate",)).ok


@tf_backend_only
@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_padded_batch_with_different_lengths_per_batch():
    rng = np.random.default_rng(3)
    sequences = [rng.integers(1, VOCAB, size=n).astype("int32") for n in (2, 5, 3, 7, 1)]
    dataset = tf.data.Dataset.from_generator(
        lambda: ((s, s) for s in sequences),
        output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)),
    ).padded_batch(2)
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(inp)
    out = keras.layers.Dense(VOCAB, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", "sparse_categorical_crossentropy")
    report = assert_masked_loss(model, dataset)
    assert report.batches == 3 and report.real_tokens == 18 and report.total_tokens == 2 * 5 + 2 * 7 + 1


@tf_backend_only
@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_length_bucketed_batches():
    rng = np.random.default_rng(4)
    sequences = [rng.integers(1, VOCAB, size=n).astype("int32") for n in (2, 9, 3, 8, 1, 4, 10)]
    dataset = tf.data.Dataset.from_generator(
        lambda: ((s, s) for s in sequences),
        output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)),
    ).bucket_by_sequence_length(lambda x, y: tf.shape(x)[0], bucket_boundaries=[5], bucket_batch_sizes=[3, 3])
    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(inp)
    model = keras.Model(inp, keras.layers.Dense(VOCAB, activation="softmax")(h))
    model.compile("sgd", "sparse_categorical_crossentropy")
    report = assert_masked_loss(model, dataset, paths=("evaluate", "test_on_batch"))
    assert report.real_tokens == sum(len(s) for s in sequences) and report.batches == 3


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_dict_inputs_and_two_outputs_with_a_loss_each():
    x = padded_tokens()
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(tokens)
    a = keras.layers.Dense(VOCAB, activation="softmax", name="a")(h)
    b = keras.layers.Dense(VOCAB, activation="softmax", name="b")(h)
    model = keras.Model({"tokens": tokens}, {"a": a, "b": b})
    model.compile("sgd", {"a": "sparse_categorical_crossentropy", "b": "sparse_categorical_crossentropy"},
                  loss_weights={"a": 1.0, "b": 0.5})
    report = assert_masked_loss(model, {"tokens": x}, {"a": x, "b": x}, batch_size=2,
                                paths=("evaluate", "test_on_batch"))
    assert report.ok
    preds = model.predict({"tokens": x}, verbose=0)
    real = x != 0
    per_batch = [sce(x[s], preds["a"][s])[real[s]].mean() + 0.5 * sce(x[s], preds["b"][s])[real[s]].mean()
                 for s in (slice(0, 2), slice(2, 4))]
    batch_figures = [c.reference for c in report.comparisons if c.path == "test_on_batch" and c.quantity == "loss"]
    assert batch_figures == pytest.approx(per_batch, rel=1e-5)


# --- what the check leaves behind and what it cannot compare --------------------------------


def test_model_weights_and_optimizer_state_are_left_as_they_were():
    x = padded_tokens()
    model = language_model(optimizer="adam")
    model.fit(x, x, batch_size=2, epochs=1, verbose=0)  # optimizer state exists and is non-zero
    weights = [w.copy() for w in model.get_weights()]
    opt_vars = model.optimizer.variables
    opt_vars = opt_vars() if callable(opt_vars) else opt_vars
    opt_state = [np.array(v.numpy()).copy() for v in opt_vars]
    try:
        assert_masked_loss(model, x, x, batch_size=2)
    except MaskLossMismatch:
        pass
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    for before, v in zip(opt_state, opt_vars):
        np.testing.assert_array_equal(before, np.array(v.numpy()))


def test_checks_of_one_model_reuse_its_traced_step_until_it_is_compiled_again():
    """A second check of the same model runs the step function traced by the first (no retrace
    per check); compile() replaces the loss, and the next check traces and judges the new one."""
    from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy

    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = language_model(mask_zero=False)
    for _ in range(2):
        with pytest.raises(MaskLossMismatch, match="padding-in-denominator"):
            assert_masked_loss(model, x, x, weights, batch_size=2, paths=("evaluate",))
        if _ == 0:
            traced = model.test_function
    assert traced is not None and model.test_function is traced
    loss = MaskedSparseCategoricalCrossentropy()
    model.compile("sgd", loss)
    report = assert_masked_loss(model, x, x, weights, batch_size=2, paths=("evaluate",))
    assert report.ok and model.test_function is not traced
    losses = token_losses(model, x, x)
    assert report.token_mean == pytest.approx(np.sum(losses * weights) / weights.sum(), rel=1e-5)
    # compiled again with the same loss object: the kept tap fits, but its traced step is the
    # old compile's, so it is traced afresh (and left on the model for the user's next call)
    traced = model.test_function
    model.compile("adam", loss)
    assert assert_masked_loss(model, x, x, weights, batch_size=2, paths=("evaluate",)).ok
    assert model.test_function is not None and model.test_function is not traced


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_dropout_training_paths_are_judged_on_the_predictions_keras_used():
    """The training steps are observed, so their predictions are the ones Dropout made: no path
    is left out, and a wrong reduction is found exactly."""
    x = padded_tokens()  # batches of 2: 12 real tokens of 12, then 3 of 12
    masked = language_model(middle=[keras.layers.Dropout(0.5, name="drop")])
    if OLD_TF_KERAS:
        with pytest.raises(MaskLossMismatch) as caught:
            assert_masked_loss(masked, x, x, batch_size=2)
        assert caught.value.mode == "padding-in-denominator"
    else:
        report = assert_masked_loss(masked, x, x, batch_size=2)
        assert {c.path for c in report.comparisons} == {"evaluate", "test_on_batch", "train_on_batch", "fit"}
        assert report.skipped == {}
    weighted = language_model(mask_zero=False, middle=[keras.layers.Dropout(0.5, name="drop")])
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(weighted, x, x, (x != 0).astype("float32"), batch_size=2, paths=("fit", "train_on_batch"))
    assert caught.value.mode == "padding-in-denominator"
    second = [c for c in caught.value.findings if c.scope.startswith("batch 1")]
    assert {c.path for c in second} == {"fit", "train_on_batch"}
    for c in second:  # Σ l·m / (B·T) against Σ l·m / Σ m: the ratio is the batch's share of real tokens
        assert c.reported / c.reference == pytest.approx(3 / 12, rel=1e-5)


# --- bad input gets a clear error --------------------------------------------------------------


def test_uncompiled_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Embedding(VOCAB, 4, mask_zero=True)])
    with pytest.raises(MaskLossInputError, match="not compiled"):
        assert_masked_loss(model, padded_tokens(), padded_tokens())


def test_pad_id_that_never_occurs():
    x = padded_tokens([6, 6, 6, 6])
    with pytest.raises(MaskLossInputError, match="no padding found"):
        assert_masked_loss(language_model(mask_zero=False), x, x, paths=("evaluate",))


def test_labels_that_do_not_match_predictions():
    x = padded_tokens()
    with pytest.raises(MaskLossInputError, match="shape"):
        assert_masked_loss(language_model(), x, x[:, :4], paths=("evaluate",))


def test_empty_data():
    x = padded_tokens()
    with pytest.raises(MaskLossInputError, match="empty"):
        assert_masked_loss(language_model(), x[:0], x[:0])
    with pytest.raises(MaskLossInputError, match="empty"):
        assert_masked_loss(language_model(), tf.data.Dataset.from_tensor_slices((x, x)).take(0).batch(2))


def test_infinite_dataset_without_steps():
    x = padded_tokens()
    dataset = tf.data.Dataset.from_tensor_slices((x, x)).batch(2).repeat()
    with pytest.raises(MaskLossInputError, match="steps="):
        assert_masked_loss(language_model(), dataset)


def test_nan_in_the_output_at_real_tokens():
    x = padded_tokens()
    model = language_model(mask_zero=False, uniform=True)
    model.layers[-1].set_weights([np.full_like(w, np.nan) for w in model.layers[-1].get_weights()])
    with pytest.raises(MaskLossInputError, match="non-finite"):
        assert_masked_loss(model, x, x, paths=("evaluate",))


def test_custom_loss_is_its_own_reference_token_by_token():
    """No per_token_loss_fn: a hand-written loss is evaluated on each token alone, in the step."""
    x = padded_tokens()
    model = language_model(loss=masked_mean_loss)
    if OLD_TF_KERAS:
        # tf.keras 2.10 multiplies the mask into the weights of the loss's scalar and divides by
        # every position: even a right hand-written mean counts the padding there
        with pytest.raises(MaskLossMismatch) as caught:
            assert_masked_loss(model, x, x, batch_size=2)
        assert caught.value.mode == "padding-in-denominator"
        return
    report = assert_masked_loss(model, x, x, batch_size=2)
    assert report.ok and "the loss itself, token by token" in report.loss
    assert {c.path for c in report.comparisons} == {"evaluate", "test_on_batch", "train_on_batch", "fit"}


def test_custom_loss_class_overriding_dunder_call_ignores_the_mask():
    class MeanOfAll(keras.losses.Loss):
        def __call__(self, y_true, y_pred, sample_weight=None):
            per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
            return keras.ops.mean(per_token) if KERAS3 else tf.reduce_mean(per_token)

    x = padded_tokens()
    model = language_model(loss=MeanOfAll())
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    assert caught.value.mode == "loss-ignores-mask"
    losses, real = token_losses(model, x, x), x != 0
    evaluate = caught.value.findings[0]
    assert evaluate.reported == pytest.approx(losses.mean(), rel=1e-5)
    assert evaluate.reference == pytest.approx(losses[real].mean(), rel=1e-5)


def saturated_model(from_logits, metrics=None):
    """A confident model: logits far apart, so softmax probabilities underflow in float32."""
    model = language_model(mask_zero=True, uniform=True, metrics=metrics)
    head = model.get_layer("next_token")
    kernel, bias = head.get_weights()
    bias[:] = np.linspace(0.0, 150.0, bias.size)  # p(class 0) ~ exp(-150): 0 in float32
    head.set_weights([kernel, bias])
    if from_logits:
        head.activation = keras.activations.linear
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_saturated_softmax_output_is_checked_exactly_or_refused_clearly():
    x = padded_tokens()
    # from logits: exact on every stack, the losses around 150 are real
    report = assert_masked_loss(saturated_model(True), x, x, batch_size=2, paths=("evaluate",))
    assert report.ok and report.token_mean > 50
    model = saturated_model(False)
    if TF_BACKEND:
        # Keras takes the logits from under the softmax; the probabilities cannot give them back.
        # Only where the predictions are sent (a compiled accuracy needs them): without one the
        # step's statistics come from those logits and the check is exact
        # (tests/runtime/test_tokenstats.py)
        with pytest.raises(MaskLossInputError, match="underflowed"):
            assert_masked_loss(saturated_model(False, metrics=["accuracy"]), x, x, batch_size=2,
                               paths=("evaluate",))
    else:  # JAX computes from the clipped probabilities: -log(1e-7) at most
        report = assert_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
        expected = token_losses(model, x, x)[x != 0].mean()  # clipped at 1e-7 where p underflowed
        assert report.ok and report.token_mean == pytest.approx(expected, rel=1e-5)
        assert expected > 5


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 1e-3), ("mixed_bfloat16", 1e-2)])
def test_mixed_precision_uses_the_tolerance_of_its_compute_dtype(policy, rtol):
    x = padded_tokens()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = language_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    report = assert_masked_loss(model, x, x, batch_size=2, paths=("evaluate", "test_on_batch"))
    assert report.ok and report.rtol == rtol
    # a tolerance given by the caller wins over the dtype default
    tight = pytest_maskloss.check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",), rtol=1e-9, atol=0)
    assert tight.rtol == 1e-9


@pytest.mark.skipif(OLD_TF_KERAS, reason="tf.keras < 2.11 reports masked losses wrong")
def test_mixed_bfloat16_lstm_is_compared():
    # an LSTM under mixed_bfloat16 hands the host bfloat16 tensors, which PyTorch cannot turn
    # into numpy directly: the path was listed as "not compared" with a misleading reason
    x = padded_tokens()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = language_model(middle=[keras.layers.LSTM(8, return_sequences=True)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    report = assert_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    assert report.ok and not report.skipped and not report.notes and report.comparisons
    expected = token_losses(model, x, x)[x != 0].mean()
    assert report.token_mean == pytest.approx(expected, rel=1e-2)


def test_endless_generator_without_steps_is_refused_and_steps_bound_it(monkeypatch):
    import itertools

    from pytest_maskloss.check import data

    x = padded_tokens()
    monkeypatch.setattr(data, "MAX_UNCOUNTED_BATCHES", 5)  # keep the test quick
    endless = ((x[2:], x[2:]) for _ in itertools.count())
    with pytest.raises(MaskLossInputError, match="steps="):
        assert_masked_loss(language_model(mask_zero=False), endless, paths=("test_on_batch",))
    bounded = ((x[2:], x[2:]) for _ in itertools.count())
    report = pytest_maskloss.check_masked_loss(language_model(), bounded, steps=3, paths=("test_on_batch",))
    assert report.batches == 3
    assert report.ok if not OLD_TF_KERAS else {c.mode for c in report.findings} == {"padding-in-denominator"}


def test_masking_layer_on_float_inputs_with_a_regression_loss():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    y = rng.normal(size=(4, 6, 2)).astype("float32")
    for i, n in enumerate(LENGTHS):
        x[i, n:] = 0.0  # padded steps: every feature equals the Masking value
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.Masking(0.0), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    real = np.any(x != 0.0, axis=-1)
    per_step = ((model.predict(x, verbose=0) - y) ** 2).mean(-1)
    if OLD_TF_KERAS:
        with pytest.raises(MaskLossMismatch) as caught:
            assert_masked_loss(model, x, y, batch_size=4, paths=("evaluate",))
        assert caught.value.mode == "padding-in-denominator"
        assert caught.value.findings[0].reported == pytest.approx(per_step[real].sum() / real.size, rel=1e-5)
    else:
        report = assert_masked_loss(model, x, y, batch_size=4)
        assert report.ok and report.padding == "inputs equal to the Masking value 0.0"
        assert report.token_mean == pytest.approx(per_step[real].mean(), rel=1e-5)


def test_package_fixes_pass_at_token_granularity_where_the_stock_loss_fails():
    from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy, TokenMeanLoss, TokenPerplexity

    x = padded_tokens()  # batches of 2 hold 12 and 3 real tokens
    stock = language_model()
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(stock, x, x, batch_size=2, granularity="token", paths=("evaluate",))
    assert caught.value.mode == ("padding-in-denominator" if OLD_TF_KERAS else "epoch-weighted-by-sequences")

    fixed = language_model(loss=MaskedSparseCategoricalCrossentropy(),
                           metrics=[TokenMeanLoss("sparse_categorical_crossentropy"), TokenPerplexity()])
    report = assert_masked_loss(fixed, x, x, batch_size=2, granularity="token",
                                paths=("evaluate", "test_on_batch"))
    losses = token_losses(fixed, x, x)
    token_mean = losses[x != 0].mean()
    by_name = {c.quantity: c for c in report.comparisons if c.path == "evaluate"}
    assert by_name["token_mean_loss"].reported == pytest.approx(token_mean, rel=1e-5)
    assert by_name["token_perplexity"].reported == pytest.approx(np.exp(token_mean), rel=1e-5)
    assert "MaskedSparseCategoricalCrossentropy" in report.loss
