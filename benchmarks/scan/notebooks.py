"""MSK900 on real notebooks: the scanner of this checkout against another one (e.g. /work/main
before the IPython reader), and every code cell parsed whether or not the prefilter would.

    python benchmarks/scan/notebooks.py DIR [DIR ...] [--before /path/to/other/checkout]

Notebooks measured (fetched, never committed; checkouts of these commits):

    fchollet/deep-learning-with-python-notebooks  dea84a4e12cc3bb3cb61ce952a0168bca113d315
        (55 notebooks; first_edition/5.4-visualizing-what-convnets-learn.ipynb is absent from
        the stored snapshot)
    ageron/handson-ml3                            e3f3f9e66d58cfa1d068a498433063a1d3fba9ef
    tensorflow/text (docs/ tutorials and guides)  17c38bf014810b80abbb7c13ff1c2ac3cd9f710f
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent


def msk900(checkout: Path, folder: str) -> tuple[int, Counter]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_maskloss", "scan", os.path.abspath(folder), "--isolated", "--exit-zero", "--output-format", "json"],
        capture_output=True, text=True, env=env, cwd="/",  # `-m` puts the cwd first on sys.path
    )
    findings = json.loads(proc.stdout or "[]")
    errors = [f for f in findings if f["code"] == "MSK900"]
    return len(errors), Counter(f.get("severity", "error") for f in errors)


def cells_that_do_not_parse(folder: str):
    sys.path.insert(0, str(CHECKOUT))
    from pytest_maskloss.scan.engine import safe_parse
    from pytest_maskloss.scan.source import SourceError, read_units

    total, bad = 0, []
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.ipynb"), recursive=True)):
        try:
            units = read_units(path)
        except SourceError:
            continue
        for unit in units:
            total += 1
            _, error = safe_parse(unit.text)
            if error is not None:
                bad.append((os.path.relpath(path, folder), unit.cell, error))
    return total, bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--before", help="another checkout of pytest-maskloss to compare with")
    args = ap.parse_args()
    for folder in args.folders:
        n = len(glob.glob(os.path.join(folder, "**", "*.ipynb"), recursive=True))
        after, sev = msk900(CHECKOUT, folder)
        line = f"{os.path.basename(folder.rstrip('/'))}: {n} notebooks; MSK900 now {after} {dict(sev)}"
        if args.before:
            before, bsev = msk900(Path(args.before), folder)
            line += f", before {before} {dict(bsev)}"
        total, bad = cells_that_do_not_parse(folder)
        print(line + f"; all {total} code cells parsed (prefilter bypassed): {len(bad)} invalid")
        for path, cell, (lineno, col, msg) in bad:
            print(f"    {path}:cell {cell}:{lineno}:{col}: {msg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
