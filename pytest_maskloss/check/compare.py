"""Judging reported figures: each batch's and each epoch's loss (and metric) against the
masked reference, with every failure mode's formula as a candidate explanation, recorded as
Comparisons in the Report."""

from __future__ import annotations

import math

from pytest_maskloss.check.diagnose import Candidate, judge
from pytest_maskloss.check.report import Comparison, Report
from pytest_maskloss.check.sums import EPOCH_KEYS, BatchSums, EpochSums

# pytest_maskloss.keras.TokenMeanLoss / TokenPerplexity: Σ l·m / Σ m over the epoch (and its exp)
TOKEN_METRICS = {"token_mean_loss", "token_perplexity"}


class Judge:
    """Compares figures for one check and records them in ``report``."""

    def __init__(self, report: Report, *, rtol, atol, granularity, replicas, output_names):
        self.report = report
        self.rtol = rtol
        self.atol = atol
        self.granularity = granularity
        self.replicas = replicas
        self.output_names = output_names
        # what tells "mask lost" from "loss ignores the mask" (set once the model has run)
        self.has_mask_source = False
        self.output_has_mask = False
        self.mask_dropper = None
        self.negative_padding_labels = set()  # negative sparse labels seen at padding positions

    # -- modes --------------------------------------------------------------------------

    def _unmasked_mode(self):
        if self.has_mask_source and self.output_has_mask:
            return "loss-ignores-mask", ""
        if self.has_mask_source:
            return "mask-lost", (
                str(self.mask_dropper) if self.mask_dropper
                else "the mask does not reach the output"
            )
        return "mask-lost", "no mask reaches the loss: the model has no mask source and no zero sample_weight"

    def _mode_of(self, key):
        if key == "unmasked":
            return self._unmasked_mode()[0]
        if key in ("empty-batch-nan", "empty-batch-zero"):
            return "empty-batch"
        if key == "epoch-mean-of-batches":
            return "epoch-weighted-by-sequences"
        return key

    def _detail(self, mode):
        if mode in ("mask-lost", "loss-ignores-mask"):
            return self._unmasked_mode()[1]
        if mode == "padding-in-denominator" and self.negative_padding_labels:
            labels = sorted(self.negative_padding_labels)
            return (f"the padding labels {labels} lie outside the vocabulary: Keras scores them 0 "
                    f"and still counts them in the divisor; compile the loss with "
                    f"ignore_class={labels[0]}")
        return ""

    def _note(self, text):
        if text not in self.report.notes:
            self.report.notes.append(text)

    # -- losses -------------------------------------------------------------------------

    def batch(self, path, logs, total: BatchSums, scope, reg, *, own=None, running=None):
        """``own``: the step's own loss; ``running``: Keras' running mean of the steps' own
        losses since its tracker's last reset (``*_on_batch`` on Keras 3.0–3.14)."""
        reported = logs.get("loss")
        if reported is None:
            return
        if total.weight <= 0:
            # a batch without a real token has no mean: a finite figure for it is harmless by
            # itself (the epoch figure is judged separately), a NaN poisons every aggregate
            if math.isfinite(reported):
                self.report.notes.append(
                    f"{path}: {scope} holds no real token; Keras reports {reported:.7g} "
                    "for it and counts its sequences in epoch figures")
                return
            self.report.comparisons.append(Comparison(
                path, "loss", scope, reported, float("nan"), False, "empty-batch",
                "empty-batch-nan", [Candidate("empty-batch-nan", float("nan"))],
                total.real, total.positions, detail="the batch holds no real token"))
            return
        cands = [
            Candidate("sample-weights-not-normalised", total.weights_not_normalised() + reg),
            Candidate("padding-in-denominator", total.pad_denominator() + reg),
            Candidate("unmasked", total.unmasked_mean() + reg),
        ]
        if self.replicas > 1:
            cands.append(Candidate("replicas-weighted-equally", total.replica_mean() + reg))
        if running is not None and own is not None and not math.isclose(running, own, rel_tol=self.rtol):
            cands.append(Candidate("on-batch-running-mean", running))
        self._add(path, "loss", scope, reported, total.ref() + reg, cands, total.real, total.positions)
        found = self.report.comparisons[-1]
        if found.mode == "on-batch-running-mean":
            found.detail = (f"the call returned the mean of its own loss and the earlier calls' since "
                            f"Keras last reset its metrics; this batch's own loss is {own:.7g}")
            # the batch's own figure may be wrong as well: judged on its own
            self._add(path, "loss", f"{scope} (its own loss)", own, total.ref() + reg, cands[:-1],
                      total.real, total.positions)

    def loss_granularity(self, logs):
        """At token granularity a token-level epoch figure must be reported. Keras' epoch loss
        is always sequence-weighted, so a compiled TokenMeanLoss/TokenPerplexity metric
        (pytest_maskloss.keras) provides it instead: the loss is then judged per batch and the
        metric against the token mean."""
        if self.granularity == "token" and any(self.is_token_metric(n) for n in logs):
            self._note("granularity='token': the epoch loss is judged as Keras aggregates it; the "
                       "token-level figure is the compiled token metric, judged against the token mean")
            return "batch"
        return self.granularity

    def is_token_metric(self, name):
        base = name.split("_", 1)[1] if len(self.output_names) > 1 and "_" in name else name
        return name in TOKEN_METRICS or base in TOKEN_METRICS

    def epoch(self, path, reported, quantity, epoch: EpochSums, reg, granularity=None, scope=None):
        if reported is None:
            return
        granularity = granularity or self.granularity
        token = epoch.token_mean() + reg
        by_seq = {k: epoch.seq_weighted(k) + reg for k in EPOCH_KEYS}
        expected = token if granularity == "token" else by_seq["reference"]
        cands = []
        if epoch.empty_batches:  # most specific first: an empty batch also zeroes other formulas
            cands.append(Candidate("empty-batch-nan", by_seq["empty-batch-nan"]))
            cands.append(Candidate("empty-batch-zero", by_seq["empty-batch-zero"]))
        if granularity == "token":
            cands.append(Candidate("epoch-weighted-by-sequences", by_seq["reference"]))
            cands.append(Candidate("epoch-mean-of-batches", epoch.mean_of_batch_means() + reg))
        cands.append(Candidate("sample-weights-not-normalised", by_seq["sample-weights-not-normalised"]))
        cands.append(Candidate("padding-in-denominator", by_seq["padding-in-denominator"]))
        cands.append(Candidate("unmasked", by_seq["unmasked"]))
        if self.replicas > 1:
            cands.append(Candidate("replicas-weighted-equally", by_seq["replicas-weighted-equally"]))
        scope = scope or f"epoch, {epoch.batches} batches"
        self._add(path, quantity, scope, float(reported), expected, cands, epoch.real, epoch.positions)
        if granularity == "batch" and not math.isclose(token, by_seq["reference"], rel_tol=self.rtol):
            self._note(
                f"{path}: the epoch {quantity} {float(reported):.7g} is Keras' mean of batch means "
                f"weighted by sequences; the mean over real tokens is {token:.7g} "
                f"(exp: {math.exp(min(token, 700)):.7g}). granularity='token' makes this a failure."
            )

    def _add(self, path, quantity, scope, reported, expected, cands, real, positions):
        reported = float(reported)
        verdict = judge(reported, expected, cands, self.rtol, self.atol, mode_of=self._mode_of)
        mode = verdict.mode
        self.report.comparisons.append(
            Comparison(path, quantity, scope, reported, expected, verdict.ok, mode, verdict.matched,
                       cands, real, positions, detail=self._detail(mode) if mode else "")
        )

    # -- metrics ------------------------------------------------------------------------

    def metric(self, path, name, scope, reported, expected, unmasked, real, n):
        reported = float(reported)
        cands = [Candidate("unmasked", unmasked)]
        verdict = judge(reported, expected, cands, self.rtol, self.atol,
                        mode_of=lambda key: "metric-counts-padding")
        detail = f"metric {name!r} counts padding" if verdict.mode == "metric-counts-padding" else ""
        self.report.comparisons.append(
            Comparison(path, name, scope, reported, expected, verdict.ok, verdict.mode, verdict.matched,
                       cands, real, n, detail=detail)
        )
