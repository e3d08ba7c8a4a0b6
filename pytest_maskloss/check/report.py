"""What a check found, as data (``Report``) and as the text a failing test shows."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pytest_maskloss.check.diagnose import FIXES, FORMULAS


@dataclass
class Comparison:
    """One reported figure against its masked reference."""

    path: str  # "evaluate", "fit", "test_on_batch", "train_on_batch"
    quantity: str  # "loss", "out_loss", or a metric name
    scope: str  # "epoch" or "batch 3"
    reported: float
    reference: float
    ok: bool
    mode: str | None = None
    matched: str | None = None
    candidates: list = field(default_factory=list)
    real_tokens: int = 0
    total_tokens: int = 0
    detail: str = ""  # e.g. the layer that drops the mask

    @property
    def difference(self) -> float:
        return self.reported - self.reference

    @property
    def relative_error(self) -> float:
        if self.reference == 0 or math.isnan(self.reference) or math.isnan(self.reported):
            return float("nan")
        return (self.reported - self.reference) / abs(self.reference)

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "quantity": self.quantity,
            "scope": self.scope,
            "reported": self.reported,
            "reference": self.reference,
            "relative_error": self.relative_error,
            "ok": self.ok,
            "mode": self.mode,
            "detail": self.detail,
            "real_tokens": self.real_tokens,
            "total_tokens": self.total_tokens,
            "formulas": {FORMULAS.get(c.key, c.key): c.value for c in self.candidates},
        }


_PATH_ORDER = {"evaluate": 0, "fit": 1, "test_on_batch": 2, "train_on_batch": 3}


@dataclass
class Report:
    """Every figure compared by one check, the token counts and what could not be compared."""

    keras: str
    loss: str
    data: str
    padding: str
    granularity: str
    rtol: float
    atol: float
    batches: int = 0
    sequences: int = 0
    real_tokens: int = 0
    total_tokens: int = 0
    token_mean: float = float("nan")
    sequence_weighted_mean: float = float("nan")
    comparisons: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # path -> reason it could not be compared exactly
    notes: list = field(default_factory=list)
    fix_for_this_model: dict = field(default_factory=dict)  # mode -> a fix naming this model's kind
    timings: dict = field(default_factory=dict)  # seconds spent: predict, reference, evaluate, fit
    # path -> what its steps handed to the host: "predictions", "token statistics" (a sparse
    # cross-entropy's per-token statistics, computed in the step) or "per-token losses"
    observed: dict = field(default_factory=dict)

    @property
    def findings(self) -> list:
        """Mismatches, epoch figures first (the ones users read), then per-batch ones."""
        wrong = [c for c in self.comparisons if not c.ok]
        return sorted(wrong, key=lambda c: (_PATH_ORDER.get(c.path, len(_PATH_ORDER)),
                                            not c.scope.startswith("epoch")))

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.token_mean) if self.token_mean < 700 else float("inf")

    def as_dict(self) -> dict:
        return {
            "keras": self.keras,
            "loss": self.loss,
            "data": self.data,
            "padding": self.padding,
            "granularity": self.granularity,
            "rtol": self.rtol,
            "atol": self.atol,
            "batches": self.batches,
            "sequences": self.sequences,
            "real_tokens": self.real_tokens,
            "total_tokens": self.total_tokens,
            "token_mean": self.token_mean,
            "token_perplexity": self.token_perplexity,
            "sequence_weighted_mean": self.sequence_weighted_mean,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "skipped": dict(self.skipped),
            "notes": list(self.notes),
            "timings": dict(self.timings),
            "observed": dict(self.observed),
        }

    def summary(self) -> str:
        compared = sorted({c.path for c in self.comparisons})
        lines = [
            f"maskloss: {len(self.comparisons)} figures compared on {', '.join(compared) or 'no path'}"
            f" — {len(self.findings)} mismatch(es)",
            f"  tokens: {self.real_tokens} real of {self.total_tokens} "
            f"({self.total_tokens - self.real_tokens} padding), {self.sequences} sequences in {self.batches} batches",
            f"  token mean {_num(self.token_mean)} (perplexity {_num(self.token_perplexity)}); "
            f"batch means weighted by sequences {_num(self.sequence_weighted_mean)}",
        ]
        for path, reason in self.skipped.items():
            lines.append(f"  not compared: {path}: {reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _num(value: float) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.7g}"


MODE_TITLES = {
    "padding-in-denominator": "padding is counted in the denominator",
    "mask-lost": "the mask is lost inside the model",
    "loss-ignores-mask": "the loss ignores the mask",
    "sample-weights-not-normalised": "sample weights scale the masked mean instead of weighting it",
    "epoch-weighted-by-sequences": "the epoch figure weights batches by sequences, not tokens",
    "replicas-weighted-equally": "replicas are weighted equally, not by their tokens",
    "on-batch-running-mean": "the call returns a running mean over earlier calls, not the batch's loss",
    "empty-batch": "an all-padding batch poisons the figure",
    "metric-counts-padding": "a metric counts padding",
    "unexplained": "no known formula explains the reported value",
}


def mismatch_message(report: Report) -> str:
    findings = report.findings
    first = findings[0]
    lines = [
        f"{first.path} reports a {first.quantity} that is not the masked reference: "
        f"{MODE_TITLES[first.mode]} ({first.mode})",
        "",
    ]
    lines += _describe(first)
    lines += [
        "",
        f"  tokens:      {report.real_tokens} real of {report.total_tokens} "
        f"({report.total_tokens - report.real_tokens} padding), {report.sequences} sequences in "
        f"{report.batches} batches",
        f"  token mean:  {_num(report.token_mean)} (perplexity {_num(report.token_perplexity)})",
        f"  keras:       {report.keras}",
        f"  loss:        {report.loss}",
        f"  data:        {report.data}; padding from {report.padding}",
        f"  tolerance:   rtol={report.rtol:g}, atol={report.atol:g}",
        "",
        f"  fix: {report.fix_for_this_model.get(first.mode, FIXES[first.mode])}",
    ]
    others = findings[1:]
    if others:
        groups = {}
        for c in others:
            groups.setdefault((c.path, c.quantity, c.mode, c.detail), []).append(c)
        lines += ["", f"  {len(others)} more mismatch(es):"]
        for (path, quantity, mode, detail), items in groups.items():
            where = items[0].scope if len(items) == 1 else f"{len(items)} batches"
            worst = max(items, key=lambda c: abs(c.difference) if not math.isnan(c.difference) else math.inf)
            lines.append(
                f"    {path} {quantity} [{where}]: {mode}"
                + (f" ({detail})" if detail else "")
                + f"; e.g. reported {_num(worst.reported)}, reference {_num(worst.reference)}"
            )
    for path, reason in report.skipped.items():
        lines.append(f"  not compared: {path}: {reason}")
    return "\n".join(lines)


def _describe(c: Comparison) -> list:
    lines = [
        f"  path:        {c.path} ({c.scope})" + (f" — {c.detail}" if c.detail else ""),
        f"  reported:    {_num(c.reported)}",
        f"  reference:   {_num(c.reference)}   (mean over {c.real_tokens} real tokens of {c.total_tokens})",
        f"  difference:  {_num(c.difference)}"
        + ("" if math.isnan(c.relative_error) else f" (relative {c.relative_error:+.2%})"),
    ]
    if c.candidates:
        lines.append("  formulas tried:")
        width = max(len(FORMULAS.get(k.key, k.key)) for k in c.candidates)
        for cand in c.candidates:
            mark = "→" if cand.key == c.matched else " "
            label = FORMULAS.get(cand.key, cand.key)
            lines.append(f"   {mark} {label:<{width}}  {_num(cand.value)}")
    return lines
