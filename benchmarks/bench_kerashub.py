"""``pytest --maskloss`` on KerasHub's own task tests: what the audit finds and what it costs.

Real code we did not write: keras-team/keras-hub, its ``*_basics`` task tests for a causal LM
(GPT-2), a masked LM (BERT) and a seq2seq LM (BART); with ``--every-language-model-task``, those
of every ``*_causal_lm_test.py``, ``*_masked_lm_test.py`` and ``*_seq_2_seq_lm_test.py`` in the
checkout (40 files at the commit below). Each fits the task three ways (preprocessed tensors
with sample weights, a dataset of strings through the preprocessor, a mapped dataset) and once
more uncompiled, which Keras refuses. Measured in one run, alternating: the same selection with
``--maskloss`` and without it (the named alternative: the suite as the user runs it today).
Prints each run's wall time, the ratio, whether every test ended the same way in both (warn mode
must never change an outcome; the script exits 1 if one did), the errors of tests failing in
both, and the audit's summary.

The checkout is not part of this repository. Take it with the search tool's ``fetch`` (or git)
at the commit below and pass its path:

    python benchmarks/bench_kerashub.py /path/to/keras-hub [--repeat 1] [--every-language-model-task] [--backend jax]
"""

import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import time

REPOSITORY = "keras-team/keras-hub"
COMMIT = "71453d08f59edc90d276e999319fc51e61cbf82c"  # 2026-08-21, version 0.32.0.dev0
TESTS = [
    "keras_hub/src/models/gpt2/gpt2_causal_lm_test.py",
    "keras_hub/src/models/bert/bert_masked_lm_test.py",
    "keras_hub/src/models/bart/bart_seq_2_seq_lm_test.py",
]
EVERY_LANGUAGE_MODEL_TASK = ("*_causal_lm_test.py", "*_masked_lm_test.py", "*_seq_2_seq_lm_test.py")
OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)")
ERROR = re.compile(r"^E +(\w+(?:Error|Exception)\b.*)")


def language_model_tests(checkout):
    """Every task test file of a language model in the checkout, relative to it."""
    found = {os.path.relpath(path, checkout) for pattern in EVERY_LANGUAGE_MODEL_TASK
             for path in glob.glob(os.path.join(checkout, "keras_hub", "src", "models", "*", pattern))}
    return sorted(found)


def outcomes(stdout):
    """``{test id: outcome}`` from pytest's ``-rA`` summary (its SKIPPED lines name no test id and are left out)."""
    return dict(reversed(m.groups()) for m in map(OUTCOME.match, stdout.splitlines()) if m)


def run(checkout, tests, backend, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *tests, "-k", "basics", "-q", "-rA", "-p", "no:cacheprovider", *extra],
        cwd=checkout, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):  # 1: some tests failed, compared below; else pytest itself failed
        sys.exit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", help=f"a checkout of {REPOSITORY} (commit {COMMIT[:12]})")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--every-language-model-task", action="store_true",
                        help="every causal, masked and seq2seq LM task test file, not only the three")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow",
                        help="KERAS_BACKEND of both runs")
    args = parser.parse_args()
    tests = language_model_tests(args.checkout) if args.every_language_model_task else TESTS
    plain, audited, summary, changed, errors = [], [], "", {}, collections.Counter()
    for _ in range(args.repeat):
        seconds, plain_out = run(args.checkout, tests, args.backend)
        plain.append(seconds)
        seconds, out = run(args.checkout, tests, args.backend, "--maskloss")
        audited.append(seconds)
        before, after = outcomes(plain_out), outcomes(out)
        changed.update({t: (before.get(t), after.get(t)) for t in before.keys() | after.keys()
                        if before.get(t) != after.get(t)})
        errors = collections.Counter(m.group(1)[:160] for m in map(ERROR.match, plain_out.splitlines()) if m)
        lines = out.splitlines()
        start = next(i for i, l in enumerate(lines) if "maskloss audit" in l)
        summary = "\n".join(lines[start:]).split("\n=", 1)[0]
    print(f"{REPOSITORY}@{COMMIT[:12]}: {len(tests)} task test files, -k basics, Keras on {args.backend}")
    print(f"without --maskloss: best {min(plain):.1f} s   with: best {min(audited):.1f} s   "
          f"ratio {min(audited) / min(plain):.2f}x (best of {args.repeat})")
    counts = collections.Counter(after.values())
    print(f"outcomes with --maskloss: {dict(sorted(counts.items()))}; the same as without: {not changed}")
    for test, (without, with_) in sorted(changed.items()):
        print(f"  CHANGED {test}: {without} without, {with_} with --maskloss")
    for error, count in errors.most_common():
        print(f"  error in the run without --maskloss ({count}): {error}")
    print(summary)
    if changed:
        sys.exit(1)


if __name__ == "__main__":
    main()
