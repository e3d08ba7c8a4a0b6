#!/usr/bin/env bash
# A release a user can install: build the sdist and the wheel, twine check them, read the wheel's
# metadata, then install the wheel (not the checkout) into a fresh venv and use it as a user
# would, from a folder outside the checkout.
# Usage: .ci/release.sh [TOOLS_VENV]   TOOLS_VENV (default .venv-tools) holds build and twine.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=$(cd "${1:-$ROOT/.venv-tools}" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/maskloss-release.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONPATH  # a user's venv sees the wheel it installed, never this checkout
. "$ROOT/.ci/expect.sh"

say "python -m build: sdist and wheel"
expect 0 "$TOOLS/bin/python" -m build --outdir "$WORK/dist" "$ROOT"
ls -l "$WORK/dist" | sed 's/^/  /'
WHEEL=$(ls "$WORK"/dist/*.whl)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/pytest_maskloss/__init__.py")
case "$WHEEL" in *"-$VERSION-"*) echo "  wheel version $VERSION = pytest_maskloss.__version__";; *) fail "wheel $WHEEL is not version $VERSION";; esac

say "twine check --strict"
expect 0 "$TOOLS/bin/twine" check --strict "$WORK"/dist/*

say "the wheel's metadata"
unzip -p "$WHEEL" '*.dist-info/METADATA' > "$WORK/METADATA.full"
sed '/^$/q' "$WORK/METADATA.full" > "$WORK/METADATA"
grep -E '^(Version|Classifier: Framework|Project-URL|Requires-Dist|Provides-Extra)' "$WORK/METADATA" | sed 's/^/  /'
grep -qx 'Classifier: Framework :: Pytest' "$WORK/METADATA" || fail "no Framework :: Pytest classifier"
grep -q '^Project-URL: ' "$WORK/METADATA" || fail "no project URLs"
grep -q '^Requires-Dist: libcst' "$WORK/METADATA" && ! grep -q '^Requires-Dist: libcst.*extra == "scan"' "$WORK/METADATA" && fail "libcst is a core dependency"
grep -q '^Requires-Dist: libcst.*extra == "scan"' "$WORK/METADATA" || fail "libcst is not in the scan extra"
unzip -l "$WHEEL" > "$WORK/files"  # (not piped into grep -q: pipefail would see unzip's SIGPIPE)
grep -q 'pytest_maskloss/scan/rules/msk001' "$WORK/files" || fail "the wheel lacks the rule modules"
echo "  $(grep -c '\.py$' "$WORK/files") Python modules in the wheel"

say "a fresh venv with the wheel alone (no extras)"
python3 -m venv "$WORK/venv"
expect 0 "$WORK/venv/bin/pip" install -q "$WHEEL"
cd "$WORK"  # outside the checkout: nothing there can be imported by accident
expect 0 "$WORK/venv/bin/python" -c "import sys, pytest_maskloss; print(pytest_maskloss.__file__, pytest_maskloss.__version__); assert 'libcst' not in sys.modules"
contains "^$WORK/venv/lib/python3[.0-9]*/site-packages/pytest_maskloss/__init__.py $VERSION$"
cat > "$WORK/train.py" <<'PY'
import keras

model = keras.Sequential([keras.layers.Embedding(100, 8, mask_zero=True), keras.layers.Dense(5)])
model.compile("adam", "sparse_categorical_crossentropy")
PY
expect 2 "$WORK/venv/bin/maskloss" scan train.py
contains "maskloss scan needs libcst, which pytest-maskloss installs with its scan extra: pip install 'pytest-maskloss\[scan\]'"

say "the same venv with the scan and tensorflow extras"
expect 0 "$WORK/venv/bin/pip" install -q "$WHEEL[scan,tensorflow]"
"$WORK/venv/bin/pip" list 2>/dev/null | grep -iE '^(pytest-maskloss|libcst|keras|tensorflow-cpu|pytest) ' | sed 's/^/  /'
expect 1 "$WORK/venv/bin/maskloss" scan train.py
contains '^train\.py:4:[0-9]+: MSK001 .*warning'
cp -r "$ROOT/examples/lm_suite" "$WORK/lm_suite"
# the example suite is wrong on purpose: its sample_weight model and its Conv1D mask-dropper
expect 1 "$WORK/venv/bin/maskloss" scan lm_suite
contains '^lm_suite/test_language_model\.py:[0-9]+:[0-9]+: MSK005 error'
contains '^lm_suite/test_training\.py:[0-9]+:[0-9]+: MSK006 error: Conv1D'

say "pytest --maskloss on the example suite, with the installed plugin"
expect 1 "$WORK/venv/bin/python" -m pytest --maskloss lm_suite -p no:cacheprovider -q
contains '^1 failed, 3 passed'
contains 'padding-in-denominator'
contains '^maskloss \(warn\): [0-9]+ call\(s\) audited in 4 test\(s\); 4 finding\(s\) in 2 test\(s\)'
grep -q "$ROOT" "$WORK/out" && fail "the run used files from the checkout"
say "release checks passed"
