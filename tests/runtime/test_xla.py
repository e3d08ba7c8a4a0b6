"""A TensorFlow step compiled by XLA (``jit_compile=True``: Keras 3's default when a GPU is
visible) is observed too, through the logs its step returns (on Keras 3 read per step, also with
several steps per execution), and what the user's calls get back is unchanged. Expected figures come from the test's own cross-entropy of the predictions.
"""

import numpy as np
import pytest

from probe import VOCAB, padded_tokens
from stack import KERAS3, keras, sce, tf_backend_only

from pytest_maskloss import MaskLossMismatch, assert_masked_loss, check_masked_loss

pytestmark = tf_backend_only
ALL_PATHS = {"evaluate", "test_on_batch", "train_on_batch", "fit"}


def xla_model(steps_per_execution=1):
    """Padding passed as sample weights to a stock loss (padding in the divisor), Dropout in
    the training step, the step compiled by XLA."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8)(inp)
    h = keras.layers.Dropout(0.3)(h)
    out = keras.layers.Dense(VOCAB, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True,
                  steps_per_execution=steps_per_execution)
    assert (model.jit_compile if KERAS3 else model._jit_compile) is True
    return model


def test_xla_step_is_observed_with_its_figures():
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = xla_model()
    with pytest.raises(MaskLossMismatch) as caught:
        assert_masked_loss(model, x, x, weights, batch_size=4, paths=("evaluate",))
    err = caught.value
    assert err.mode == "padding-in-denominator"
    losses = sce(x, model.predict(x, verbose=0))
    finding = next(c for c in err.findings if c.scope.startswith("epoch"))
    assert finding.reported == pytest.approx(np.sum(losses * weights) / weights.size, rel=1e-5)
    assert finding.reference == pytest.approx(np.sum(losses * weights) / weights.sum(), rel=1e-5)


def test_xla_training_paths_with_dropout_are_compared_and_calls_return_plain_logs():
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = xla_model()
    report = check_masked_loss(model, x, x, sample_weight=weights, batch_size=2)
    assert not report.skipped
    assert {c.path for c in report.comparisons} == ALL_PATHS
    assert {c.mode for c in report.findings} == {"padding-in-denominator"}
    assert {c.path for c in report.findings} == ALL_PATHS
    # the step functions traced under observation stay: the user's logs carry nothing of ours
    history = model.fit(x, x, sample_weight=weights, batch_size=2, epochs=2, verbose=0)
    assert set(history.history) == {"loss"} and len(history.history["loss"]) == 2
    assert np.isfinite(model.evaluate(x, x, sample_weight=weights, verbose=0))
    logs = model.train_on_batch(x, x, sample_weight=weights, return_dict=True)
    assert set(logs) == {"loss"}


@pytest.mark.skipif(not KERAS3, reason="Keras 3's trainer: its XLA step's logs are read per step")
@pytest.mark.parametrize("path", ["evaluate", "fit"])
def test_xla_with_several_steps_per_execution_is_observed_step_by_step(path):
    """Keras 3 runs ``steps_per_execution`` XLA steps in a while loop of its step function:
    each step's entry is taken out of its logs inside that loop, so every batch is judged,
    not only each execution's last. 4 batches in executions of 3 and 1."""
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = xla_model(steps_per_execution=3)
    report = check_masked_loss(model, x, x, sample_weight=weights, batch_size=1, paths=(path,))
    assert not report.skipped
    finding = next(c for c in report.findings if c.scope.startswith("epoch"))
    assert finding.mode == "padding-in-denominator"
    assert finding.scope == f"epoch, {len(x)} batches"
    if path == "evaluate":  # the weights did not change: the predictions are the model's now
        losses = sce(x, model.predict(x, verbose=0))
        assert finding.reported == pytest.approx(np.sum(losses * weights) / weights.size, rel=1e-5)
        # one sequence a batch: the epoch's reference is the mean of the sequences' token means
        per_sequence = np.sum(losses * weights, axis=1) / weights.sum(axis=1)
        assert finding.reference == pytest.approx(per_sequence.mean(), rel=1e-5)
    history = model.fit(x, x, sample_weight=weights, batch_size=1, epochs=1, verbose=0)
    assert set(history.history) == {"loss"}


@pytest.mark.skipif(KERAS3, reason="Keras 2's XLA step returns only the last step's logs")
def test_xla_with_several_steps_per_execution_is_not_compared_with_the_reason():
    x = padded_tokens()
    model = xla_model(steps_per_execution=2)
    report = check_masked_loss(model, x, x, sample_weight=(x != 0).astype("float32"), batch_size=2)
    assert not report.comparisons
    assert set(report.skipped) == ALL_PATHS
    for reason in report.skipped.values():
        assert "XLA" in reason and "2 steps per execution" in reason
        assert "steps_per_execution=1" in reason


def test_a_model_compiled_again_with_or_without_xla_is_observed_the_new_way():
    """The tap kept from a check is not reused once compile() changes how the step runs: XLA
    switched on (the observation leaves through the logs), or several steps per execution
    (read per step on Keras 3; not compared, with the reason, on Keras 2), with the same loss
    object throughout."""
    x = padded_tokens()
    weights = (x != 0).astype("float32")
    model = xla_model()
    loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile("sgd", loss, jit_compile=False)
    first = check_masked_loss(model, x, x, sample_weight=weights, batch_size=2, paths=("evaluate", "fit"))
    model.compile("sgd", loss, jit_compile=True)
    second = check_masked_loss(model, x, x, sample_weight=weights, batch_size=2, paths=("evaluate", "fit"))
    assert not second.skipped and {c.path for c in second.comparisons} == {"evaluate", "fit"}
    assert second.token_mean == pytest.approx(first.token_mean, rel=1e-5)
    assert [c.mode for c in second.findings] == [c.mode for c in first.findings]
    model.compile("sgd", loss, jit_compile=True, steps_per_execution=2)
    third = check_masked_loss(model, x, x, sample_weight=weights, batch_size=2, paths=("evaluate",))
    if KERAS3:  # each step's entry is read inside the step function's loop
        assert not third.skipped and {c.mode for c in third.findings} == {c.mode for c in first.findings}
    else:
        assert not third.comparisons and "2 steps per execution" in third.skipped["evaluate"]
