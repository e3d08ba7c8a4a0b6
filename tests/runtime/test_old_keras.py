"""Failure modes that live only in older Keras 3 releases, reproduced there for real.

Run in their own CI step, in a venv pinned to Keras 3.5.0 on JAX (CPU, no TensorFlow):
``KERAS_BACKEND=jax python -m pytest tests/runtime/test_old_keras.py -m oldkeras``. Elsewhere every
test is skipped with the reason. This module imports Keras only (not ``stack``, which needs
TensorFlow). Expected figures come from the test's own numpy cross-entropy of the model's
predictions (no Keras reduction).
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pytest_maskloss import check_masked_loss  # noqa: E402
from probe import VOCAB, padded_tokens  # noqa: E402

pytestmark = pytest.mark.oldkeras

VERSION = tuple(int(p) for p in keras.__version__.split(".")[:2])
KERAS3 = VERSION[0] >= 3
BACKEND = keras.config.backend() if KERAS3 else "tensorflow"

jax_before_3_6 = pytest.mark.skipif(
    not (KERAS3 and BACKEND == "jax" and VERSION < (3, 6)),
    reason="masks never reach the loss only on Keras 3.0–3.5 with the JAX backend",
)
running_mean_on_batch = pytest.mark.skipif(
    not (KERAS3 and VERSION < (3, 15)),
    reason="*_on_batch return a running mean across calls only on Keras 3.0–3.14",
)


def language_model(loss="sparse_categorical_crossentropy", mask_zero=True):
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=mask_zero, name="embedding")(inp)
    out = keras.layers.Dense(VOCAB, activation="softmax", name="next_token")(h)
    model = keras.Model(inp, out)
    model.compile("sgd", loss)
    return model


def token_losses(model, x):
    """-log p[label] per position, from the model's own predictions (numpy)."""
    probs = np.asarray(model.predict(x, verbose=0), dtype=np.float64)
    picked = np.take_along_axis(probs, x[..., None].astype(int), axis=-1)[..., 0]
    return -np.log(np.clip(picked, 1e-7, 1 - 1e-7))


@jax_before_3_6
def test_jax_before_3_6_loses_every_mask():
    x = padded_tokens()
    model = language_model()
    report = check_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    (batch, epoch) = report.comparisons
    losses, real = token_losses(model, x), x != 0
    assert epoch.mode == "mask-lost" and not epoch.ok
    assert epoch.reported == pytest.approx(losses.mean(), rel=1e-5)  # padding scored as tokens
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)
    assert f"Keras {keras.__version__} keeps no Keras mask on JAX arrays" in epoch.detail
    assert "3.6.0" in epoch.detail


@jax_before_3_6
def test_jax_before_3_6_ignore_class_divides_by_every_position():
    x = padded_tokens()
    model = language_model(keras.losses.SparseCategoricalCrossentropy(ignore_class=0), mask_zero=False)
    report = check_masked_loss(model, x, x, batch_size=4, paths=("evaluate",))
    epoch = report.comparisons[-1]
    losses, real = token_losses(model, x), x != 0
    assert epoch.mode == "padding-in-denominator"
    assert epoch.reported == pytest.approx(losses[real].sum() / x.size, rel=1e-5)
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)


@running_mean_on_batch
def test_on_batch_calls_return_a_running_mean_across_calls():
    """evaluate, then test_on_batch per batch: each call returns Keras' loss tracker, the mean of
    every batch since evaluate reset it, weighted by batch size; each batch's own loss is right."""
    from pytest_maskloss.keras import MaskedLoss

    x = padded_tokens()
    model = language_model(MaskedLoss(pad_id=0), mask_zero=False)  # exact per batch everywhere
    losses, real = token_losses(model, x), x != 0
    means = [losses[b][real[b]].mean() for b in (slice(0, 2), slice(2, 4))]  # own batch means
    report = check_masked_loss(model, x, x, batch_size=2, pad_in="labels",
                               paths=("evaluate", "test_on_batch"))
    calls = [c for c in report.comparisons if c.path == "test_on_batch" and "own" not in c.scope]
    own = [c for c in report.comparisons if c.path == "test_on_batch" and "own" in c.scope]
    # the tracker holds evaluate's two batches (2 sequences each), then each call adds its own
    expected = [(2 * means[0] + 2 * means[1] + 2 * means[0]) / 6,
                (2 * means[0] + 2 * means[1] + 2 * means[0] + 2 * means[1]) / 8]
    assert [c.mode for c in calls] == ["on-batch-running-mean"] * 2
    assert [c.reported for c in calls] == pytest.approx(expected, rel=1e-5)
    assert [c.reference for c in calls] == pytest.approx(means, rel=1e-5)
    assert [c.ok for c in own] == [True, True]
    assert [c.reported for c in own] == pytest.approx(means, rel=1e-5)
    assert "since Keras last reset its metrics" in calls[0].detail
