"""KerasHub as a real client: tiny random tasks (hubtasks.py) fed padded strings, checked on every
path, fit included, by the fixture and by ``pytest --maskloss``.

KerasHub's preprocessors pass the padding as ``sample_weight`` to a stock loss with the default
reduction, so every task reports padding in the denominator. The expected figures come from the
test itself: the task's own preprocessor and forward pass, then a numpy cross-entropy reduced
two ways (over real tokens, and over every position as Keras does). Under Dropout (fit,
``train_on_batch``) the predictions are the step's own, so there the test checks the relation that
defines the mode: reported = reference × real tokens / positions, batch by batch.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from stack import KERAS3, TF_BACKEND

pytestmark = pytest.mark.slow
if not (KERAS3 and TF_BACKEND):
    pytest.skip("KerasHub's tokenizers run on TensorFlow; Keras 3 only", allow_module_level=True)
keras_hub = pytest.importorskip("keras_hub")

import hubtasks  # noqa: E402  (needs keras_hub)

from pytest_maskloss import check_masked_loss  # noqa: E402
from pytest_maskloss.check.report import mismatch_message  # noqa: E402
from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "plugin"))
from runner import run_pytest, summary_rows, totals_line  # noqa: E402


def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def evaluate_figures(task, texts, batch_size):
    """Per batch: (what Keras reports, the masked token mean), from the task's own preprocessor
    and inference forward pass and a numpy cross-entropy."""
    figures = []
    n = len(next(iter(texts.values()))) if isinstance(texts, dict) else len(texts)
    for start in range(0, n, batch_size):
        rows = ({k: v[start:start + batch_size] for k, v in texts.items()} if isinstance(texts, dict)
                else texts[start:start + batch_size])
        x, y, w = task.preprocessor(rows)
        logits = task(x, training=False)
        y, w = np.asarray(y), np.asarray(w, dtype=np.float64)
        token_loss = -np.take_along_axis(log_softmax(logits), y[..., None].astype(int), axis=-1)[..., 0]
        figures.append(((token_loss * w).sum() / w.size, (token_loss * w).sum() / w.sum()))
    return figures


def batch_comparisons(report, path):
    return [c for c in report.comparisons if c.path == path and c.quantity == "loss" and c.scope.startswith("batch")]


def assert_padding_in_denominator(comparisons):
    assert comparisons
    for c in comparisons:
        assert c.mode == "padding-in-denominator", c
        assert 0 < c.real_tokens < c.total_tokens
        assert c.reported == pytest.approx(c.reference * c.real_tokens / c.total_tokens, rel=1e-5)


@pytest.mark.parametrize("build, texts", [
    (hubtasks.gpt2_causal_lm, hubtasks.CAUSAL_TEXTS),
    (hubtasks.bart_seq2seq_lm, hubtasks.SEQ2SEQ_TEXTS),
], ids=["GPT2CausalLM", "BartSeq2SeqLM"])
def test_task_fed_strings_counts_padding_on_every_path(build, texts):
    task = build()
    expected = evaluate_figures(task, texts, batch_size=2)
    report = check_masked_loss(task, texts, batch_size=2)
    assert not report.skipped
    evaluated = batch_comparisons(report, "evaluate")
    assert [c.mode for c in evaluated] == ["padding-in-denominator"] * 2
    for c, (reported, reference) in zip(evaluated, expected):
        assert c.reported == pytest.approx(reported, rel=1e-5)
        assert c.reference == pytest.approx(reference, rel=1e-5)
    for path in ("test_on_batch", "train_on_batch", "fit"):
        assert_padding_in_denominator(batch_comparisons(report, path))
    epoch = next(c for c in report.comparisons if c.path == "fit" and c.scope.startswith("epoch"))
    assert epoch.mode == "padding-in-denominator"
    # the fix names what this task needs, not the generic mask advice
    assert "KerasHub task's preprocessor passes the padding as sample_weight" in mismatch_message(report)


def test_masked_lm_counts_unused_mask_slots():
    # the preprocessor picks the masked positions at random in each step: the check judges the
    # positions the step itself drew
    report = check_masked_loss(hubtasks.bert_masked_lm(), hubtasks.MASKED_TEXTS, batch_size=2,
                               paths=("evaluate", "fit"))
    assert not report.skipped
    for path in ("evaluate", "fit"):
        assert_padding_in_denominator(batch_comparisons(report, path))


def test_task_compiled_with_the_package_loss_passes():
    task = hubtasks.gpt2_causal_lm()
    task.compile(optimizer="adam", loss=MaskedSparseCategoricalCrossentropy(from_logits=True))
    expected = evaluate_figures(task, hubtasks.CAUSAL_TEXTS, batch_size=2)
    report = check_masked_loss(task, hubtasks.CAUSAL_TEXTS, batch_size=2, paths=("evaluate", "fit"))
    assert report.findings == [] and not report.skipped
    for c, (_, reference) in zip(batch_comparisons(report, "evaluate"), expected):
        assert c.reported == pytest.approx(reference, rel=1e-5)


def test_task_compiled_for_xla_with_several_steps_per_execution_is_judged_step_by_step():
    """A GPU's default XLA plus ``steps_per_execution=2``, with the task's preprocessor and a
    weighted metric: every path compared, and each of the 4 evaluate batches (2 executions of
    2 steps) has the figures of the test's own forward pass."""
    task = hubtasks.gpt2_causal_lm()
    task.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=["accuracy"], jit_compile=True, steps_per_execution=2)
    expected = evaluate_figures(task, hubtasks.CAUSAL_TEXTS, batch_size=1)
    report = check_masked_loss(task, hubtasks.CAUSAL_TEXTS, batch_size=1)
    assert not report.skipped
    evaluated = batch_comparisons(report, "evaluate")
    assert len(evaluated) == len(expected) == 4
    for c, (reported, reference) in zip(evaluated, expected):
        assert c.mode == "padding-in-denominator"
        assert c.reported == pytest.approx(reported, rel=1e-5)
        assert c.reference == pytest.approx(reference, rel=1e-5)
    for path in ("test_on_batch", "train_on_batch", "fit"):
        assert_padding_in_denominator(batch_comparisons(report, path))


SUITE = '''
import hubtasks

def test_causal_lm_fit_and_evaluate():
    lm = hubtasks.gpt2_causal_lm()
    history = lm.fit(hubtasks.CAUSAL_TEXTS, batch_size=2, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    lm.evaluate(hubtasks.CAUSAL_TEXTS, batch_size=2, verbose=0)

def test_seq2seq_lm_fit():
    lm = hubtasks.bart_seq2seq_lm()
    lm.fit(hubtasks.SEQ2SEQ_TEXTS, batch_size=2, epochs=1, verbose=0)

def test_masked_lm_evaluate():
    lm = hubtasks.bert_masked_lm()
    lm.evaluate(hubtasks.MASKED_TEXTS, batch_size=2, verbose=0)
'''


def test_pytest_maskloss_audits_every_task_call(tmp_path):
    (tmp_path / "hubtasks.py").write_text((HERE / "hubtasks.py").read_text())
    (tmp_path / "test_hub.py").write_text(SUITE)
    result = run_pytest(tmp_path, "--maskloss", "--maskloss-report=out/report.json")
    result.assert_outcomes(passed=3)  # warn mode: the audit changes no outcome
    rows = summary_rows(result)
    modes = {test: {cells[2].split()[0]: cells[3] for cells in found} for test, found in rows.items()}
    assert modes["test_hub.py::test_causal_lm_fit_and_evaluate"] == {
        "fit": "padding-in-denominator", "evaluate": "padding-in-denominator"}
    assert modes["test_hub.py::test_seq2seq_lm_fit"] == {"fit": "padding-in-denominator"}
    assert modes["test_hub.py::test_masked_lm_evaluate"] == {"evaluate": "padding-in-denominator"}
    totals = json.loads((tmp_path / "out" / "report.json").read_text())["totals"]
    assert (totals["audited_calls"], totals["not_audited"]) == (4, 0), totals_line(result)
