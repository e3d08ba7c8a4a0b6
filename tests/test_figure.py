"""The picture's committed numbers (docs/figure.json) and the drift check CI runs on them.

Measuring them again needs each stack's own venv, so that is a CI step
(``docs/figure.py check STACK``); here the committed figures must tell the story they are drawn
for, and the check must be able to fail."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("figure", ROOT / "docs" / "figure.py")
figure = importlib.util.module_from_spec(spec)
spec.loader.exec_module(figure)
DATA = figure.load()


def test_every_stack_is_committed():
    assert set(DATA) == set(figure.STACKS)
    for fig in DATA.values():
        n = len(fig["padding_fraction"])
        assert n >= 5 and all(len(fig[k]) == n for k in ("stock", "pytest_maskloss", "token_mean"))
        assert fig["versions"] and fig["label"]


@pytest.mark.parametrize("name", sorted(figure.STACKS))
def test_the_stock_loss_is_the_token_mean_times_the_real_fraction(name):
    """Σ l·m / (B·T) = token mean · (1 − padding fraction): what the figure shows, and what the
    package's loss fixes (it reports the token mean itself)."""
    fig = DATA[name]
    for p, stock, fixed, mean in zip(fig["padding_fraction"], fig["stock"], fig["pytest_maskloss"], fig["token_mean"]):
        assert math.isclose(stock, mean * (1 - p), rel_tol=1e-5)
        assert math.isclose(fixed, mean, rel_tol=1e-5)
    assert fig["padding_fraction"] == sorted(fig["padding_fraction"]) and fig["padding_fraction"][-1] > 0.8
    assert max(fig["token_mean"]) - min(fig["token_mean"]) < 1e-5  # causal models, padding after the tokens


def test_both_lstm_stacks_hold_the_same_weights():
    a, b = DATA["tf-keras-2.10-mask"], DATA["keras-3-sample-weight"]
    assert a["padding_fraction"] == b["padding_fraction"]
    assert all(math.isclose(x, y, rel_tol=1e-5) for x, y in zip(a["token_mean"], b["token_mean"]))


def test_token_mean_is_the_masked_cross_entropy():
    probs = np.array([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]])
    labels = np.array([[0, 1, 2]])
    real = np.array([[1, 1, 0]])
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert math.isclose(figure.token_mean(np, probs, labels, real, from_logits=False), expected)
    assert math.isclose(figure.token_mean(np, np.log(probs) + 3.0, labels, real, from_logits=True), expected)


def test_the_drift_check_fails_on_a_changed_or_missing_figure():
    fig = DATA["keras-3-sample-weight"]
    assert figure.drift(fig, fig) == []
    moved = dict(fig, stock=[fig["stock"][0] * (1 + 1e-3)] + fig["stock"][1:])
    assert figure.drift(fig, moved) == [f"stock[0]: committed {fig['stock'][0]:.7f}, measured {moved['stock'][0]:.7f}"]
    within = dict(fig, stock=[fig["stock"][0] * (1 + 1e-6)] + fig["stock"][1:])
    assert figure.drift(fig, within) == []
    shorter = dict(fig, token_mean=fig["token_mean"][:-1])
    assert figure.drift(fig, shorter)


def test_the_picture_is_committed_and_shown():
    png = ROOT / "docs" / "figure.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](docs/figure.png)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](figure.png)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
