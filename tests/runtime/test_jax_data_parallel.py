"""Keras 3's ``keras.distribution.DataParallel`` on JAX over two CPU devices, under observation.

JAX refuses ordered host callbacks in a step that spans several devices; the observation must
neither make the step fail nor lose its order. The run needs ``XLA_FLAGS`` before JAX starts,
so it happens in a subprocess; expected figures are the model's own predictions reduced in
numpy there (``evaluate`` is deterministic), and the padding-as-``sample_weight`` case must be
diagnosed as it is on one device.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import keras
    from pytest_maskloss import check_masked_loss

    keras.distribution.set_distribution(keras.distribution.DataParallel())
    x = np.random.default_rng(0).integers(1, 7, size=(8, 6))
    for row, n in enumerate([6, 6, 2, 1, 3, 4, 5, 2]):
        x[row, n:] = 0
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(7, 8, mask_zero=True),
                              keras.layers.Dense(7, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    probs = np.asarray(model.predict(x, batch_size=4, verbose=0), dtype=np.float64)
    token_loss = -np.log(np.take_along_axis(probs, x[..., None], axis=-1)[..., 0])
    real = (x != 0).astype(float)
    expected = [float((token_loss[s:s + 4] * real[s:s + 4]).sum() / real[s:s + 4].sum()) for s in (0, 4)]
    masked = check_masked_loss(model, x, x, batch_size=4)

    plain = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(7, 8),
                              keras.layers.Dense(7, activation="softmax")])
    plain.compile("adam", "sparse_categorical_crossentropy")
    weighted = check_masked_loss(plain, x, x, sample_weight=real, batch_size=4, paths=("evaluate", "fit"))
    print("RESULT" + json.dumps({
        "devices": len(keras.distribution.list_devices()),
        "expected": expected,
        "masked": [c.as_dict() for c in masked.comparisons], "masked_skipped": masked.skipped,
        "weighted": [c.as_dict() for c in weighted.comparisons], "weighted_skipped": weighted.skipped,
    }))
""")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    script = tmp_path_factory.mktemp("dp") / "data_parallel.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[len("RESULT"):])


def test_every_path_is_observed_and_matches_the_numpy_reference(result):
    assert result["devices"] == 2
    assert result["masked_skipped"] == {}
    comparisons = result["masked"]
    assert {c["path"] for c in comparisons} == {"evaluate", "test_on_batch", "train_on_batch", "fit"}
    assert all(c["ok"] for c in comparisons), comparisons
    evaluated = [c for c in comparisons if c["path"] == "evaluate" and c["scope"].startswith("batch")]
    assert [c["reference"] for c in evaluated] == pytest.approx(result["expected"], rel=1e-6)
    assert [c["reported"] for c in evaluated] == pytest.approx(result["expected"], rel=1e-5)


def test_padding_as_sample_weight_is_diagnosed_across_devices(result):
    assert result["weighted_skipped"] == {}
    losses = [c for c in result["weighted"] if c["quantity"] == "loss"]
    assert {c["path"] for c in losses} == {"evaluate", "fit"}
    assert all(c["mode"] == "padding-in-denominator" for c in losses), losses
