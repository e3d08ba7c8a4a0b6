"""The rule reference, rendered from the rules' docstrings: the README table and one section
per rule (between ``<!-- rules:start -->`` and ``<!-- rules:end -->``), and the text
``maskloss rule CODE`` prints.

    python -m pytest_maskloss.scan.ruledocs --write README.md   # rewrite the README section
    python -m pytest_maskloss.scan.ruledocs --check README.md   # exit 1 when it has drifted
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys

from pytest_maskloss.scan.rules import ALL_RULES, CODES

START, END = "<!-- rules:start -->", "<!-- rules:end -->"
SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead", "Fix safety")


def docstring(rule) -> str:
    return inspect.cleandoc(type(rule).__doc__ or "")


def sections(rule) -> dict[str, str]:
    """The docstring's lead sentence (key ``""``) and its ``## Heading`` sections, in order."""
    out: dict[str, str] = {}
    key = ""
    lines: list[str] = []
    for line in docstring(rule).splitlines():
        m = re.match(r"^## (.+)$", line)
        if m:
            out[key] = "\n".join(lines).strip()
            key, lines = m.group(1).strip(), []
        else:
            lines.append(line)
    out[key] = "\n".join(lines).strip()
    return out


def rule_markdown(rule, level: int = 4) -> str:
    """One rule: a heading at ``level``, the lead sentence, the sections one level below."""
    parts = sections(rule)
    out = [f"{'#' * level} {rule.code} `{rule.name}`", "", parts.get("", "")]
    for title, body in parts.items():
        if title:
            out += ["", f"{'#' * (level + 1)} {title}", "", body]
    return "\n".join(out).strip() + "\n"


def table() -> str:
    rows = ["| code | name | what it catches |", "|---|---|---|"]
    rows += [f"| [{r.code}](#{_anchor(r)}) | `{r.name}` | {_lead(r)} |" for r in ALL_RULES]
    return "\n".join(rows) + "\n"


def _lead(rule) -> str:
    """The docstring's lead sentence on one line, without its full stop."""
    return " ".join(sections(rule).get("", "").split()).rstrip(".")


def _anchor(rule) -> str:
    """GitHub's anchor for the rule's heading ``MSK001 `stock-loss-on-masked-output` ``."""
    return f"{rule.code} {rule.name}".lower().replace(" ", "-")


def reference() -> str:
    """What goes between the markers."""
    return "\n".join([table()] + [rule_markdown(r) for r in ALL_RULES])


def render(text: str) -> str:
    """``text`` (the README) with the part between the markers regenerated."""
    start, end = text.find(START), text.find(END)
    if start == -1 or end < start:
        raise ValueError(f"no {START} ... {END} markers")
    return text[: start + len(START)] + "\n\n" + reference() + "\n" + text[end:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_maskloss.scan.ruledocs", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="README", help="rewrite the rule reference in this file")
    group.add_argument("--check", metavar="README", help="exit 1 when the rule reference there is out of date")
    args = ap.parse_args(argv)
    path = args.write or args.check
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    try:
        new = render(old)
    except ValueError as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"{path}: the rule reference differs from the rules' docstrings; run "
                  f"python -m pytest_maskloss.scan.ruledocs --write {path}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(new)
    return 0


def print_rule(code: str) -> int:
    """``maskloss rule CODE``: the rule's documentation as Markdown (exit 2 for unknown codes)."""
    rule = CODES.get(code.strip().upper())
    if rule is None:
        print(f"maskloss: unknown rule code {code!r} (known: {', '.join(sorted(CODES))})", file=sys.stderr)
        return 2
    print(rule_markdown(rule, level=1), end="")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
