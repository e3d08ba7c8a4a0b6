"""Failure modes found in Keras releases after the first, each reproduced on the stacks where it
happens (skipped with the reason elsewhere), and the check's diagnosis of it: the mode, the layer
it names, and the figures.

Expected figures come from the test's own per-token cross-entropy ``sce`` of the model's
predictions, reduced here in numpy, never from the check or a Keras reduction.
"""

import numpy as np
import pytest

from stack import BACKEND, KERAS3, OLD_TF_KERAS, STACK, TF_BACKEND, keras, sce

from pytest_maskloss import MaskLossInputError, check_masked_loss
from probe import VOCAB, padded_tokens

VERSION = tuple(int(p) for p in keras.__version__.split(".")[:2])

keras3_from_3_8 = pytest.mark.skipif(
    not (KERAS3 and VERSION >= (3, 8)),
    reason="MultiHeadAttention clears its inputs' masks on Keras >= 3.8 only",
)
keras2_only = pytest.mark.skipif(KERAS3, reason="the Keras 2 flavours keep this mask")
keras3_only = pytest.mark.skipif(not KERAS3, reason="Keras 3 merges keep a mask only when every input has one")
jax_or_torch = pytest.mark.skipif(
    BACKEND not in ("jax", "torch"), reason="negative labels are scored 0 on Keras 3 with JAX or PyTorch only"
)
tensorflow_ops = pytest.mark.skipif(not TF_BACKEND, reason="TensorFlow rejects negative sparse labels")


def compiled(inputs, h, loss="sparse_categorical_crossentropy"):
    out = keras.layers.Dense(VOCAB, activation="softmax", name="next_token")(h)
    model = keras.Model(inputs, out)
    model.compile("sgd", loss)
    return model


def lm(loss="sparse_categorical_crossentropy", mask_zero=False):
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,), dtype="int32", name="tokens")
    return compiled(inp, keras.layers.Embedding(VOCAB, 8, mask_zero=mask_zero, name="embedding")(inp), loss)


def attention_lm():
    """Embedding(mask_zero) -> MultiHeadAttention -> residual Add, the pattern of a transformer block."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,), dtype="int32", name="tokens")
    e = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="embedding")(inp)
    a = keras.layers.MultiHeadAttention(2, 4, name="attention")(e, e)
    return compiled(inp, keras.layers.Add(name="residual")([e, a]))


def position_lm():
    """A masked token embedding added to an unmasked position embedding."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    positions = keras.Input((6,), dtype="int32", name="positions")
    e = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="token_embedding")(tokens)
    p = keras.layers.Embedding(6, 8, name="position_embedding")(positions)
    return compiled({"tokens": tokens, "positions": positions}, keras.layers.Add(name="embeddings")([e, p]))


def losses_of(model, x, y):
    return sce(y, model.predict(x, verbose=0))


def evaluate_epoch(report):
    return next(c for c in report.comparisons if c.path == "evaluate" and c.scope.startswith("epoch"))


# --- MultiHeadAttention clears its inputs' masks ---------------------------------------------


@keras3_from_3_8
def test_multi_head_attention_is_named_not_the_residual_add():
    x = padded_tokens()
    model = attention_lm()
    epoch = evaluate_epoch(check_masked_loss(model, x, x, batch_size=4, paths=("evaluate",)))
    losses, real = losses_of(model, x, x), x != 0
    assert epoch.mode == "mask-lost"
    assert epoch.reported == pytest.approx(losses.mean(), rel=1e-5)  # padding scored as tokens
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)
    assert "'attention' (MultiHeadAttention) clears the masks of its inputs" in epoch.detail
    assert "'residual'" not in epoch.detail


@keras2_only
def test_multi_head_attention_keeps_the_mask_on_keras2():
    x = padded_tokens()
    model = attention_lm()
    epoch = evaluate_epoch(check_masked_loss(model, x, x, batch_size=4, paths=("evaluate",)))
    losses, real = losses_of(model, x, x), x != 0
    if OLD_TF_KERAS:  # the mask reaches the loss, which divides by every position there
        assert epoch.mode == "padding-in-denominator"
        assert epoch.reported == pytest.approx(losses[real].sum() / x.size, rel=1e-5)
    else:
        assert epoch.ok and epoch.reported == pytest.approx(losses[real].mean(), rel=1e-5)


# --- a merge with one unmasked input -----------------------------------------------------------


def position_data():
    x = padded_tokens()
    return {"tokens": x, "positions": np.tile(np.arange(6, dtype="int32"), (len(x), 1))}, x


@keras3_only
def test_merge_with_an_unmasked_input_names_the_merge_and_the_input():
    xs, y = position_data()
    model = position_lm()
    epoch = evaluate_epoch(check_masked_loss(model, xs, y, batch_size=4, pad_in="tokens", paths=("evaluate",)))
    losses, real = losses_of(model, xs, y), y != 0
    assert epoch.mode == "mask-lost"
    assert epoch.reported == pytest.approx(losses.mean(), rel=1e-5)
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)
    assert "'embeddings' (Add)" in epoch.detail and "'position_embedding' carries none" in epoch.detail


@keras2_only
def test_merge_with_an_unmasked_input_keeps_the_mask_on_keras2():
    xs, y = position_data()
    model = position_lm()
    epoch = evaluate_epoch(check_masked_loss(model, xs, y, batch_size=4, pad_in="tokens", paths=("evaluate",)))
    losses, real = losses_of(model, xs, y), y != 0
    if OLD_TF_KERAS:
        assert epoch.mode == "padding-in-denominator"
        assert epoch.reported == pytest.approx(losses[real].sum() / y.size, rel=1e-5)
    else:
        assert epoch.ok and epoch.reported == pytest.approx(losses[real].mean(), rel=1e-5)


# --- negative padding labels without ignore_class ------------------------------------------


@jax_or_torch
@pytest.mark.parametrize("pad", [-100, pytest.param(-1, marks=pytest.mark.skipif(
    BACKEND == "torch", reason="PyTorch's nll_loss scores only its ignore_index -100 as 0"))])
def test_negative_padding_labels_are_scored_zero_and_counted(pad):
    x = padded_tokens()
    y = np.where(x == 0, pad, x)
    model = lm()
    epoch = evaluate_epoch(check_masked_loss(model, x, y, batch_size=4, pad_id=pad, paths=("evaluate",)))
    losses, real = losses_of(model, x, x), x != 0  # the labels' real tokens are x's
    assert epoch.mode == "padding-in-denominator"
    assert epoch.reported == pytest.approx(losses[real].sum() / x.size, rel=1e-5)
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)
    assert f"padding labels [{pad}] lie outside the vocabulary" in epoch.detail
    assert f"ignore_class={pad}" in epoch.detail


@pytest.mark.skipif(BACKEND != "jax", reason="JAX scores every negative label 0 (PyTorch raises on -1 itself)")
def test_a_negative_label_at_a_real_token_is_refused():
    x = padded_tokens()
    y = np.where(x == 0, -100, x)
    y[0, 0] = -1  # a real token with a negative label: no reference exists
    with pytest.raises(MaskLossInputError, match=r"1 real token\(s\) have a negative label \(\[-100, -1\]\)"):
        check_masked_loss(lm(), x, y, batch_size=4, pad_id=-100, paths=("evaluate",))


@tensorflow_ops
def test_negative_padding_labels_on_tensorflow_are_a_sentence():
    x = padded_tokens()
    y = np.where(x == 0, -100, x)
    with pytest.raises(MaskLossInputError) as caught:
        check_masked_loss(lm(), x, y, batch_size=4, pad_id=-100, paths=("evaluate",))
    text = str(caught.value)
    assert "label value of -100 which is outside the valid range of [0, 7)" in text
    assert "TensorFlow rejects" in text and "ignore_class=<that label>" in text and "\n" not in text


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's nll_loss raises on negative labels other than -100")
def test_minus_one_padding_labels_on_pytorch_are_a_sentence():
    x = padded_tokens()
    y = np.where(x == 0, -1, x)
    with pytest.raises(MaskLossInputError) as caught:
        check_masked_loss(lm(), x, y, batch_size=4, pad_id=-1, paths=("evaluate",))
    text = str(caught.value)
    assert "Target -1 is out of bounds" in text and "PyTorch rejects" in text
    assert "ignore_class=<that label>" in text and "\n" not in text


def test_ignore_class_for_negative_padding_labels_passes():
    x = padded_tokens()
    y = np.where(x == 0, -100, x)
    model = lm(keras.losses.SparseCategoricalCrossentropy(ignore_class=-100))
    report = check_masked_loss(model, x, y, batch_size=4, pad_id=-100, paths=("evaluate",))
    losses, real = losses_of(model, x, x), x != 0
    assert report.ok and evaluate_epoch(report).reported == pytest.approx(losses[real].mean(), rel=1e-5)


# --- ignore_class semantics per version --------------------------------------------------


def test_ignore_class_padding_is_exact_per_batch():
    """Every stack, tf.keras 2.10 included (whose stock loss on a mask divides by B·T): the
    loss rescales by its own ignore_class mask, Σ l·m / Σ m per batch."""
    x = padded_tokens()
    model = lm(keras.losses.SparseCategoricalCrossentropy(ignore_class=0))
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    losses, real = losses_of(model, x, x), x != 0
    means = [losses[b][real[b]].mean() for b in (slice(0, 2), slice(2, 4))]
    batches = [c for c in report.comparisons if not c.scope.startswith("epoch")]
    assert report.ok
    assert [c.reported for c in batches] == pytest.approx(means, rel=1e-5)
    assert evaluate_epoch(report).reported == pytest.approx(np.mean(means), rel=1e-5)  # 2 sequences each


def test_ignore_class_with_sample_weights_scales_instead_of_weighting():
    """Σ l·w·m / Σ m: the weights scale the masked mean (every stack measured here)."""
    x = padded_tokens()
    w = np.tile(np.array([[1, 2, 1, 3, 1, 1]], dtype="float32"), (len(x), 1))  # Σ w·m = 22, B·T = 24
    model = lm(keras.losses.SparseCategoricalCrossentropy(ignore_class=0))
    report = check_masked_loss(model, x, x, w, batch_size=4, pad_in="labels", paths=("evaluate",))
    losses, real = losses_of(model, x, x), x != 0
    epoch = evaluate_epoch(report)
    assert epoch.mode == "sample-weights-not-normalised"
    assert epoch.reported == pytest.approx((losses * w)[real].sum() / real.sum(), rel=1e-5)
    assert epoch.reference == pytest.approx((losses * w)[real].sum() / w[real].sum(), rel=1e-5)


def test_ignore_class_all_ignored_batch():
    """NaN on tf_keras and tf.keras 2.10, 0 on Keras 3: either way counted in the epoch."""
    x = padded_tokens()
    x[2:] = 0  # the second batch of two holds no real token
    model = lm(keras.losses.SparseCategoricalCrossentropy(ignore_class=0))
    report = check_masked_loss(model, x, x, batch_size=2, paths=("evaluate",))
    losses, real = losses_of(model, x, x), x != 0
    epoch = evaluate_epoch(report)
    assert epoch.mode == "empty-batch"
    assert epoch.reference == pytest.approx(losses[real].mean(), rel=1e-5)
    if KERAS3:
        assert epoch.matched == "empty-batch-zero"
        assert epoch.reported == pytest.approx(losses[real].mean() / 2, rel=1e-5)  # (2·μ + 2·0) / 4
    else:
        assert epoch.matched == "empty-batch-nan" and np.isnan(epoch.reported)
