"""Output formats: text, json, sarif (2.1.0), github (workflow annotations)."""

from __future__ import annotations

import json
from collections import Counter

from pytest_maskloss.scan.rules import ALL_RULES, CODES

SARIF_LEVEL = {"error": "error", "warning": "warning", "note": "note"}
# the documentation site (mkdocs.yml site_url); each rule has its page under rules/CODE/
HELP_URI = "https://pytest-maskloss.github.io/pytest-maskloss/"


def location(f) -> str:
    """``path:line:col`` or, in a notebook, ``path:cell N:line:col`` (1-based)."""
    if f.cell is not None:
        return f"{f.path}:cell {f.cell}:{f.line}:{f.col}"
    return f"{f.path}:{f.line}:{f.col}"


def text(findings, show_fixes=False) -> str:
    lines = []
    for f in findings:
        fixable = ""
        if show_fixes and f.fix is not None:
            fixable = " [*]" if f.fix.safe else " [unsafe fix]"
        lines.append(f"{location(f)}: {f.code}{fixable} {f.severity}: {f.message}")
    return "\n".join(lines)


def as_dict(f) -> dict:
    return {
        "path": f.path,
        "line": f.line,
        "col": f.col,
        "end_line": f.end_line,
        "end_col": f.end_col,
        "cell": f.cell,
        "code": f.code,
        "rule": f.rule,
        "severity": f.severity,
        "message": f.message,
        "related": list(f.related),
        "fix": None
        if f.fix is None
        else {
            "description": f.fix.description,
            "safe": f.fix.safe,
            "edits": [
                {"start": e.start, "end": e.end, "replacement": e.replacement, "cell": e.cell}
                for e in f.fix.edits
            ],
        },
    }


def to_json(findings) -> str:
    return json.dumps([as_dict(f) for f in findings], indent=2)


def sarif(findings, version: str) -> str:
    rules = []
    index = {}
    for r in ALL_RULES:
        index[r.code] = len(rules)
        level = "error"
        rules.append(
            {
                "id": r.code,
                "name": "".join(p.capitalize() for p in r.name.split("-")),
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": f"{r.code} {r.name}: {r.summary}"},
                "helpUri": f"{HELP_URI}rules/{r.code}/",
                "defaultConfiguration": {"level": level},
                "properties": {"tags": ["keras", "masking"]},
            }
        )
    results = []
    for f in findings:
        region = {"startLine": f.line, "startColumn": f.col}
        if f.end_line:
            region["endLine"] = f.end_line
        if f.end_col:
            region["endColumn"] = f.end_col
        message = f.message if f.cell is None else f"(notebook cell {f.cell}, line {f.line}) {f.message}"
        if f.cell is not None:
            region = {"startLine": 1, "startColumn": 1}
        results.append(
            {
                "ruleId": f.code,
                "ruleIndex": index.get(f.code, 0),
                "level": SARIF_LEVEL.get(f.severity, "warning"),
                "message": {"text": message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": f.path.replace("\\", "/"), "uriBaseId": "%SRCROOT%"},
                            "region": region,
                        }
                    }
                ],
            }
        )
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "maskloss",
                        "informationUri": HELP_URI,
                        "version": version,
                        "semanticVersion": version.split(".dev")[0],
                        "rules": rules,
                    }
                },
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }
    return json.dumps(doc, indent=2)


def _esc_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _esc_prop(s: str) -> str:
    return _esc_data(s).replace(":", "%3A").replace(",", "%2C")


def github(findings) -> str:
    out = []
    for f in findings:
        kind = {"error": "error", "warning": "warning", "note": "notice"}.get(f.severity, "warning")
        props = [f"file={_esc_prop(f.path)}", f"line={f.line}", f"col={f.col}"]
        if f.end_line:
            props.append(f"endLine={f.end_line}")
        if f.end_col and f.end_line == f.line:
            props.append(f"endColumn={f.end_col}")
        title = f"{f.code} {f.rule or ''}".strip()
        props.append(f"title={_esc_prop(title)}")
        where = f"cell {f.cell}: " if f.cell is not None else ""
        out.append(f"::{kind} {','.join(props)}::{_esc_data(where + f.code + ' ' + f.message)}")
    return "\n".join(out)


def statistics(findings) -> str:
    counts = Counter(f.code for f in findings)
    lines = []
    for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        rule = CODES.get(code)
        fixable = sum(1 for f in findings if f.code == code and f.fix is not None)
        mark = f" ({fixable} fixable)" if fixable else ""
        lines.append(f"{n:5d}\t{code}\t{rule.name if rule else ''}{mark}")
    return "\n".join(lines)


def summary(findings, files: int, parsed: int, cached: int = 0) -> str:
    sev = Counter(f.severity for f in findings)
    if cached:
        parsed = f"{parsed} parsed ({cached} of them in an earlier run: findings from the cache)"
    else:
        parsed = f"{parsed} parsed"
    if not findings:
        return f"All checks passed! ({files} file{'s' if files != 1 else ''} scanned, {parsed})"
    parts = [f"{sev[k]} {k}{'s' if sev[k] != 1 else ''}" for k in ("error", "warning", "note") if sev[k]]
    n = len(findings)
    fixable = sum(1 for f in findings if f.fix is not None)
    fix_note = ""
    if fixable:
        safe = sum(1 for f in findings if f.fix is not None and f.fix.safe)
        fix_note = f"; {fixable} with a fix ({safe} safe: --fix, {fixable - safe} unsafe: --fix --unsafe-fixes)"
    return (
        f"Found {n} finding{'s' if n != 1 else ''} ({', '.join(parts)}) in "
        f"{len({f.path for f in findings})} file(s); {files} file(s) scanned, {parsed}{fix_note}"
    )
