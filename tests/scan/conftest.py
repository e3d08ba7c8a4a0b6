import json
import textwrap

import pytest

from pytest_maskloss.cli import main

MODELS = '''
import tensorflow as tf
layers = tf.keras.layers


def build_model(vocab=100):
    model = tf.keras.Sequential()
    model.add(layers.Embedding(vocab, 8, mask_zero=True))
    model.add(layers.LSTM(8, return_sequences=True))
    model.add(layers.Dense(vocab))
    return model
'''

TRAIN = '''
import math
from models import build_model

model = build_model()
model.compile("adam", "sparse_categorical_crossentropy")
history = model.fit(x, y)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A two-module project pinned to tf.keras 2.10, as the current folder."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\ndependencies = ['tensorflow==2.10.1']\n")
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def run(capsys):
    def _run(*argv):
        code = main(["scan", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def run_json(run):
    def _run(*argv):
        code, out, err = run("--output-format", "json", *argv)
        return code, json.loads(out), err

    return _run


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path
