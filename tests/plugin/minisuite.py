"""A small padded-language-model test suite, written into a temporary directory and run by
``pytest`` in a subprocess (TensorFlow's import state must be fresh, and the audit patches
Keras classes process-wide).

Every test that should produce a finding computes, from the model's own predictions and
with its own numpy cross-entropy, the figure Keras should report and the masked reference,
and writes them to ``$MINI_OUT/expected/<test>.json``: the outer tests compare the audit's
report with these, never with the check's own numbers.

Keras is imported by the first test that needs it (``helpers.keras()``), so the audit's import
watcher is what patches it, unless ``MINI_IMPORT=collection`` makes the test module import it
at collection time.
"""

import textwrap

HELPERS = '''
import json
import os

import numpy as np

VOCAB = 7
OUT = os.environ["MINI_OUT"]


def keras():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras as k
    else:
        import keras as k
    return k


def keras3():
    return keras().__version__.startswith("3")


def padded(lengths=(6, 6, 2, 1), T=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), T), dtype="int32")
    for i, n in enumerate(lengths):
        x[i, :n] = rng.integers(1, VOCAB, size=n)
    return x


def lm(*, mask_zero=True, conv=False, loss="sparse_categorical_crossentropy", name="lm", optimizer="sgd"):
    k = keras()
    k.utils.set_random_seed(1)
    inp = k.Input((6,), dtype="int32")
    h = k.layers.Embedding(VOCAB, 8, mask_zero=mask_zero, name="embedding")(inp)
    if conv:
        h = k.layers.Conv1D(8, 3, padding="same", name="conv")(h)
    out = k.layers.Dense(VOCAB, activation="softmax", name="head")(h)
    model = k.Model(inp, out, name=name)
    model.compile(optimizer, loss)
    return model


def dunder_call_loss():
    k = keras()

    class MeanOverEverything(k.losses.SparseCategoricalCrossentropy):
        def __call__(self, y_true, y_pred, sample_weight=None):
            per_token = k.losses.sparse_categorical_crossentropy(y_true, y_pred)
            if keras3():
                return k.ops.mean(per_token)
            import tensorflow as tf

            return tf.reduce_mean(per_token)

    return MeanOverEverything()


def sce(labels, probs):
    probs = np.asarray(probs, dtype=np.float64)
    picked = np.take_along_axis(probs, np.asarray(labels)[..., None].astype(int), axis=-1)[..., 0]
    return -np.log(np.clip(picked, 1e-7, 1 - 1e-7))


def token_losses(model, x):
    return sce(x, model.predict(x, verbose=0))


def write(name, data):
    os.makedirs(os.path.dirname(os.path.join(OUT, name)), exist_ok=True)
    with open(os.path.join(OUT, name), "w") as handle:
        json.dump(data, handle)


def expect(test, model, path, mode, reported, reference, batch_scope=False):
    write(f"expected/{test}.json", {"model": model, "path": path, "mode": mode,
                                    "reported": float(reported), "reference": float(reference),
                                    "batch_scope": batch_scope})


def save_state(test, model, *histories):
    arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
    opt = model.optimizer.variables
    opt = opt() if callable(opt) else opt
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(opt)})
    arrays["losses"] = np.asarray([l for h in histories for l in h], dtype=np.float64)
    os.makedirs(os.path.join(OUT, "state"), exist_ok=True)
    np.savez(os.path.join(OUT, "state", test + ".npz"), **arrays)
'''

CONFTEST = '''
import json
import os
import sys


def pytest_unconfigure(config):
    """After the session (and the audit's clean-up): are Keras' classes as they were?"""
    found = {}
    for name in ("keras", "tf_keras"):
        module = sys.modules.get(name)
        if module is None:
            continue
        cls = module.Model
        found[name] = {
            "wrapped": [m for m in ("fit", "evaluate", "train_on_batch", "test_on_batch")
                        if getattr(getattr(cls, m), "__maskloss_wrapper__", False)],
            "own": sorted(m for m in ("fit", "evaluate", "train_on_batch", "test_on_batch") if m in cls.__dict__),
        }
    with open(os.path.join(os.environ["MINI_OUT"], "after_session.json"), "w") as handle:
        json.dump(found, handle)
'''

TESTS = '''
import os

import numpy as np
import pytest

import helpers as h

if os.environ.get("MINI_IMPORT") == "collection":
    h.keras()


def test_padding_as_sample_weight():
    x = h.padded()
    w = (x != 0).astype("float32")
    model = h.lm(mask_zero=False, name="sw_lm")
    l = h.token_losses(model, x)
    h.expect("test_padding_as_sample_weight", "sw_lm", "fit", "padding-in-denominator",
             (l * w).sum() / w.size, (l * w).sum() / w.sum())
    history = model.fit(x, x, sample_weight=w, batch_size=4, verbose=0)
    print("losses", history.history["loss"])


def test_every_call_is_judged_on_its_own_data():
    # the same model evaluated twice on different padded batches: each call is judged with the
    # figures it returned (a wrong model, so both are findings, with different numbers)
    model = h.lm(mask_zero=False, name="twice_lm")
    calls = []
    for x in (h.padded(), h.padded(lengths=(3, 1, 1, 5), seed=1)):
        w = (x != 0).astype("float32")
        l = h.token_losses(model, x)
        calls.append({"reported": float((l * w).sum() / w.size), "reference": float((l * w).sum() / w.sum())})
        print("evaluate", model.evaluate(x, x, sample_weight=w, batch_size=4, verbose=0))
    h.write("expected/test_every_call_is_judged_on_its_own_data.json", calls)


def test_recompiled_model_is_judged_with_its_new_loss():
    # evaluated with a stock loss (padding counted), compiled again with a masked one and
    # evaluated again: the second call runs the new loss, and only the first is a finding
    x = h.padded()
    w = (x != 0).astype("float32")
    model = h.lm(mask_zero=False, name="recompiled_lm")
    l = h.token_losses(model, x)
    h.expect("test_recompiled_model_is_judged_with_its_new_loss", "recompiled_lm", "evaluate",
             "padding-in-denominator", (l * w).sum() / w.size, (l * w).sum() / w.sum())
    print("evaluate", model.evaluate(x, x, sample_weight=w, batch_size=4, verbose=0))
    from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy

    model.compile("sgd", MaskedSparseCategoricalCrossentropy())
    print("evaluate", model.evaluate(x, x, sample_weight=w, batch_size=4, verbose=0))


def test_conv1d_loses_the_mask():
    x = h.padded()
    model = h.lm(conv=True, name="conv_lm")
    l = h.token_losses(model, x)
    h.expect("test_conv1d_loses_the_mask", "conv_lm", "evaluate", "mask-lost", l.mean(), l[x != 0].mean())
    print("evaluate", model.evaluate(x, x, batch_size=4, verbose=0))


def test_loss_overrides_dunder_call():
    x = h.padded()
    model = h.lm(loss=h.dunder_call_loss(), name="dunder_lm")
    l = h.token_losses(model, x)
    h.expect("test_loss_overrides_dunder_call", "dunder_lm", "test_on_batch", "loss-ignores-mask",
             l.mean(), l[x != 0].mean(), batch_scope=True)
    print("test_on_batch", model.test_on_batch(x, x))


@pytest.mark.maskloss(granularity="token")
def test_marker_sets_token_granularity():
    x = h.padded()  # batches of 2 hold 12 and 3 real tokens
    model = h.lm(name="token_lm")
    l = h.token_losses(model, x)
    real = x != 0
    by_sequences = np.mean([l[:2][real[:2]].mean(), l[2:][real[2:]].mean()])
    h.expect("test_marker_sets_token_granularity", "token_lm", "evaluate", "epoch-weighted-by-sequences",
             by_sequences, l[real].mean())
    model.evaluate(x, x, batch_size=2, verbose=0)


def test_clean_masked_model_on_every_path():
    x = h.padded()
    model = h.lm(name="clean_lm")
    model.fit(x, x, batch_size=2, verbose=0)
    model.evaluate(x, x, batch_size=2, verbose=0)
    model.train_on_batch(x, x)
    model.test_on_batch(x, x)


def test_model_without_mask_source_is_not_audited():
    x = h.padded()
    model = h.lm(mask_zero=False, name="plain_lm")
    model.fit(x, x, batch_size=4, verbose=0)


@pytest.mark.maskloss(enabled=False)
def test_opted_out():
    x = h.padded()
    w = (x != 0).astype("float32")
    model = h.lm(mask_zero=False, name="opted_out_lm")
    model.fit(x, x, sample_weight=w, batch_size=4, verbose=0)


def test_one_shot_generator():
    x = h.padded()
    model = h.lm(name="generator_lm")

    def batches():
        for start in (0, 2):
            yield x[start:start + 2], x[start:start + 2]

    model.fit(batches(), steps_per_epoch=2, verbose=0)


def test_spy_on_model_fit(monkeypatch):
    k = h.keras()
    calls = []
    original = k.Model.fit

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("batch_size"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(k.Model, "fit", spy)
    x = h.padded()
    w = (x != 0).astype("float32")
    model = h.lm(mask_zero=False, name="spied_lm")
    l = h.token_losses(model, x)
    h.expect("test_spy_on_model_fit", "spied_lm", "fit", "padding-in-denominator",
             (l * w).sum() / w.size, (l * w).sum() / w.sum())
    try:
        model.fit(x, x, sample_weight=w, batch_size=4, verbose=0)
    finally:
        h.write("spy_calls.json", calls)
    assert calls == [4]


def _train_twice_and_save(test):
    x = h.padded(lengths=(6, 5, 4, 3, 2, 1, 6, 2))
    model = h.lm(name="identity_lm", optimizer="adam")
    first = model.fit(x, x, batch_size=2, epochs=2, verbose=0)  # shuffled
    second = model.fit(x, x, batch_size=3, epochs=1, verbose=0)
    value = model.evaluate(x, x, batch_size=4, verbose=0)
    model.train_on_batch(x[:4], x[:4])
    h.save_state(test, model, first.history["loss"], second.history["loss"], [value])
    print("losses", first.history["loss"], second.history["loss"], value)


def test_identity_audited():
    _train_twice_and_save("audited")


@pytest.mark.maskloss(enabled=False)
def test_identity_not_audited():
    _train_twice_and_save("not_audited")


def test_fails_on_its_own():
    x = h.padded()
    model = h.lm(mask_zero=False, name="failing_lm")
    model.fit(x, x, sample_weight=(x != 0).astype("float32"), batch_size=4, verbose=0)
    assert False, "this test fails whatever the audit says"


def test_swallows_exceptions():
    x = h.padded()
    model = h.lm(mask_zero=False, name="swallow_lm")
    try:
        model.fit(x, x, sample_weight=(x != 0).astype("float32"), batch_size=4, verbose=0)
    except AssertionError:
        pass


def _plain_custom_loss(y_true, y_pred):
    return h.keras().losses.sparse_categorical_crossentropy(y_true, y_pred)


def test_custom_loss_is_judged_token_by_token():
    x = h.padded()
    model = h.lm(loss=_plain_custom_loss, name="custom_loss_lm")
    model.evaluate(x, x, batch_size=4, verbose=0)


def test_unpadded_batches_are_tried_three_times():
    x = h.padded(lengths=(6, 6, 6, 6))  # no padding at all: nothing to check
    model = h.lm(name="unpadded_lm")
    for _ in range(5):
        model.test_on_batch(x, x)


def test_wrappers_present_during_the_session():
    h.write("during_session.json", bool(getattr(h.keras().Model.fit, "__maskloss_wrapper__", False)))
'''

# tests whose model the audit must find wrong, and the failure modes they show
WRONG = {
    "test_padding_as_sample_weight": "padding-in-denominator",
    "test_conv1d_loses_the_mask": "mask-lost",
    "test_recompiled_model_is_judged_with_its_new_loss": "padding-in-denominator",
    "test_loss_overrides_dunder_call": "loss-ignores-mask",
    "test_marker_sets_token_granularity": "epoch-weighted-by-sequences",
    "test_spy_on_model_fit": "padding-in-denominator",
    "test_fails_on_its_own": "padding-in-denominator",
    "test_swallows_exceptions": "padding-in-denominator",
}
# a test that evaluates one wrong model twice: (model, path, mode) of both findings
TWICE = {"test_every_call_is_judged_on_its_own_data": ("twice_lm", "evaluate", "padding-in-denominator")}
CLEAN = ("test_clean_masked_model_on_every_path", "test_identity_audited", "test_one_shot_generator",
         "test_custom_loss_is_judged_token_by_token")
NOT_AUDITED = {  # test -> (calls recorded as not audited, reason they start with)
    "test_unpadded_batches_are_tried_three_times": (3, "no padding found"),
}
NO_RECORD = ("test_model_without_mask_source_is_not_audited", "test_opted_out", "test_identity_not_audited")


def write_suite(directory, ini="[pytest]\n"):
    (directory / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (directory / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (directory / "test_mini.py").write_text(textwrap.dedent(TESTS))
    (directory / "pytest.ini").write_text(ini)
    return directory
