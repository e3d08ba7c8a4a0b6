"""The numpy reference of a sparse categorical cross-entropy from the per-token statistics a step
computed (``compat.tokenstats``): the formula and everything after it stay on the host, in
float64, as in :func:`pytest_maskloss.check.reference.per_token_loss`.

* ``"logits"``: ``(picked - max, Σ exp(logits - max))`` → ``loss = log Σ - picked``: the
  log-softmax of the logits, unclipped (what Keras computes from logits);
* ``"softmax"`` (TensorFlow stacks, the loss taken from logits, also those under a softmax
  output): ``(shift, p)`` → ``loss = -log p - shift``: the same log-softmax, from the label's
  probability (shift 0) or, where that underflowed, from ``(label's logit - max, max p)``, as the
  largest probability is ``1 / Σ exp(logits - max)``;
* ``"clipped"`` (TensorFlow stacks): ``(p_label, Σ clip(p))`` → ``log Σ clip(p) - log clip(p_label)``:
  Keras clips, takes the log and renormalises by the clipped sum;
* ``"probabilities"`` (Keras 3 on JAX and PyTorch): ``(p_label, Σ p)`` →
  ``-log clip(p_label / Σ p)``: divide first, clip afterwards.

The clip bounds are Keras' epsilon rounded to float32, as the step computed in float32. Positions
Keras does not score (``ignore_class``; negative labels on the stacks that score them 0) get 0,
as in the per-token reference; a NaN picked value elsewhere (a label outside the vocabulary) stays
NaN and is refused by the check as a non-finite loss.
"""

from __future__ import annotations

import numpy as np

from pytest_maskloss.check.reference import EPSILON, scored_positions

KINDS = ("logits", "softmax", "clipped", "probabilities")


def statistics_kind(statistics) -> str:
    """The kind of one output's statistics (``{kind: (picked, total)}``)."""
    (kind,) = statistics.keys()
    if kind not in KINDS:
        raise ValueError(f"unknown token statistics {kind!r}; expected one of {KINDS}")
    return kind


def prediction_ndim(statistics) -> int:
    """The rank the predictions had: one more than the statistics'."""
    (picked, _), = statistics.values()
    return np.ndim(picked) + 1


def per_token_from_statistics(spec, y_true, statistics, flavour: str) -> np.ndarray:
    """Per-token sparse cross-entropy (float64, the statistics' shape) of ``spec`` (a
    ``LossSpec``) from one output's statistics."""
    kind = statistics_kind(statistics)
    (picked, total), = statistics.values()
    picked = np.asarray(picked, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    labels = np.asarray(y_true)
    if labels.ndim == picked.ndim + 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    labels = labels.reshape(picked.shape)
    low = float(np.float32(EPSILON))
    high = float(np.float32(1.0) - np.float32(EPSILON))
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "logits":
            loss = np.log(total) - picked
        elif kind == "softmax":
            loss = -np.log(total) - picked
        elif kind == "clipped":
            loss = np.log(total) - np.log(np.clip(picked, low, high))
        else:
            loss = -np.log(np.clip(picked / total, low, high))
    valid = scored_positions(spec, labels, flavour)
    return loss if valid is None else np.where(valid, loss, 0.0)
