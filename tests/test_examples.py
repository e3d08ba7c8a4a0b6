"""The bundled example suite, run the way README tells users to run it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.environ.get("TF_USE_LEGACY_KERAS") == "1" or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                    reason="the example suite targets Keras 3 on TensorFlow")
def test_example_suite_fails_the_wrong_model_and_passes_the_right_one():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/lm_suite/test_language_model.py", "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out
    assert "FAILED examples/lm_suite/test_language_model.py::test_sample_weight_padding" in out
    assert "padding is counted in the denominator (padding-in-denominator)" in out
    assert "pytest_maskloss/check.py" not in out  # no traceback into the library


def test_script_example_prints_the_findings():
    result = subprocess.run([sys.executable, "examples/check_in_a_script.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "padding-in-denominator" in result.stdout
