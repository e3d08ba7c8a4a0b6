"""Run ``python -m pytest`` in a subprocess on a suite directory (fresh TensorFlow import
state; the audit patches Keras classes process-wide), with a clean environment."""

import os
import subprocess
import sys
import time

import pytest

STACK_VARIABLES = ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")


def run_pytest(directory, *args, env=None, timeout=900):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PYTEST_", "MINI_")) and k not in STACK_VARIABLES}
    clean.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1", MINI_OUT=str(directory / "out"))
    clean.update(env or {})
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args],
        cwd=directory, env=clean, capture_output=True, text=True, timeout=timeout,
    )
    return pytest.RunResult(proc.returncode, proc.stdout.splitlines(), proc.stderr.splitlines(),
                            time.perf_counter() - start)


def summary_rows(result):
    """The rows of the maskloss summary table: {test: [cells]} (cells split on 2+ spaces)."""
    import re

    lines = result.outlines
    try:
        start = next(i for i, l in enumerate(lines) if "maskloss audit" in l and l.startswith("="))
    except StopIteration:
        return {}
    rows = {}
    body = lines[start + 1:]
    while body and not body[0].strip():  # a stack may leave the terminal mid-line
        body.pop(0)
    for line in body:
        if not line.strip() or line.startswith(("maskloss (", "=")):
            break
        if line.startswith(("test ", "----")):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        rows.setdefault(cells[0], []).append(cells)
    return rows


def totals_line(result):
    return next((l for l in result.outlines if l.startswith("maskloss (")), None)
