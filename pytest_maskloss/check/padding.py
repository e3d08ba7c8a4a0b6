"""Where the padding is in a batch: from the labels, the inputs, zero sample weights, the
model's Masking value or a mask the caller gives, as a (batch, time) boolean array."""

from __future__ import annotations

import numpy as np

from pytest_maskloss.check.choices import PAD_IN
from pytest_maskloss.check.data import Batch
from pytest_maskloss.errors import MaskLossInputError



def first(structure):
    """The first entry of a dict/list structure (sample weights of the first output)."""
    if isinstance(structure, dict):
        return next(iter(structure.values()))
    if isinstance(structure, (list, tuple)):
        return structure[0]
    return structure


class Padding:
    """The padding rule of one check: ``pad_in`` resolved against the model's mask sources."""

    def __init__(self, pad_in, pad_id, mask, mask_sources):
        self.pad_id = pad_id
        self.mask = mask
        self.masking = next((l for l in mask_sources if type(l).__name__ == "Masking"), None)
        self.pad_in = self._resolve(pad_in, mask_sources)
        self.description = self._describe()

    def _resolve(self, pad_in, mask_sources):
        if self.mask is not None:
            return "mask"
        if pad_in not in PAD_IN and not isinstance(pad_in, str):
            raise MaskLossInputError(f"pad_in must be one of {PAD_IN} or an input name, not {pad_in!r}")
        if pad_in != "auto":
            return pad_in
        if any(type(layer).__name__ in ("Embedding", "Masking") for layer in mask_sources):
            return "inputs"
        return "auto"  # decided per batch: zero sample weights if any, else labels

    def _describe(self):
        if self.pad_in == "mask":
            return "the mask given to the check"
        if self.pad_in == "inputs":
            if self.masking is not None:
                return f"inputs equal to the Masking value {self.masking.mask_value!r}"
            return f"inputs equal to pad id {self.pad_id!r}"
        if self.pad_in == "sample_weight":
            return "zero sample weights"
        if self.pad_in == "labels":
            return f"labels equal to pad id {self.pad_id!r}"
        if self.pad_in != "auto":
            return f"input {self.pad_in!r} equal to pad id {self.pad_id!r}"
        return f"zero sample weights, else labels equal to pad id {self.pad_id!r}"

    def from_weights(self, batch: Batch) -> bool:
        """Whether this batch's padding is its zero sample weights (given, or found by "auto")."""
        if self.pad_in == "sample_weight":
            return True
        return (self.pad_in == "auto" and batch.sample_weight is not None
                and bool(np.any(np.asarray(first(batch.sample_weight)) == 0)))

    def user_weights(self, batch: Batch, shape):
        """The sample weights broadcast to the per-token losses (ones without any)."""
        if batch.sample_weight is None:
            return np.ones(shape)
        w = np.asarray(first(batch.sample_weight), dtype=np.float64)
        if w.ndim == 1 and len(shape) == 2:
            w = w[:, None]
        return np.broadcast_to(w, shape)

    def token_mask(self, batch: Batch, y_out, shape, start=0):
        """True at real tokens, for per-token losses of ``shape``."""
        if self.pad_in == "mask":
            m = np.asarray(self.mask(batch)) if callable(self.mask) else np.asarray(self.mask)[start:start + batch.size]
            return _fit(m, shape, "the mask given to the check")
        pad_in = self.pad_in
        if pad_in == "auto":
            from_weights = self.from_weights(batch)
            pad_in = "sample_weight" if from_weights else "labels"
            self.description = "zero sample weights" if from_weights else f"labels equal to pad id {self.pad_id!r}"
        if pad_in == "sample_weight":
            if batch.sample_weight is None:
                raise MaskLossInputError("pad_in='sample_weight' but the data has no sample_weight")
            return _fit(np.asarray(first(batch.sample_weight)) != 0, shape, "sample_weight")
        if pad_in == "labels":
            labels = np.asarray(y_out)
            if labels.ndim == len(shape) + 1 and labels.shape[-1] == 1:
                labels = labels[..., 0]
            if labels.ndim == len(shape) + 1:  # dense labels: padding is an all-pad_id vector
                return _fit(~np.all(labels == self.pad_id, axis=-1), shape, "labels")
            return _fit(labels != self.pad_id, shape, "labels")
        tokens = _token_input(batch.x, pad_in)
        if self.masking is not None and pad_in == "inputs":
            return _fit(np.any(tokens != self.masking.mask_value, axis=-1), shape, "inputs")
        return _fit(tokens != self.pad_id, shape, "inputs")


def _token_input(x, pad_in):
    if isinstance(x, dict):
        if pad_in in x:
            return np.asarray(x[pad_in])
        candidates = [k for k, v in x.items() if np.asarray(v).ndim >= 2]
        if len(candidates) != 1:
            raise MaskLossInputError(
                f"dict inputs {sorted(x)}: say which one holds the padded tokens with pad_in=<name>"
            )
        return np.asarray(x[candidates[0]])
    if isinstance(x, (list, tuple)):
        return np.asarray(x[0])
    return np.asarray(x)


def _fit(m, shape, source):
    m = np.asarray(m)
    if m.ndim == 1 and len(shape) == 2:  # per-sequence weights
        m = np.broadcast_to(m[:, None], shape)
    if m.shape != tuple(shape):
        raise MaskLossInputError(
            f"the padding mask from {source} has shape {m.shape} but the per-token losses "
            f"have shape {tuple(shape)}: labels and predictions must share the (batch, time) "
            "axes (is the output per sequence rather than per token?)"
        )
    return m.astype(bool)
