"""On TensorFlow the tap computes its token statistics before Keras's loss, and Keras's fused
cross-entropy reads the logits after them (``compat.ordering``), so that the kernel can work on
the logits' memory in place as it does unobserved. Shown on the traced step's graph, and by
the figures: what the observed model reports is, to the bit, what the same model reports
unobserved, on a softmax output and on a logits output with a Keras mask."""

import numpy as np
import pytest

from probe import padded_tokens
from stack import TF_BACKEND, keras
from test_tokenstats import lm

from pytest_maskloss import check_masked_loss

pytestmark = pytest.mark.skipif(not TF_BACKEND, reason="the ordering is for TensorFlow's fused kernel")

XENT = "SparseSoftmaxCrossEntropyWithLogits"
PASS_THROUGH = {"Identity", "Reshape", "Cast", "Squeeze", "ExpandDims"}


def traced_step(model, statistics):
    """The graph of ``model.test_step`` traced while a tap (with or without statistics) is open."""
    import tensorflow as tf

    from pytest_maskloss.compat.detect import keras_info
    from pytest_maskloss.compat.tap import LossTap

    x = tf.constant(padded_tokens()[:2])
    with LossTap(model, keras_info(model), lambda record: None, statistics=statistics):
        return tf.function(model.test_step).get_concrete_function((x, x)).graph


def waits_for_something(graph) -> bool:
    """Does the fused cross-entropy's logits input come, through ops that only pass it on, from
    an op that waits for others (control inputs)?"""
    (xent,) = [op for op in graph.get_operations() if op.type == XENT]
    op = xent.inputs[0].op
    while True:
        if op.control_inputs:
            return True
        if op.type not in PASS_THROUGH:
            return False
        op = op.inputs[0].op


@pytest.mark.parametrize("logits", [False, True], ids=["softmax", "logits"])
def test_kerass_cross_entropy_reads_the_logits_after_the_statistics(logits):
    from pytest_maskloss.compat.detect import keras_info
    from pytest_maskloss.compat.tokenstats import statistics_evaluator

    model = lm(logits=logits)
    model.predict(padded_tokens()[:2], verbose=0)  # built
    statistics = statistics_evaluator([logits], keras_info(model))
    assert waits_for_something(traced_step(model, statistics))
    assert not waits_for_something(traced_step(model, None))  # unobserved: nothing to wait for


@pytest.mark.parametrize("logits", [False, True], ids=["softmax", "logits"])
def test_the_observed_model_reports_what_it_reports_unobserved(logits):
    """Two models with the same weights: one evaluated and fit on its own, one through the check
    (token statistics, ordered; the check puts the weights back afterwards). The epoch figures
    the check was handed equal the unobserved ones, to the bit."""
    x = padded_tokens()
    alone, observed = lm(logits=logits), lm(logits=logits)
    own_eval = alone.evaluate(x, x, batch_size=2, verbose=0)
    own_fit = alone.fit(x, x, batch_size=2, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    report = check_masked_loss(observed, x, x, batch_size=2, paths=("evaluate", "fit"), metrics=False)
    assert report.observed == {"evaluate": "token statistics", "fit": "token statistics"}
    epochs = {c.path: c.reported for c in report.comparisons if c.scope.startswith("epoch")}
    assert epochs["evaluate"] == np.float32(own_eval)
    # every batch of the epoch after the first is computed with weights the steps before
    # updated: the same figure means the same gradients too
    assert epochs["fit"] == np.float32(own_fit)
