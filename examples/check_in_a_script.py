"""The check outside pytest: a script or notebook cell.

    python examples/check_in_a_script.py
"""

import sys

import numpy as np

import keras
import pytest_maskloss

sys.path.insert(0, "examples/lm_suite")
from test_language_model import build, padded_batches  # noqa: E402

x, y = padded_batches()
model = build(keras, mask_zero=False)
weights = (y != 0).astype("float32")
report = pytest_maskloss.check_masked_loss(model, x, y, weights, batch_size=16)
print(report.summary())
for finding in report.findings[:3]:
    print(f"{finding.path:15} {finding.scope:20} {finding.mode:24} reported {finding.reported:.6f} "
          f"reference {finding.reference:.6f} ({finding.relative_error:+.1%})")
sys.exit(1 if report.findings else 0)
