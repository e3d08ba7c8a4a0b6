"""The scanner on this package's own sources, and on the shapes its masked losses take (a
``Loss`` whose ``__call__`` applies the Keras mask and the sample weights itself): no finding,
and no ``noqa`` needed for it."""

import pathlib
import textwrap

import pytest

from pytest_maskloss.cli import main

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "pytest_maskloss"

# pytest_maskloss/keras.py today: __call__ -> self._terms(...) -> _get_mask(y_pred), one module
ONE_MODULE = '''
import keras

def _get_mask(x):
    return getattr(x, "_keras_mask", None)

class _TokenTerms:
    def _terms(self, y_true, y_pred, sample_weight=None):
        mask = _get_mask(y_pred)
        weights = mask if sample_weight is None else mask * sample_weight
        return self._per_token_fn(y_true, y_pred), weights

class MaskedLoss(_TokenTerms, keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        return keras.ops.sum(values * weights) / keras.ops.sum(weights)
'''

# the package layout being introduced: the terms in a base class of another module, the mask
# read through keras_mask() from pytest_maskloss.compat
TERMS = '''
from pytest_maskloss.compat import keras_mask

class TokenTerms:
    def _terms(self, y_true, y_pred, sample_weight=None):
        mask = keras_mask(y_pred)
        weights = mask if sample_weight is None else mask * sample_weight
        return self._per_token_fn(y_true, y_pred), weights
'''
LOSSES = '''
import keras
from pytest_maskloss.keras.terms import TokenTerms

class MaskedLoss(TokenTerms, keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        values, weights = self._terms(y_true, y_pred, sample_weight)
        return keras.ops.sum(values * weights) / keras.ops.sum(weights)
'''


def _scan(capsys, *argv):
    code = main(["scan", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_package_scans_clean(capsys):
    code, out, err = _scan(capsys, PACKAGE, "--isolated")
    assert code == 0, out + err
    assert out.startswith("All checks passed!"), out


def test_the_package_needs_no_noqa_for_its_losses():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "noqa: MSK" not in text and "maskloss: noqa" not in text, path


@pytest.mark.parametrize("layout", ["one-module", "package"])
def test_masked_loss_shapes_are_not_msk002(tmp_path, capsys, layout):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    if layout == "one-module":
        files = {"pytest_maskloss/keras.py": ONE_MODULE}
    else:
        files = {"pytest_maskloss/keras/__init__.py": "", "pytest_maskloss/keras/terms.py": TERMS,
                 "pytest_maskloss/keras/losses.py": LOSSES}
    files["pytest_maskloss/__init__.py"] = ""
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    code, out, err = _scan(capsys, tmp_path / "pytest_maskloss", "--isolated")
    assert code == 0 and out.startswith("All checks passed!"), out + err
    # the same loss without the mask read is MSK002: the check above is not vacuous
    broken = tmp_path / "pytest_maskloss" / ("keras.py" if layout == "one-module" else "keras/terms.py")
    broken.write_text(broken.read_text().replace("keras_mask(y_pred)", "y_pred").replace("_get_mask(y_pred)", "y_pred"))
    code, out, err = _scan(capsys, tmp_path / "pytest_maskloss", "--isolated")
    assert code == 1 and "MSK002" in out, out + err


def test_super_call_without_sample_weight_says_the_weights_are_dropped(capsys):
    from pytest_maskloss.scan.engine import check_source

    src = textwrap.dedent('''
        import keras
        class L(keras.losses.MeanSquaredError):
            def __call__(self, y_true, y_pred, sample_weight=None):
                return super().__call__(y_true, y_pred)
    ''')
    (finding,) = check_source(src)
    assert finding.code == "MSK002" and "sample_weight" in finding.message and "dropped" in finding.message
    assert finding.fix is None
