"""Which failure mode explains a reported figure: the wrong formulas, their values, the fixes.

A reported value that is not the masked reference is compared with the value of each formula a
known failure mode produces, computed from the same per-token losses; the closest one within
tolerance names the mode. Pure Python on floats: the sums come from the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# What each mode's formula is called in a report.
FORMULAS = {
    "reference": "Σ l·w·m / Σ w·m  (mean over real tokens)",
    "padding-in-denominator": "Σ l·w·m / (B·T)  (padding in the denominator)",
    "unmasked": "Σ l·w / (B·T)  (padding scored as real tokens)",
    "sample-weights-not-normalised": "Σ l·w·m / Σ m  (sample weights scale, do not normalise)",
    "replicas-weighted-equally": "mean over replicas of each replica's masked mean",
    "on-batch-running-mean": "Σ B·loss / Σ B over the calls since the last reset  (running mean)",
    "epoch-weighted-by-sequences": "Σ_b B_b·μ_b / Σ_b B_b  (batch means weighted by sequences)",
    "epoch-mean-of-batches": "mean of batch means  (Keras 3.0–3.1)",
    "empty-batch-nan": "NaN from an all-padding batch",
    "empty-batch-zero": "all-padding batch counted as 0 loss",
}

FIXES = {
    "padding-in-denominator": (
        "Keras zeroes the padded terms but divides by every position, padding included. "
        "With a mask on tf.keras < 2.11: upgrade (TF >= 2.11, tf_keras or Keras 3 divide by the "
        "real tokens) or compile with pytest_maskloss.keras.MaskedLoss(<loss>). With padding "
        "passed as sample_weight: compile the loss with reduction=\"mean_with_sample_weight\" "
        "(Keras >= 3.7) or use pytest_maskloss.keras.MaskedLoss."
    ),
    "mask-lost": (
        "The mask never reaches the loss, so padding is scored as real tokens. Give the layer "
        "that drops it mask support (supports_masking=True or a compute_mask method), move it "
        "before the mask source, or pass the padding to fit/evaluate as sample_weight together "
        "with a loss that normalises by it (pytest_maskloss.keras.MaskedLoss)."
    ),
    "loss-ignores-mask": (
        "The model's output carries the mask but the loss does not apply it. A keras.losses.Loss "
        "subclass must implement call(y_true, y_pred) returning per-token values, not override "
        "__call__, and must not average over the time axis itself; or wrap it: "
        "pytest_maskloss.keras.MaskedLoss(<per-token loss>)."
    ),
    "sample-weights-not-normalised": (
        "Keras masks the batch (a Keras mask or ignore_class) and divides by the number of real "
        "tokens, so sample weights other than 0/1 scale the figure instead of weighting the mean "
        "(Keras >= 2.11, Keras 3; tf.keras 2.10 does the same for ignore_class). Compile the loss "
        "with reduction=\"mean_with_sample_weight\" (Keras >= 3.7) or use "
        "pytest_maskloss.keras.MaskedLoss."
    ),
    "epoch-weighted-by-sequences": (
        "Each batch is right, but Keras averages batch means weighted by the number of "
        "sequences, not tokens, so exp(history['loss']) is not the token perplexity. Read epoch "
        "figures from pytest_maskloss.keras.TokenMeanLoss / Perplexity metrics, or pass "
        "granularity=\"batch\" if per-batch figures are all you rely on."
    ),
    "replicas-weighted-equally": (
        "Under tf.distribute each replica's masked mean counts equally, whatever its number of "
        "real tokens. Normalise by the global number of real tokens of the step "
        "(pytest_maskloss.keras.MaskedLoss does under MirroredStrategy)."
    ),
    "on-batch-running-mean": (
        "On Keras 3.0–3.14 train_on_batch/test_on_batch return the loss tracker's running mean "
        "over every call since Keras last reset its metrics (an evaluate, a fit epoch, or "
        "reset_metrics()), not the batch's own loss. Upgrade to Keras >= 3.15, or call "
        "model.reset_metrics() before each call whose figure you read."
    ),
    "empty-batch": (
        "A batch holds no real token: Keras reports NaN or 0 for it and still counts its "
        "sequences in the epoch mean. Drop all-padding batches from the data "
        "(e.g. dataset.filter) or use pytest_maskloss.keras.MaskedLoss, which returns 0 "
        "instead of NaN."
    ),
    "metric-counts-padding": (
        "The metric averages over padding too. In Keras 3 pass it in weighted_metrics= (only "
        "those receive sample_weight), keep the mask reaching the output, or use "
        "pytest_maskloss.keras.TokenMeanLoss / Perplexity."
    ),
    "unexplained": (
        "No known formula gives the reported value. Check model.losses (regularisers, "
        "add_loss), a custom train_step/test_step, loss_weights, and the padding source given "
        "to the check (pad_id=, pad_in=, mask=)."
    ),
}


@dataclass
class Candidate:
    key: str  # a FORMULAS key
    value: float


@dataclass
class Verdict:
    ok: bool
    mode: str | None = None
    matched: str | None = None  # the FORMULAS key that explains the reported value
    candidates: list = field(default_factory=list)


def close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def judge(reported: float, expected: float, candidates, rtol, atol, *, mode_of) -> Verdict:
    """``candidates``: Candidate list of wrong formulas; ``mode_of(key)`` maps a formula to a
    failure mode. The first candidate (in the order given) within tolerance wins: callers list
    the more specific explanation first."""
    if close(reported, expected, rtol, atol):
        return Verdict(ok=True, candidates=candidates)
    for cand in candidates:
        if close(reported, cand.value, rtol, atol) and not close(cand.value, expected, rtol, atol):
            return Verdict(ok=False, mode=mode_of(cand.key), matched=cand.key, candidates=candidates)
    return Verdict(ok=False, mode="unexplained", candidates=candidates)
