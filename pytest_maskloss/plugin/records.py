"""The audit's records (one JSON-able dict per audited call) and what is made of them: the
summary table, the totals, the JSON report and the JUnit property texts."""

from __future__ import annotations

import json
import math
import os


def number(value):
    """JSON-safe float: non-finite values as strings."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _fmt(value):
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    return f"{value:.7g}"


def _relative(value):
    return value if isinstance(value, str) else f"{value:+.2%}"


def new_record(test, model, path) -> dict:
    return {"test": test, "model": model, "path": path, "keras": None,
            "status": "not-audited", "reason": "", "findings": []}


def finding_of(comparison) -> dict:
    """A mismatched Comparison of the check, as a record entry."""
    c = comparison
    return {
        "path": c.path,
        "quantity": c.quantity,
        "scope": c.scope,
        "mode": c.mode,
        "reported": number(c.reported),
        "reference": number(c.reference),
        "relative_error": number(c.relative_error),
        "detail": c.detail,
    }


def headline(findings) -> list:
    """The findings a summary row shows: per path and quantity, the last figure the test got (the
    final epoch of a fit, what ``*_on_batch`` returned); a path's per-step findings only when it
    has nothing else."""
    shown = {}
    steps = {}
    for c in findings:
        if c.scope.startswith("epoch") or c.path.endswith("_on_batch"):
            shown[(c.path, c.quantity)] = c
        else:
            steps.setdefault(c.path, c)
    for path, c in steps.items():
        if not any(p == path for p, _ in shown):
            shown[(path, c.quantity)] = c
    return list(shown.values())


def finding_rows(records) -> list:
    rows = []
    for record in records:
        for finding in record.get("findings", []):
            rows.append({"test": record["test"], "model": record["model"], "keras": record.get("keras"),
                         "call": record.get("call", 1), **finding})
    return rows


def property_text(record, f) -> str:
    """One finding as the text of a JUnit ``maskloss`` property."""
    return (
        f"{record['model']} {f['path']}{_nth(record.get('call', 1))} {f['quantity']} [{f['scope']}]: {f['mode']}; "
        f"reported {_fmt(f['reported'])}, reference {_fmt(f['reference'])}, "
        f"relative error {_relative(f['relative_error'])}"
        + (f"; {f['detail']}" if f["detail"] else "")
    )


def totals(records) -> dict:
    findings = finding_rows(records)
    modes = {}
    for row in findings:
        modes[row["mode"]] = modes.get(row["mode"], 0) + 1
    reasons = {}
    for r in records:
        if r["status"] == "not-audited":
            key = reason_key(r["reason"])
            reasons[key] = reasons.get(key, 0) + 1
    audited = [r for r in records if r["status"] != "not-audited"]
    return {
        "audited_calls": len(audited),
        "audited_tests": len({r["test"] for r in audited}),
        "calls_with_findings": sum(1 for r in records if r["findings"]),
        "tests_with_findings": len({r["test"] for r in records if r["findings"]}),
        "findings": len(findings),
        "by_mode": modes,
        "not_audited": sum(reasons.values()),
        "not_audited_reasons": reasons,
    }


def summary_lines(records, mode) -> list:
    """The terminal summary: one row per finding, then totals and not-audited reasons."""
    t = totals(records)
    rows = finding_rows(records)
    lines = []
    if rows:
        header = ("test", "model", "path", "failure mode", "reported", "reference", "rel. error")
        table = [header]
        for r in rows:
            path = r["path"] + _nth(r["call"]) + ("" if r["quantity"] == "loss" else f" {r['quantity']}")
            if not r["scope"].startswith("epoch"):
                path += f" [{r['scope']}]"
            table.append((r["test"], r["model"], path, r["mode"], _fmt(r["reported"]),
                          _fmt(r["reference"]), _relative(r["relative_error"])))
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        for index, row in enumerate(table):
            lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.append("")
    by_mode = ", ".join(f"{m}: {n}" for m, n in sorted(t["by_mode"].items()))
    lines.append(
        f"maskloss ({mode}): {t['audited_calls']} call(s) audited in {t['audited_tests']} test(s); "
        f"{t['findings']} finding(s) in {t['tests_with_findings']} test(s)"
        + (f" ({by_mode})" if by_mode else "")
        + f"; {t['not_audited']} call(s) not audited"
    )
    for reason, count in sorted(t["not_audited_reasons"].items(), key=lambda kv: -kv[1]):
        first = next(r for r in records if r["status"] == "not-audited" and reason_key(r["reason"]) == reason)
        lines.append(f"  not audited ({count}x): {reason} — e.g. {first['test']} ({first['model']}.{first['path']})")
    return lines


def _nth(call) -> str:
    """A later call of the same model and method in a test is told apart by its number."""
    return "" if call == 1 else f" #{call}"


def reason_key(reason) -> str:
    """Reasons grouped for the summary: the text before the first ': ' (figures follow it)."""
    head = reason.split(": ")[0] if ": " in reason else reason
    if head == "audit error" and reason.count(": ") >= 2:
        head = ": ".join(reason.split(": ")[:2])
    return head if len(head) <= 100 else head[:97] + "..."


def write_json(path, records, mode, keras) -> None:
    data = {
        "mode": mode,
        "keras": keras,
        "totals": totals(records),
        "findings": finding_rows(records),
        "not_audited": [
            {k: r[k] for k in ("test", "model", "path", "reason")}
            for r in records if r["status"] == "not-audited"
        ],
        "audits": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
