"""The sums a check keeps per batch and per epoch, and the value each formula (the reference
and every failure mode's) takes from them, so the batches themselves need not be kept."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The epoch formulas aggregated the way Keras aggregates batches (weighted by sequences).
EPOCH_KEYS = (
    "reference", "padding-in-denominator", "unmasked", "replicas-weighted-equally", "empty-batch-nan",
    "empty-batch-zero", "sample-weights-not-normalised",
)


@dataclass
class BatchSums:
    """The sums of one batch for one output (or the weighted total over outputs)."""

    size: int
    masked: float = 0.0  # Σ l·w·m
    weight: float = 0.0  # Σ w·m
    unmasked: float = 0.0  # Σ l·w
    positions: int = 0  # B·T
    real: int = 0
    replica_means: list = field(default_factory=list)

    def ref(self):
        return self.masked / self.weight if self.weight > 0 else float("nan")

    def pad_denominator(self):
        return self.masked / self.positions

    def weights_not_normalised(self):
        """Σ l·w·m / Σ m: Keras' masked mean with sample weights that scale, not normalise."""
        return self.masked / self.real if self.real else float("nan")

    def unmasked_mean(self):
        return self.unmasked / self.positions

    def replica_mean(self):
        vals = [v for v in self.replica_means if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else float("nan")


@dataclass
class EpochSums:
    """Accumulated over batches: Σ l·m, Σ m (token level) and each batch-level formula
    aggregated the way Keras aggregates batches (weighted by sequences), so an epoch figure
    can be explained without keeping the batches."""

    masked: float = 0.0
    weight: float = 0.0
    sequences: int = 0
    batches: int = 0
    real: int = 0
    positions: int = 0
    empty_batches: int = 0
    nonempty_sequences: int = 0
    by_seq: dict = field(default_factory=lambda: {k: 0.0 for k in EPOCH_KEYS})
    sum_of_batch_means: float = 0.0
    added_by_seq: float = 0.0  # Σ B_b · (model.losses of batch b)

    def add(self, s: BatchSums, added: float = 0.0):
        self.masked += s.masked
        self.weight += s.weight
        self.sequences += s.size
        self.batches += 1
        self.real += s.real
        self.positions += s.positions
        empty = s.weight <= 0
        self.empty_batches += int(empty)
        ref = 0.0 if empty else s.ref()
        # the reference leaves an all-padding batch out (it has no mean); Keras may count it
        if not empty:
            self.by_seq["reference"] += s.size * ref
            self.nonempty_sequences += s.size
        self.by_seq["empty-batch-zero"] += s.size * ref
        self.by_seq["padding-in-denominator"] += s.size * s.pad_denominator()
        self.by_seq["unmasked"] += s.size * s.unmasked_mean()
        self.by_seq["sample-weights-not-normalised"] += s.size * (0.0 if empty else s.weights_not_normalised())
        self.by_seq["replicas-weighted-equally"] += s.size * (0.0 if empty else s.replica_mean())
        self.by_seq["empty-batch-nan"] += s.size * (float("nan") if empty else ref)
        self.sum_of_batch_means += ref
        self.added_by_seq += s.size * added

    def merge(self, other: "EpochSums"):
        """Add another period's sums (the periods of several ``*_on_batch`` calls)."""
        for name in ("masked", "weight", "sequences", "batches", "real", "positions", "empty_batches",
                     "nonempty_sequences", "sum_of_batch_means", "added_by_seq"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key in EPOCH_KEYS:
            self.by_seq[key] += other.by_seq[key]

    def added(self):
        """model.losses (regularisers, add_loss) as Keras' epoch figure averages them."""
        return self.added_by_seq / self.sequences if self.sequences else 0.0

    def mean_of_batch_means(self):
        return self.sum_of_batch_means / self.batches if self.batches else float("nan")

    def token_mean(self):
        return self.masked / self.weight if self.weight > 0 else float("nan")

    def seq_weighted(self, key):
        sequences = self.nonempty_sequences if key == "reference" else self.sequences
        return self.by_seq[key] / sequences if sequences else float("nan")


@dataclass
class RunningLoss:
    """Keras 3's loss tracker as the check follows it through ``*_on_batch`` calls: Σ B·loss and
    Σ B of the steps' own losses since its last reset (seeded with the tracker's state)."""

    total: float = 0.0
    count: float = 0.0

    def reset(self):
        self.total = self.count = 0.0

    def add(self, size: int, loss: float) -> float:
        """Take one step's own loss; the running mean Keras then reports."""
        self.total += size * loss
        self.count += size
        return self.total / self.count if self.count else float("nan")


class Total:
    """Keras' total loss is Σ_k weight_k · (output k's reduced loss): every formula of the
    total is the same weighted sum of that formula over the outputs (batch or epoch sums)."""

    def __init__(self, parts):
        self.parts = parts  # [(weight, BatchSums or EpochSums)]

    def __getattr__(self, name):
        if name in ("size", "sequences", "batches", "empty_batches", "nonempty_sequences"):
            return getattr(self.parts[0][1], name)
        if name in ("real", "positions"):
            return sum(getattr(s, name) for _, s in self.parts)
        if name == "weight":
            return min(s.weight for _, s in self.parts)
        formula = getattr(self.parts[0][1], name)
        if not callable(formula):
            raise AttributeError(name)
        return lambda *args: sum(w * getattr(s, name)(*args) for w, s in self.parts)


def replica_means(weighted_losses, weights, replicas) -> list:
    """Each replica's masked mean, the batch split as tf.distribute splits it."""
    if replicas <= 1:
        return []
    means = []
    for part_l, part_w in zip(np.array_split(weighted_losses, replicas), np.array_split(weights, replicas)):
        w = float(np.sum(part_w))
        means.append(float(np.sum(part_l)) / w if w > 0 else float("nan"))
    return means
