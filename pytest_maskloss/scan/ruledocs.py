"""The rule reference, rendered from the rules' docstrings: one page per rule and an index page
with the table for the documentation site (``docs/rules/``), and the text ``maskloss rule CODE``
prints.

    python -m pytest_maskloss.scan.ruledocs --write docs/rules   # rewrite the pages
    python -m pytest_maskloss.scan.ruledocs --check docs/rules   # exit 1 when they have drifted
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

from pytest_maskloss.scan.rules import ALL_RULES, CODES

GENERATED = ("<!-- Generated from the rules' docstrings by python -m pytest_maskloss.scan.ruledocs "
             "--write docs/rules: edit the docstring, not this file. -->")
# Links in docstrings point at sections of the scanner page (docs/scanner.md).
SCANNER_PAGE = "../scanner.md"
INDEX_INTRO = """\
Severity is part of every finding (`error`, `warning`, `note`; also the SARIF `level`). Errors and
warnings make the run fail (exit 1); notes are shown but do not fail it. "Keras version" below is
the version the project targets (see [Keras version](../configuration.md#keras-version)).
"""
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


def _lead(rule) -> str:
    """The docstring's lead sentence on one line, without its full stop."""
    return " ".join(sections(rule).get("", "").split()).rstrip(".")


def _docs_links(text: str) -> str:
    """Docstring links to sections (``[Speed](#speed)``) made to point at the scanner page."""
    return re.sub(r"\]\(#([\w-]+)\)", lambda m: f"]({SCANNER_PAGE}#{m.group(1)})", text)


def index_page() -> str:
    rows = ["| code | name | what it catches |", "|---|---|---|"]
    rows += [f"| [{r.code}]({r.code}.md) | `{r.name}` | {_lead(r)} |" for r in ALL_RULES]
    return "\n".join([GENERATED, "", "# Rules", "", INDEX_INTRO] + rows) + "\n"


def rule_page(rule) -> str:
    module = type(rule).__module__
    source = f"`{module}` (`{type(rule).__name__}`)"
    return "\n".join([GENERATED, "", _docs_links(rule_markdown(rule, level=1)),
                      f"*Source: the docstring of {source}.*", ""])


def pages() -> dict[str, str]:
    """Every file of ``docs/rules/``: name → text."""
    out = {"index.md": index_page()}
    out.update({f"{r.code}.md": rule_page(r) for r in ALL_RULES})
    return out


def drift(folder: Path) -> list[str]:
    """The files of ``folder`` that differ from what the docstrings give, or are missing, or are
    left over from a rule that no longer exists."""
    wanted = pages()
    problems = [name for name, text in wanted.items()
                if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text]
    problems += sorted(p.name for p in folder.glob("*.md") if p.name not in wanted) if folder.is_dir() else []
    return problems


def write(folder: Path) -> list[str]:
    """Rewrite ``folder`` from the docstrings; the names of the files changed or removed."""
    changed = drift(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = pages()
    for name in changed:
        if name in wanted:
            (folder / name).write_text(wanted[name], encoding="utf-8")
        else:
            (folder / name).unlink()
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pytest_maskloss.scan.ruledocs", description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", help="rewrite the rule pages in this folder (docs/rules)")
    group.add_argument("--check", metavar="DIR", help="exit 1 when the rule pages there are out of date")
    args = ap.parse_args(argv)
    folder = Path(args.write or args.check)
    if args.check:
        stale = drift(folder)
        if stale:
            print(f"{folder}: {', '.join(stale)} differ from the rules' docstrings; run "
                  f"python -m pytest_maskloss.scan.ruledocs --write {folder}", file=sys.stderr)
            return 1
        return 0
    for name in write(folder):
        print(f"{folder / name}")
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
