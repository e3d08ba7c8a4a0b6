"""Compiled metrics the check can judge (accuracy, cross-entropy, the package's token
metrics): their per-token values in numpy, masked sums per batch and per epoch, compared."""

from __future__ import annotations

import math

import numpy as np

from pytest_maskloss.check.compare import TOKEN_METRICS, Judge
from pytest_maskloss.check.lossspec import LossSpec
from pytest_maskloss.check.outputs import as_list
from pytest_maskloss.check.padding import Padding
from pytest_maskloss.check.reference import per_token_loss

# Metrics whose per-token values we can compute, by the name Keras logs them under.
ACCURACY_NAMES = {
    "accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy",
}
CROSSENTROPY_NAMES = {
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
}


class Metrics:
    """The compiled metrics of one check, found in the first logs Keras returns."""

    def __init__(self, outputs, stack: str, padding: Padding, judge: Judge):
        self.outputs = outputs
        self.stack = stack
        self.padding = padding
        self.judge = judge
        self.names = []
        self.epoch = {}  # name -> (Σ v·w·m, Σ w·m, Σ v, count, real) over the epoch

    def logged(self, logs) -> list:
        """Metric names in ``logs`` (the losses left out)."""
        skip = {"loss"} | {f"{o.name}_loss" for o in self.outputs}
        return [k for k in logs if k not in skip]

    def need_predictions(self) -> bool:
        """Does a compiled metric the check judges need the predictions (accuracy,
        cross-entropy, the package's token metrics)? Other metrics are not judged."""
        judged = ACCURACY_NAMES | TOKEN_METRICS | CROSSENTROPY_NAMES
        prefixes = tuple(f"{o.name}_" for o in self.outputs)
        for name in self.names:
            base = name
            for prefix in prefixes:
                if name.startswith(prefix) and name[len(prefix):] in judged:
                    base = name[len(prefix):]
            if base in judged:
                return True
        return False

    def _output(self, name):
        if len(self.outputs) == 1:
            return self.outputs[0]
        return next((o for o in self.outputs if name.startswith(o.name + "_")), None)

    def _values(self, name, batch, preds):
        """Per-token values of a metric Keras logs under ``name`` (None if not one we model)."""
        out = self._output(name)
        if out is None:
            return None
        multi = len(self.outputs) > 1
        base = name[len(out.name) + 1:] if multi and name.startswith(out.name + "_") else name
        names = [o.name for o in self.outputs]
        y_out = np.asarray(as_list(batch.y, names)[out.index])
        p_out = np.asarray(as_list(preds, names)[out.index])
        if base in ACCURACY_NAMES:
            return _accuracy(base, out.spec, y_out, p_out), y_out
        if base in TOKEN_METRICS:  # this package's token metrics: the output's own loss per token
            return out.per_token(y_out, p_out, self.stack), y_out
        if base in CROSSENTROPY_NAMES:
            values = per_token_loss(LossSpec(name=base), y_out, p_out, flavour=self.stack,
                                    unwrapped_activation=out.unwrapped)
            return values, y_out
        return None

    def _sums(self, name, batch, preds, start=0):
        got = self._values(name, batch, preds)
        if got is None:
            return None
        values, y_out = got
        values = np.asarray(values, dtype=np.float64)
        m = self.padding.token_mask(batch, y_out, values.shape, start)
        w = self.padding.user_weights(batch, values.shape)
        return (float(np.sum(values * w * m)), float(np.sum(w * m)), float(np.sum(values)), values.size, int(m.sum()))

    def compare_batch(self, path, logs, batch, preds, scope, start=0):
        for name in self.names:
            sums = self._sums(name, batch, preds, start)
            if sums is None or sums[1] <= 0:
                continue
            masked, weight, unmasked, n, real = sums
            expected, unmasked_mean = _means(name, masked, weight, unmasked, n)
            self.judge.metric(path, name, scope, logs[name], expected, unmasked_mean, real, n)

    def accumulate(self, batch, preds, start=0, into=None):
        """Add a batch's metric sums to ``into`` (the epoch's, by default)."""
        into = self.epoch if into is None else into
        for name in self.names:
            sums = self._sums(name, batch, preds, start)
            if sums is None:
                continue
            prev = into.get(name, (0.0, 0.0, 0.0, 0, 0))
            into[name] = tuple(a + b for a, b in zip(prev, sums))

    def compare_epoch(self, path, logs, batches, sums=None, prefix="", scope=None):
        """Judge the epoch figures in ``logs`` (named ``prefix`` + metric, e.g. ``val_``)."""
        sums = self.epoch if sums is None else sums
        for name in self.logged(logs):
            base = name[len(prefix):] if prefix and name.startswith(prefix) else None if prefix else name
            if base is None or base not in sums:
                continue
            masked, weight, unmasked, n, real = sums[base]
            if weight <= 0:
                continue
            expected, unmasked_mean = _means(base, masked, weight, unmasked, n)
            self.judge.metric(path, name, scope or f"epoch, {batches} batches", logs[name], expected,
                              unmasked_mean, real, n)


def _means(name, masked, weight, unmasked, count):
    """A metric's masked reference and its unmasked value (exp of both for a perplexity)."""
    expected, unmasked_mean = masked / weight, unmasked / count
    if name.endswith("token_perplexity"):
        return math.exp(min(expected, 700)), math.exp(min(unmasked_mean, 700))
    return expected, unmasked_mean


def _accuracy(name, spec, y, p):
    loss_name = spec.name if spec is not None else ""
    if name in ("accuracy", "acc"):
        if "binary" in loss_name:
            name = "binary_accuracy"
        elif loss_name == "categorical_crossentropy" or (y.ndim == p.ndim and y.shape[-1] == p.shape[-1] and p.shape[-1] > 1):
            name = "categorical_accuracy"
        else:
            name = "sparse_categorical_accuracy"
    if name == "sparse_categorical_accuracy":
        labels = y[..., 0] if y.ndim == p.ndim else y
        return (np.argmax(p, axis=-1) == labels).astype(np.float64)
    if name == "categorical_accuracy":
        return (np.argmax(p, axis=-1) == np.argmax(y, axis=-1)).astype(np.float64)
    return np.mean((p > 0.5) == (y > 0.5), axis=-1).astype(np.float64)
