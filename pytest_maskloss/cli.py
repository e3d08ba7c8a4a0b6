"""``maskloss`` command line: ``maskloss scan [PATH ...]``; ``maskloss rule CODE`` prints one
rule's documentation.

Exit status: 0 clean, 1 findings (errors or warnings; notes alone do not fail), 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys


def _jobs(text: str) -> int:
    if text.strip().lower() == "auto":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got {text!r}") from None


def _scan_parser(sub) -> None:
    p = sub.add_parser(
        "scan",
        help="lint Python files and notebooks for Keras code whose reported loss counts padding",
        description="Find the code patterns behind misreported masked losses (never imports the code).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (default: .)")
    p.add_argument("--output-format", choices=["text", "json", "sarif", "github"], default="text")
    p.add_argument("--select", help="comma-separated codes or prefixes (ALL for every rule)")
    p.add_argument("--ignore", help="comma-separated codes or prefixes to skip")
    p.add_argument("--exclude", action="append", default=[], help="glob of paths to skip (repeatable, comma-separated)")
    p.add_argument("--force-exclude", action="store_true", help="apply excludes to paths given explicitly too")
    p.add_argument("--no-respect-gitignore", action="store_true", help="scan files .gitignore lists")
    p.add_argument("--config", help="pyproject.toml to read [tool.maskloss] from (default: nearest)")
    p.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    p.add_argument("--keras-version", help="the Keras version targeted (overrides config and pins)")
    p.add_argument("--statistics", action="store_true", help="count findings per rule")
    p.add_argument("--fix", action="store_true", help="apply fixes (safe ones; add --unsafe-fixes for the rest)")
    p.add_argument("--unsafe-fixes", action="store_true", help="also apply fixes that change what the loss computes")
    p.add_argument("--diff", action="store_true", help="show the fixes as a diff, write nothing")
    p.add_argument("-j", "--jobs", type=_jobs, default=0, metavar="N|auto",
                   help="parallel processes (default auto = 0: one per CPU)")
    p.add_argument("--no-link", action="store_true", help="do not read other modules of the project")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the persistent cache")
    p.add_argument("--cache-dir", help="where the cache lives (default: .maskloss_cache at the project root)")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def _rule_parser(sub) -> None:
    p = sub.add_parser("rule", help="show a scan rule's documentation", description="Print a rule's documentation (Markdown).")
    p.add_argument("code", metavar="CODE", help="a rule code, e.g. MSK001")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="maskloss", description="pytest-maskloss command line")
    sub = parser.add_subparsers(dest="command")
    _scan_parser(sub)
    _rule_parser(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.process_exits = argv is None  # the program itself (console script, python -m), not a call
    from pytest_maskloss.scan.requirements import problem

    missing = problem(f"maskloss {args.command}")
    if missing:  # the scan extra is not installed
        print(f"maskloss: {missing}", file=sys.stderr)
        return 2
    if args.command == "scan":
        from pytest_maskloss.scan.cli import run_scan

        try:
            return run_scan(args)
        except BrokenPipeError:  # e.g. piped into head
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            return 1
        except KeyboardInterrupt:
            return 130
    if args.command == "rule":
        from pytest_maskloss.scan.ruledocs import print_rule

        return print_rule(args.code)
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
