"""The pytest plugin (``pytest11`` entry point ``maskloss``).

Loaded in every pytest run of an environment where pytest-maskloss is installed, so this
module must stay light: no TensorFlow, Keras or numpy at import time. The heavy engine is
imported inside the fixture, when a test asks for it.
"""

import pytest


@pytest.fixture
def maskloss():
    """Return ``assert_masked_loss``: check a model's reported loss against the masked reference.

    ``maskloss(model, x, y, ...)`` runs the model's own reporting paths on the data and raises
    ``pytest_maskloss.MaskLossMismatch`` (an AssertionError) naming the failure mode when a
    reported figure is not the mean over real tokens; it returns the report otherwise.
    """
    from pytest_maskloss.check import assert_masked_loss

    return assert_masked_loss
