"""``assert_masked_loss`` / ``check_masked_loss``: the runtime check's public entry points,
their options validated, the run marked for the re-entrancy guard."""

from __future__ import annotations

from pytest_maskloss.check import guard
from pytest_maskloss.check.choices import ALL_PATHS, GRANULARITIES
from pytest_maskloss.check.data import DataSource
from pytest_maskloss.check.report import Report, mismatch_message
from pytest_maskloss.check.run import CheckRun
from pytest_maskloss.compat import detect, model as M
from pytest_maskloss.errors import MaskLossInputError, MaskLossMismatch


def assert_masked_loss(model, x, y=None, sample_weight=None, **options) -> Report:
    """Check that every loss (and masked metric) ``model`` reports on ``(x, y)`` is the mean
    over real tokens; raise ``MaskLossMismatch`` naming the failure mode if one is not.

    Returns the ``Report`` when every compared figure matches. Options are those of
    ``check_masked_loss``.
    """
    __tracebackhide__ = True  # a failing test shows the caller's line and the diagnosis only
    report = check_masked_loss(model, x, y, sample_weight, **options)
    if report.findings:
        raise MaskLossMismatch(mismatch_message(report), report=report, findings=report.findings)
    return report


def check_masked_loss(
    model,
    x,
    y=None,
    sample_weight=None,
    *,
    batch_size=None,
    steps=None,
    pad_id=0,
    pad_in="auto",
    mask=None,
    per_token_loss_fn=None,
    paths=ALL_PATHS,
    granularity="batch",
    rtol=None,
    atol=None,
    metrics=True,
) -> Report:
    """Run the checks and return the Report (mismatches are in ``report.findings``).

    Data: numpy arrays (``x``, ``y``, ``sample_weight``, ``batch_size``; dict/list inputs and
    outputs), a ``tf.data.Dataset`` yielding ``(x, y[, sample_weight])``, a Keras
    Sequence/PyDataset, a generator function (called afresh for each pass) or a generator
    (read once and kept in memory). ``steps`` limits the number of batches (required for data
    that never ends).

    Padding: ``pad_in`` is "labels" (``y == pad_id``), "inputs" (``x == pad_id``, or the
    Masking layer's ``mask_value``), "sample_weight" (zero weights), or "auto": the model's
    mask source when it has one (Embedding(mask_zero=True) → inputs, Masking → inputs), zero
    sample weights when given, else the labels. ``mask`` overrides all of them: an array
    aligned with array data, or a function ``mask(batch) -> (B, T) bool``.

    ``per_token_loss_fn(y_true, y_pred) -> (B, T) array`` (numpy) gives the reference for a
    custom loss (a dict of them for several outputs). ``paths`` chooses among
    evaluate, test_on_batch, train_on_batch and fit. ``granularity`` "batch": each batch's
    figure must be its masked mean and epoch figures Keras' aggregation of those; "token":
    epoch figures must be the mean over all real tokens of the data. ``rtol``/``atol``
    default by the model's compute dtype.
    """
    info = detect.keras_info(model)
    if not M.is_compiled(model):
        raise MaskLossInputError(
            f"model {model.name!r} is not compiled: call model.compile(optimizer, loss) "
            "before checking its reported loss"
        )
    unknown = [p for p in paths if p not in ALL_PATHS]
    if unknown:
        raise MaskLossInputError(f"unknown path(s) {unknown}; choose from {list(ALL_PATHS)}")
    if granularity not in GRANULARITIES:
        raise MaskLossInputError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    data = DataSource(x, y, sample_weight, batch_size=batch_size, steps=steps)
    run = CheckRun(
        model, info, data, paths=paths, pad_id=pad_id, pad_in=pad_in, mask=mask,
        per_token_loss_fn=per_token_loss_fn, granularity=granularity,
        rtol=rtol, atol=atol,
        metrics=metrics,
    )
    with guard.running():
        return run.run()
