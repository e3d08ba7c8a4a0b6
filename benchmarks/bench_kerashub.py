"""``pytest --maskloss`` on KerasHub's own task tests: what the audit finds and what it costs.

Real code we did not write: keras-team/keras-hub, its ``*_basics`` task tests for a causal LM
(GPT-2), a masked LM (BERT) and a seq2seq LM (BART). Each fits the task three ways (preprocessed
tensors with sample weights, a dataset of strings through the preprocessor, a mapped dataset)
and once more uncompiled, which Keras refuses. Measured in one run, alternating: the same
selection with ``--maskloss`` and without it (the named alternative: the suite as the user runs
it today). Prints each run's wall time, the ratio and the audit's summary.

The checkout is not part of this repository. Take it with the search tool's ``fetch`` (or git)
at the commit below and pass its path:

    python benchmarks/bench_kerashub.py /path/to/keras-hub [--repeat 1]
"""

import argparse
import os
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


def run(checkout, *extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *TESTS, "-k", "basics", "-q", "-p", "no:cacheprovider", *extra],
        cwd=checkout, env=env, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkout", help=f"a checkout of {REPOSITORY} (commit {COMMIT[:12]})")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    plain, audited, summary = [], [], ""
    for _ in range(args.repeat):
        plain.append(run(args.checkout)[0])
        seconds, out = run(args.checkout, "--maskloss")
        audited.append(seconds)
        lines = out.splitlines()
        start = next(i for i, l in enumerate(lines) if "maskloss audit" in l)
        summary = "\n".join(lines[start:]).split("\n=", 1)[0]
    print(f"{REPOSITORY}@{COMMIT[:12]}: {len(TESTS)} task test files, -k basics")
    print(f"without --maskloss: best {min(plain):.1f} s   with: best {min(audited):.1f} s   "
          f"ratio {min(audited) / min(plain):.2f}x (best of {args.repeat})")
    print(summary)


if __name__ == "__main__":
    main()
