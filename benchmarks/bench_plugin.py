"""Wall time of a training test suite with and without ``pytest --maskloss``.

A suite of 20 small training tests is generated into a temporary directory: 16 padded
next-token models (Embedding(mask_zero=True), then LSTM/GRU/Dense/Conv1D, 64 sequences of
up to 16 tokens, fit for 3 epochs then evaluate — every one of them audited, two of them
wrong) and 4 unpadded classifiers (no mask source: not audited). The suite is run by
``python -m pytest`` in a subprocess, alternately without and with ``--maskloss``, REPEATS
times each; the best wall time of each is compared (the machine is shared: the minimum is
the least noisy estimate). Target: ratio <= 1.10.

    python benchmarks/bench_plugin.py [--repeats N] [-- extra pytest args]
    KERAS_BACKEND=jax python benchmarks/bench_plugin.py
    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_plugin.py

Takes 2-5 minutes on two cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TARGET = 1.10

HELPERS = '''
import os

import numpy as np

VOCAB, LENGTH = 40, 16


def keras():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        import tf_keras as k
    else:
        import keras as k
    return k


def padded(n=64, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, LENGTH + 1), dtype="int32")
    for row, length in zip(tokens, rng.integers(3, LENGTH + 2, size=n)):
        row[:length] = rng.integers(1, VOCAB, size=length)
    return tokens[:, :-1], tokens[:, 1:]


def language_model(kind, seed):
    k = keras()
    k.utils.set_random_seed(seed)
    middle = {
        "lstm": lambda: k.layers.LSTM(16, return_sequences=True),
        "gru": lambda: k.layers.GRU(16, return_sequences=True),
        "dense": lambda: k.layers.Dense(16, activation="relu"),
        "conv": lambda: k.layers.Conv1D(16, 3, padding="causal"),
    }[kind]()
    model = k.Sequential([k.Input((LENGTH,), dtype="int32"), k.layers.Embedding(VOCAB, 16, mask_zero=True),
                          middle, k.layers.Dense(VOCAB, activation="softmax")], name=f"{kind}_lm_{seed}")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def classifier(seed):
    k = keras()
    k.utils.set_random_seed(seed)
    model = k.Sequential([k.Input((LENGTH,)), k.layers.Dense(16, activation="relu"),
                          k.layers.Dense(3, activation="softmax")], name=f"classifier_{seed}")
    model.compile("adam", "sparse_categorical_crossentropy")
    return model
'''

LM_TEST = '''
def test_{kind}_language_model_{seed}():
    x, y = h.padded(seed={seed})
    model = h.language_model("{kind}", {seed})
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert np.isfinite(model.evaluate(x, y, batch_size=32, verbose=0)[0])
'''

CLASSIFIER_TEST = '''
def test_classifier_{seed}():
    rng = np.random.default_rng({seed})
    x, y = rng.normal(size=(64, h.LENGTH)).astype("float32"), rng.integers(0, 3, size=64)
    model = h.classifier({seed})
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert np.isfinite(model.evaluate(x, y, verbose=0))
'''


def write_suite(directory: Path) -> Path:
    (directory / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (directory / "pytest.ini").write_text("[pytest]\n")
    kinds = ["lstm", "gru", "dense", "dense", "lstm", "gru", "dense", "conv"]
    for part in range(2):
        body = ["import numpy as np\n\nimport helpers as h\n"]
        for i, kind in enumerate(kinds):
            body.append(LM_TEST.format(kind=kind, seed=part * 10 + i))
        for i in range(2):
            body.append(CLASSIFIER_TEST.format(seed=100 + part * 10 + i))
        (directory / f"test_training_{part}.py").write_text("".join(body))
    return directory


def run(directory: Path, audit: bool, extra) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *extra]
    args.append("--maskloss" if audit else "--no-maskloss")
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=directory, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    lines = proc.stdout.splitlines()
    outcome = lines[-1] if lines else proc.stderr[-500:]
    if proc.returncode != 0:
        raise SystemExit(f"suite failed ({'with' if audit else 'without'} --maskloss):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    totals = next((l for l in lines if l.startswith("maskloss (")), "")
    return elapsed, totals or outcome


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="maskloss-bench-") as tmp:
        directory = write_suite(Path(tmp))
        plain, audited = [], []
        summary = ""
        for repeat in range(max(2, args.repeats)):
            for audit in ((False, True) if repeat % 2 == 0 else (True, False)):
                elapsed, text = run(directory, audit, args.extra)
                (audited if audit else plain).append(elapsed)
                if audit:
                    summary = text
                print(f"  run {repeat + 1} {'with   ' if audit else 'without'} --maskloss: {elapsed:6.1f} s", flush=True)
    best_plain, best_audited = min(plain), min(audited)
    ratio = best_audited / best_plain
    print(f"suite: 20 training tests (16 padded language models, 4 classifiers), {len(plain)} runs each")
    print(f"audit: {summary}")
    print(f"without --maskloss: best {best_plain:.1f} s, median {statistics.median(plain):.1f} s")
    print(f"with    --maskloss: best {best_audited:.1f} s, median {statistics.median(audited):.1f} s")
    print(f"ratio (best): {ratio:.2f}x  (median: {statistics.median(audited) / statistics.median(plain):.2f}x); "
          f"target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
