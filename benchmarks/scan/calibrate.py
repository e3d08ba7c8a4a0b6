"""Recall and precision of ``maskloss scan`` on real repositories (``calibration.toml``).

Fetch-free: it scans checkouts you already have, one folder per repository, named
``owner+name`` under ``--checkouts DIR`` (or given one by one with ``--checkout owner/name=PATH``),
at the commits the file records (``git clone https://github.com/OWNER/NAME && git -C NAME
checkout COMMIT``). Each repository's ``paths`` are scanned with its ``keras-version`` through
the real CLI (JSON output), and every finding is compared with the labels:

- recall: labelled findings reported (same path, cell, line and code) / labelled findings;
- precision: reported findings that are labelled / reported findings (MSK900 parse errors are
  counted apart: they say a file could not be read, not that its code is wrong);
- the misses and the unlabelled findings are listed, with each label's reason.

    python benchmarks/scan/calibrate.py --checkouts /tmp/checkouts
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the package of this checkout

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from pytest_maskloss.cli import main as maskloss  # noqa: E402


def where(finding: dict) -> str:
    cell = finding.get("cell")
    return f"{finding['path']}:cell {cell}:{finding['line']}" if cell else f"{finding['path']}:{finding['line']}"


def scan(root: Path, repo: dict) -> tuple[list, float]:
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            version = ["--keras-version", repo["keras-version"]] if repo.get("keras-version") else []
            maskloss(["scan", "--isolated", "--exit-zero", "--output-format", "json", *version, *repo["paths"]])
    finally:
        os.chdir(cwd)
    return json.loads(out.getvalue() or "[]"), time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkouts", type=Path, help="folder holding one owner+name folder per repository")
    ap.add_argument("--checkout", action="append", default=[], help="owner/name=PATH (repeatable)")
    ap.add_argument("--labels", type=Path, default=HERE / "calibration.toml")
    args = ap.parse_args(argv)
    given = dict(item.split("=", 1) for item in args.checkout)
    repos = tomllib.loads(args.labels.read_text(encoding="utf-8"))["repo"]

    expected_total = found_total = reported_total = parse_errors = 0
    misses, extras = [], []
    for repo in repos:
        name = repo["name"]
        root = Path(given[name]) if name in given else (args.checkouts / name.replace("/", "+") if args.checkouts else None)
        if root is None or not root.is_dir():
            print(f"{name}: no checkout (expected at {root}); skipped")
            continue
        findings, seconds = scan(root, repo)
        parse = [f for f in findings if f["code"] == "MSK900"]
        real = [f for f in findings if f["code"] != "MSK900"]
        labels = {(e["at"], e["code"]): e["why"] for e in repo.get("expect", [])}
        got = {(where(f), f["code"]): f for f in real}
        hit = [k for k in labels if k in got]
        expected_total += len(labels)
        found_total += len(hit)
        reported_total += len(real)
        parse_errors += len(parse)
        misses += [(name, at, code, labels[(at, code)]) for at, code in labels if (at, code) not in got]
        extras += [(name, at, code, got[(at, code)]["severity"], got[(at, code)]["message"]) for at, code in got if (at, code) not in labels]
        print(f"{name}@{repo['commit'][:7]} (Keras {repo.get('keras-version') or 'unknown'}): {len(hit)}/{len(labels)} labelled found, "
              f"{len(real)} reported, {len(parse)} MSK900, {seconds:.2f} s")
    recall = found_total / expected_total if expected_total else float("nan")
    precision = found_total / reported_total if reported_total else float("nan")
    print(f"\nrecall {found_total}/{expected_total} = {recall:.2f}; precision {found_total}/{reported_total} = {precision:.2f}; "
          f"MSK900 (counted apart): {parse_errors}")
    if misses:
        print("\nmissed:")
        for name, at, code, why in misses:
            print(f"  {name} {at} {code}: {why}")
    if extras:
        print("\nreported but not labelled:")
        for name, at, code, severity, message in extras:
            print(f"  {name} {at} {code} {severity}: {message[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
