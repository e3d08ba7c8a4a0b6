"""Fuzz tests for ``maskloss scan``: whatever is on disk, the command ends with exit status 0
(clean), 1 (findings) or 2 (usage/configuration error), prints no traceback, explains every
error, and keeps its machine-readable output parseable.

The command is a black box: ``pytest_maskloss.cli.main(argv)`` in this process for the bulk of
the cases (fast), a subprocess where a crash could take the test process down (segfaults in the
parser, hangs on FIFOs, undecodable file names, ``-j 2``).

Unmarked: a quick smoke subset (fixed cases plus a few dozen derandomised Hypothesis examples
per strategy). ``-m slow``: many more Hypothesis examples, deep nesting, multi-MB files,
symlink loops, FIFOs and parallel runs in subprocesses.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_maskloss.cli import main as cli_main  # noqa: E402

FORMATS = ("text", "json", "sarif", "github")
DESIGN_CODE = "MSK001"  # pytest_maskloss/scan/rules/msk001_stock_loss_on_masked_output.py
SUBPROCESS_TIMEOUT = 240

# ----------------------------------------------------------------------------------- running


@dataclass
class Run:
    argv: list
    code: object  # int, or "crash"/"timeout"/negative signal numbers
    out: str
    err: str

    def describe(self) -> str:
        return f"argv={self.argv!r}\nexit={self.code!r}\n--- stdout ---\n{self.out[-3000:]}\n--- stderr ---\n{self.err[-3000:]}"


def run_inprocess(*argv) -> Run:
    """``main(["scan", *argv])`` with stdout/stderr captured; an escaping exception is a crash."""
    argv = ["scan", *map(str, argv)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main(argv)
        except SystemExit as exc:  # tolerated: sys.exit(n) is an exit status too
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        except Exception:
            err.write(traceback.format_exc())
            code = "crash"
    return Run(argv, code, out.getvalue(), err.getvalue())


def run_subprocess(*argv, cwd=None, timeout=SUBPROCESS_TIMEOUT) -> Run:
    cmd = [sys.executable, "-m", "pytest_maskloss", "scan", *map(os.fsdecode, argv)]
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return Run(cmd[3:], "timeout", _dec(exc.stdout), _dec(exc.stderr))
    return Run(cmd[3:], proc.returncode, _dec(proc.stdout), _dec(proc.stderr))


def _dec(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data


def check(run: Run, fmt: str = "text") -> list | None:
    """The contract every run must keep. Returns the JSON findings when ``fmt == "json"``."""
    blob = run.out + run.err
    assert "Traceback (most recent call last)" not in blob, run.describe()
    assert "Fatal Python error" not in blob, run.describe()
    assert run.code in (0, 1, 2), run.describe()
    if run.code == 2:
        assert run.err.strip() or run.out.strip(), "exit 2 without a message\n" + run.describe()
        return None
    if fmt == "json":
        data = json.loads(run.out)
        assert isinstance(data, list), run.describe()
        for item in data:
            assert {"path", "line", "col", "code", "message"} <= set(item), item
            assert isinstance(item["line"], int) and item["line"] >= 1, item
            assert isinstance(item["col"], int) and item["col"] >= 1, item
            assert item["message"], item
        if run.code == 1:
            assert data, "exit 1 without findings\n" + run.describe()
        return data
    if fmt == "sarif":
        doc = json.loads(run.out)
        assert isinstance(doc, dict) and isinstance(doc.get("runs"), list), run.describe()
    if fmt == "github":
        for line in run.out.splitlines():
            if line.strip():
                assert line.startswith("::"), run.describe()
    if run.code == 1:
        # with --diff, stdout is kept for the patch itself and the summary goes to stderr
        assert (run.out + run.err).strip(), "exit 1 without output\n" + run.describe()
    return None


def check_error_reported(run: Run, name: str) -> None:
    """A file that cannot be scanned: exit 1 with a finding on it, or 2 with a message naming it."""
    data = check(run, "json")
    assert run.code in (1, 2), f"{name}: a broken file passed silently\n" + run.describe()
    if run.code == 1 and data is not None:
        mine = [d for d in data if os.path.basename(d["path"]) == name]
        assert mine, run.describe()
        assert all(d["message"].strip() for d in mine)
    else:
        assert name in run.err or name in run.out, run.describe()


def scan_one(tmp: Path, name: str, data: bytes, fmt: str = "json", *extra) -> Run:
    path = tmp / name
    path.write_bytes(data)
    run = run_inprocess(path, "--output-format", fmt, *extra)
    return run


# ----------------------------------------------------------------------------------- material

MASKED_SEQUENTIAL = """\
import math
import tensorflow as tf

model = tf.keras.Sequential([
    tf.keras.layers.Embedding(1000, 16, mask_zero=True),
    tf.keras.layers.LSTM(32, return_sequences=True),
    tf.keras.layers.Dense(1000),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
history = model.fit(x, y, epochs=3)
print(math.exp(history.history["loss"][-1]))
"""

MASKED_FUNCTIONAL = """\
from tensorflow import keras
from tensorflow.keras import layers

inputs = keras.Input(shape=(None,), dtype="int32")
x = layers.Embedding(5000, 64, mask_zero=True)(inputs)
x = layers.Bidirectional(layers.GRU(64, return_sequences=True))(x)
outputs = layers.TimeDistributed(layers.Dense(5000))(x)
model = keras.Model(inputs, outputs)
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
val = model.evaluate(xv, yv)
"""

SUBCLASSED_CUSTOM_LOSS = """\
import keras
from keras import ops


class TokenLoss(keras.losses.Loss):
    def __call__(self, y_true, y_pred, sample_weight=None):
        return ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))


class LM(keras.Model):
    def __init__(self):
        super().__init__()
        self.emb = keras.layers.Embedding(100, 8, mask_zero=True)
        self.rnn = keras.layers.LSTM(8, return_sequences=True)
        self.out = keras.layers.Dense(100)

    def call(self, x):
        return self.out(self.rnn(self.emb(x)))


def masked_loss(y_true, y_pred):
    mask = ops.cast(y_true != 0, "float32")
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return ops.sum(loss * mask) / ops.sum(mask)


model = LM()
model.compile(optimizer="adam", loss=TokenLoss())
model.fit(x, y, sample_weight=w)
"""

MASKING_ALIAS = """\
import numpy as np
import tensorflow as tf
layers = tf.keras.layers
from keras.layers import *

m = tf.keras.Sequential()
m.add(layers.Masking(mask_value=0.0, input_shape=(None, 8)))
m.add(layers.SimpleRNN(4, return_sequences=True))
m.add(Dense(3, activation="softmax"))
m.compile(loss={"out": "categorical_crossentropy", "aux": None}, optimizer="sgd")
ppl = np.exp(m.evaluate(x, y))
"""

PLAIN = """\
import re
import torch
from torch import nn

PATTERN = re.compile(r"loss=(\\d+)")


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4, padding_idx=0)

    def forward(self, x):
        return self.embedding(x).mean()
"""

SEEDS = [MASKED_SEQUENTIAL, MASKED_FUNCTIONAL, SUBCLASSED_CUSTOM_LOSS, MASKING_ALIAS, PLAIN]

SNIPPETS = [
    b"mask_zero=True", b"mask_zero=False", b"Embedding(", b"Masking(", b".compile(", b"compile",
    b'loss="sparse_categorical_crossentropy"', b"'mse'", b"return_sequences=True", b"LSTM(8)",
    b"history.history['loss']", b"math.exp(", b"np.exp(", b"sample_weight=", b"__call__",
    b"y_pred", b"keras.losses.", b"tf.keras.layers.", b"from keras.layers import *\n",
    b"import tensorflow as tf\n", b"class M(tf.keras.Model):\n", b"def call(self, x):\n",
    b"model", b"x", b"(", b")", b"[", b"]", b"{", b"}", b":", b",", b".", b"=", b"*", b"**",
    b"@", b"\\", b"\\\n", b"\n", b"\n    ", b"\n        ", b"\t", b"\r", b"\r\n", b"\x0c",
    b" ", b"#", b"'", b'"', b'"""', b"'''", b"f'{", b"}'", b'f"{x["a"]}"', b"lambda ",
    b"async ", b"await ", b"yield ", b"return ", b"del ", b"global x\n", b"nonlocal x\n",
    b"match x:\n    case [a, *_]:\n        pass\n", b"type X = int\n", b"def f[T](x: T): ...\n",
    b"try:\n    pass\nexcept* ValueError:\n    pass\n", b"(y := 1)",
    b"# -*- coding: latin-1 -*-\n", b"# coding: utf-16\n", b"# vim: set fileencoding=klingon :\n",
    b"# noqa", b"# noqa: MSK001", b"# maskloss: noqa\n", b"\x00", b"\xff", b"\xfe\xff", b"\xef\xbb\xbf",
    b"\xe9", b"\xc3\xa9", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", "\u2028".encode(),
    "ééé".encode("latin-1"),
]


def mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op in ops:
        kind, pos = op[0], op[1]
        at = pos % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= op[2]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = op[2]
        elif kind == "delete":
            del buf[at:at + op[2]]
        elif kind == "dup":
            buf[at:at] = buf[at:at + op[2]]
        elif kind == "raw":
            buf[at:at] = op[2]
    return bytes(buf)


positions = st.integers(min_value=0, max_value=1 << 20)
mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.sampled_from(SNIPPETS)),
    st.tuples(st.just("delete"), positions, st.integers(1, 60)),
    st.tuples(st.just("dup"), positions, st.integers(1, 300)),
    st.tuples(st.just("raw"), positions, st.binary(min_size=1, max_size=16)),
)
mutated_sources = st.builds(
    mutate, st.sampled_from([s.encode() for s in SEEDS]), st.lists(mutation, min_size=1, max_size=8)
)

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.sampled_from(["code", "markdown", "raw", "python", "Python", "source", ""]),
)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
code_lines = st.lists(
    st.sampled_from(
        MASKED_SEQUENTIAL.splitlines(keepends=True) + MASKED_FUNCTIONAL.splitlines(keepends=True)
        + ["%matplotlib inline\n", "!pip install keras\n", "%%time\n", "x = !ls\n", "model?\n",
           "model.fit??\n", "%load_ext autoreload\n", "  %time model.fit(x, y)\n", "display(df)\n", "\\\n"]
    ),
    max_size=14,
)
cell_source = st.one_of(
    code_lines, code_lines.map("".join), st.sampled_from(SEEDS), st.lists(json_value, max_size=4), json_value,
)
cell = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {"cell_type": st.one_of(st.sampled_from(["code", "markdown", "raw", "heading", "Code"]), json_value)},
        optional={"source": cell_source, "input": cell_source, "outputs": json_value,
                  "metadata": json_value, "execution_count": json_value, "id": json_value},
    ),
)
nb_metadata = st.one_of(
    json_value,
    st.fixed_dictionaries(
        {}, optional={"kernelspec": st.one_of(json_value, st.fixed_dictionaries({"language": st.one_of(st.sampled_from(["python", "R", "Python", "julia"]), json_value)})),
                      "language_info": st.one_of(json_value, st.fixed_dictionaries({"name": st.sampled_from(["python", "R"])}))},
    ),
)
notebook_v4 = st.fixed_dictionaries(
    {}, optional={"cells": st.one_of(st.lists(cell, max_size=6), json_value), "metadata": nb_metadata,
                  "nbformat": st.one_of(st.sampled_from([3, 4, 5]), json_value), "nbformat_minor": json_value},
)
notebook_v3 = st.fixed_dictionaries(
    {"nbformat": st.just(3), "nbformat_minor": st.just(0),
     "worksheets": st.lists(st.fixed_dictionaries({"cells": st.lists(cell, max_size=4)}), max_size=2)},
    optional={"metadata": nb_metadata},
)
notebook_doc = st.one_of(notebook_v4, notebook_v3, json_value)


@st.composite
def notebook_bytes(draw) -> bytes:
    doc = draw(notebook_doc)
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 1, 2])), ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:
        data = mutate(data, draw(st.lists(mutation, min_size=1, max_size=4)))
    return data


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return '""'
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


config_value = st.one_of(
    json_value,
    st.sampled_from(["MSK001", "MSK9", "ALL", "msk00", "E501", "2.10", "3", "tf-keras", "3.7.0", "banana", "*.py", "[", "**/"]),
    st.lists(st.sampled_from(["MSK001", "MSK002", "ALL", "X1", "", "*.py", "[!"]), max_size=3),
)
maskloss_table = st.dictionaries(
    st.sampled_from(["select", "extend-select", "ignore", "extend-ignore", "per-file-ignores", "exclude",
                     "extend-exclude", "force-exclude", "respect-gitignore", "keras-version", "bogus-key"]),
    config_value, max_size=4,
)


@st.composite
def pyproject_text(draw) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append("[tool.maskloss]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in draw(maskloss_table).items()]
    if draw(st.booleans()):
        lines.append("[project]")
        lines.append(f"dependencies = {_toml_value(draw(st.one_of(json_value, st.lists(st.sampled_from(['tensorflow==2.10.1', 'keras>=3', 'tf-keras', 'tensorflow==', 'keras<2,>3', 'numpy']), max_size=3))))}")
    if draw(st.booleans()):
        lines.append("[tool.poetry]")
        lines.append(f"dependencies = {_toml_value(draw(st.one_of(json_value, st.dictionaries(st.sampled_from(['tensorflow', 'keras', 'python']), json_value, max_size=2))))}")
    text = "\n".join(lines) + "\n"
    if draw(st.integers(0, 5)) == 0:
        text = mutate(text.encode(), draw(st.lists(mutation, max_size=3))).decode("utf-8", "replace")
    return text


SMOKE = settings(
    max_examples=20, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
HEAVY = settings(
    # derandomised like SMOKE: CI must see the same examples on every run, not new ones
    max_examples=400, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ----------------------------------------------------------------------------------- Hypothesis


def _mutated_case(data: bytes, fmt: str, suffix: str = ".py") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = scan_one(Path(tmp), "mutant" + suffix, data, fmt)
        check(run, fmt)


@SMOKE
@given(data=mutated_sources, fmt=st.sampled_from(FORMATS))
def test_mutated_keras_sources_smoke(data, fmt):
    _mutated_case(data, fmt)


@pytest.mark.slow
@HEAVY
@given(data=mutated_sources, fmt=st.sampled_from(FORMATS), suffix=st.sampled_from([".py", ".py", ".pyi"]))
def test_mutated_keras_sources(data, fmt, suffix):
    _mutated_case(data, fmt, suffix)


@SMOKE
@given(data=st.binary(max_size=2000), fmt=st.sampled_from(FORMATS))
def test_random_bytes_smoke(data, fmt):
    _mutated_case(data, fmt)


@pytest.mark.slow
@HEAVY
@given(data=st.binary(max_size=20000), suffix=st.sampled_from([".py", ".ipynb", ".pyi"]))
def test_random_bytes(data, suffix):
    _mutated_case(data, "json", suffix)


@SMOKE
@given(data=notebook_bytes(), fmt=st.sampled_from(FORMATS))
def test_notebooks_smoke(data, fmt):
    _mutated_case(data, fmt, ".ipynb")


@pytest.mark.slow
@HEAVY
@given(data=notebook_bytes(), fmt=st.sampled_from(FORMATS))
def test_notebooks(data, fmt):
    _mutated_case(data, fmt, ".ipynb")


def _config_case(text: str, source: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pyproject.toml").write_text(text, encoding="utf-8", errors="surrogateescape")
        (Path(tmp) / "train.py").write_text(source)
        check(run_inprocess(tmp, "--output-format", "json"), "json")


@SMOKE
@given(text=pyproject_text())
def test_pyproject_smoke(text):
    _config_case(text, MASKED_SEQUENTIAL)


@pytest.mark.slow
@settings(HEAVY, max_examples=200, derandomize=True, database=None)
@given(text=pyproject_text(), source=st.sampled_from(SEEDS))
def test_pyproject(text, source):
    _config_case(text, source)


# no -j here: a process pool forked from the test process (which may hold TensorFlow) is
# exercised in the subprocess tests instead
ARGV_TOKENS = [
    "--output-format", "text", "json", "sarif", "github", "xml", "1", "2", "-1", "abc",
    "--select", "--ignore", "MSK001", "ALL", "NOPE", "MSK", "--exclude", "*.py", "[", "**", "--force-exclude",
    "--no-respect-gitignore", "--isolated", "--keras-version", "2.10", "3", "tf-keras", "9.9.9", "x",
    "--statistics", "--exit-zero", "-q", "--no-link", "--no-cache", "--diff", "--config",
    "pyproject.toml", "missing.toml", "train.py", "nb.ipynb", ".", "missing.py", "", "-", "--",
    "--unknown-flag",
]


@st.composite
def argv_lists(draw) -> list:
    return draw(st.lists(st.sampled_from(ARGV_TOKENS), max_size=7))


def _argv_case(argv: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "train.py").write_text(MASKED_SEQUENTIAL)
        (t / "nb.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": MASKED_FUNCTIONAL}], "nbformat": 4}))
        (t / "pyproject.toml").write_text("[tool.maskloss]\nkeras-version = \"2.10\"\n")
        old = os.getcwd()
        os.chdir(t)  # no path given means "." : the temporary folder, not the repository
        try:
            check(run_inprocess(*argv))
        finally:
            os.chdir(old)


@SMOKE
@given(argv=argv_lists())
def test_argv_smoke(argv):
    _argv_case(argv)


@pytest.mark.slow
@settings(HEAVY, max_examples=300)
@given(argv=argv_lists())
def test_argv(argv):
    _argv_case(argv)


# ----------------------------------------------------------------------------------- fixed cases

KERAS_LINE = b"from tensorflow.keras.layers import Embedding\n"  # passes any prefilter

# The scanner may skip, unread, any file that cannot be Keras code (a byte-level prefilter), so
# the "must be reported" cases below all contain KERAS_LINE (or "keras" and "Embedding");
# IRRELEVANT_BROKEN holds broken files without it, which only have to keep the contract.
BROKEN_PY = {
    # name: bytes that cannot be read as Python source at all
    "nul_bytes.py": KERAS_LINE + b"import tensorflow as tf\x00\x00\nx = 1\n",
    "binary_blob.py": bytes(range(256)) * 40 + KERAS_LINE,
    "png_in_disguise.py": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200) + KERAS_LINE,
    "high_bytes_no_nul.py": bytes(range(128, 256)) * 20 + KERAS_LINE,
    "latin1_no_cookie.py": "# café\n".encode("latin-1") + KERAS_LINE,
    "unknown_cookie.py": b"# -*- coding: klingon -*-\n" + KERAS_LINE,
    "bom_with_latin1_cookie.py": b"\xef\xbb\xbf# -*- coding: latin-1 -*-\n" + KERAS_LINE,
    "utf8_cookie_bad_bytes.py": b"# -*- coding: utf-8 -*-\n# \xe9\xe9\n" + KERAS_LINE,
    "cookie_on_line_3.py": b"#!/usr/bin/env python\n\n# -*- coding: latin-1 -*-\n# \xe9\n" + KERAS_LINE,
    "truncated_utf8.py": KERAS_LINE + "x = 'é'".encode()[:-2],
    "cookie_utf16.py": b"# -*- coding: utf-16 -*-\n" + KERAS_LINE,
}

IRRELEVANT_BROKEN = {
    "binary_no_token.py": bytes(range(256)) * 40,
    "utf16_bom.py": "import keras\nx = keras.layers.Embedding(3, 2, mask_zero=True)\n".encode("utf-16"),
    "utf32.py": "from keras.layers import Embedding\n".encode("utf-32"),
    "latin1_plain.py": "# café\nx = 1\n".encode("latin-1"),
    "syntax_error_plain.py": b"def (:\n",
    "empty_nb.ipynb": b"",
    "garbage_nb.ipynb": b"\x00\xff" * 100,
    "utf16.ipynb": json.dumps({"cells": [{"cell_type": "code", "source": "from keras.layers import Embedding"}]}).encode("utf-16"),
}

SYNTAX_ERRORS = {
    # files mentioning Keras (so a prefilter cannot skip them) that do not parse
    "python2_print.py": KERAS_LINE + b'print "hello"\n',
    "unterminated_triple.py": KERAS_LINE + b'x = """never closed\n',
    "unbalanced.py": KERAS_LINE + b"model = Sequential([Embedding(3, 2, mask_zero=True)\n",
    "bad_indent.py": KERAS_LINE + b"def f():\nreturn 1\n",
    "lone_continuation.py": KERAS_LINE + b"x = 1 \\",
    "too_deep_indent.py": KERAS_LINE + b"".join(b"    " * i + b"if x:\n" for i in range(120)) + b"    " * 120 + b"pass\n",
}

ODD_BUT_READABLE = {
    # anything goes (0 or 1) as long as the contract holds
    "empty.py": b"",
    "bom_only.py": b"\xef\xbb\xbf",
    "bom_newline.py": b"\xef\xbb\xbf\n",
    "whitespace_only.py": b"  \n\t\n\x0c\n   ",
    "comments_only.py": b"# Embedding(mask_zero=True)\n# model.compile(loss='mse')\n",
    "cr_only_newlines.py": MASKED_SEQUENTIAL.encode().replace(b"\n", b"\r"),
    "crlf_newlines.py": MASKED_SEQUENTIAL.encode().replace(b"\n", b"\r\n"),
    "no_final_newline.py": MASKED_SEQUENTIAL.encode().rstrip(b"\n"),
    "form_feeds.py": b"\x0c" + MASKED_SEQUENTIAL.encode().replace(b"\nmodel", b"\n\x0cmodel"),
    "tabs_and_spaces.py": KERAS_LINE + b"if x:\n\tif y:\n        pass\n",
    "latin1_with_cookie.py": b"# -*- coding: latin-1 -*-\n# caf\xe9\n" + MASKED_SEQUENTIAL.encode(),
    "cp1252_cookie.py": b"# coding=cp1252\nname = '\x93quoted\x94'\n" + MASKED_FUNCTIONAL.encode(),
    "utf8_bom_code.py": b"\xef\xbb\xbf" + MASKED_SEQUENTIAL.encode(),
    "emoji_identifiers.py": "ñame = 'ü😀'\nπ = 3.14\n".encode() + MASKED_FUNCTIONAL.encode(),
    "surrogate_escapes.py": b"x = '\\udcff\\ud800'\n" + MASKED_SEQUENTIAL.encode(),
    "line_separator.py": "x = 'a\u2028b'\n".encode() + MASKED_SEQUENTIAL.encode(),
    "match_statement.py": KERAS_LINE + b"match cmd:\n    case [Embedding() as e, *rest]:\n        pass\n    case _:\n        pass\n",
    "pep695.py": KERAS_LINE + b"type Vec = list[float]\ndef first[T](xs: list[T]) -> T:\n    return xs[0]\n",
    "pep701_fstring.py": KERAS_LINE + b'x = f"{d["a"]} {f"{1 + 2}"}"\n',
    "except_star.py": KERAS_LINE + b"try:\n    pass\nexcept* (ValueError, TypeError) as eg:\n    pass\n",
    "walrus_async.py": KERAS_LINE + b"async def f():\n    return [y async for x in g() if (y := x)]\n",
    "star_import.py": b"from tensorflow.keras.layers import *\nfrom tensorflow.keras.models import *\nm = Sequential([Embedding(3, 2, mask_zero=True), LSTM(2, return_sequences=True)])\nm.compile('adam', 'sparse_categorical_crossentropy')\n",
    "compile_on_everything.py": b"import re\nre.compile('x')\nEmbedding = None\nEmbedding.compile(loss='mse')\n(lambda: 0).compile(1, 2)\n",
    "pyi_stub.pyi": b"from typing import overload\nclass Embedding:\n    def __init__(self, mask_zero: bool = ...) -> None: ...\n",
}

MASKED_NOTEBOOK_CELLS = [
    {"cell_type": "markdown", "source": ["# Title\n", "Embedding(mask_zero=True)"], "metadata": {}},
    {"cell_type": "code", "source": ["%matplotlib inline\n", "!pip install -q keras\n", "import tensorflow as tf\n"],
     "metadata": {}, "outputs": [], "execution_count": 1},
    {"cell_type": "code", "source": MASKED_SEQUENTIAL.replace("import tensorflow as tf\n", "").splitlines(keepends=True),
     "metadata": {}, "outputs": [], "execution_count": 2},
]


def _nb(cells, **top) -> bytes:
    doc = {"cells": cells, "metadata": {"kernelspec": {"language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
    doc.update(top)
    return json.dumps(doc).encode()


_MASKED_NB = _nb(MASKED_NOTEBOOK_CELLS)

BROKEN_NOTEBOOKS = {
    # all mention Embedding; none is a notebook
    "not_json.ipynb": b"this is not json: from keras.layers import Embedding",
    "truncated.ipynb": _MASKED_NB[: _MASKED_NB.rindex(b"mask_zero") + 12],
    "trailing_garbage.ipynb": _MASKED_NB + b"\n}}}",
    "python_source.ipynb": MASKED_SEQUENTIAL.encode(),
    "binary.ipynb": bytes(range(256)) + KERAS_LINE,
    "latin1.ipynb": b'{"cells": [{"cell_type": "code", "source": "# caf\xe9 keras Embedding"}]}',
    "deeply_nested.ipynb": b'[' * 200000 + b'"keras Embedding"' + b"]" * 200000,
    "top_level_list.ipynb": b'["from keras.layers import Embedding"]',
    "top_level_string.ipynb": b'"from keras.layers import Embedding"',
    "cells_is_dict.ipynb": b'{"cells": {"0": {"cell_type": "code", "source": "from keras.layers import Embedding"}}}',
    "cells_is_string.ipynb": b'{"cells": "import keras.layers.Embedding"}',
}

ODD_NOTEBOOKS = {
    "no_cells.ipynb": b'{"metadata": {"Embedding": 1}, "nbformat": 4}',
    "top_level_null.ipynb": b"null",
    "empty_object.ipynb": b"{}",
    "utf8_bom.ipynb": b"\xef\xbb\xbf" + _nb(MASKED_NOTEBOOK_CELLS),
    "nan_values.ipynb": b'{"cells": [{"cell_type": "code", "source": "x", "execution_count": NaN}], "nbformat": Infinity}',
    "non_dict_cells.ipynb": _nb([None, 1, "code", [], [{"cell_type": "code"}], True] + MASKED_NOTEBOOK_CELLS),
    "odd_cell_types.ipynb": _nb([{"cell_type": t, "source": MASKED_SEQUENTIAL} for t in (None, 1, "Code", "raw", "heading", "", ["code"])]),
    "missing_source.ipynb": _nb([{"cell_type": "code"}, {"cell_type": "code", "source": None}, {"cell_type": "code", "outputs": []}]),
    "source_types.ipynb": _nb([{"cell_type": "code", "source": s} for s in (1, 2.5, True, {"a": "b"}, [1, None, ["x"], {"y": 1}], ["import keras\n", 3, None], "")]),
    "source_as_string.ipynb": _nb([{"cell_type": "code", "source": MASKED_SEQUENTIAL}]),
    "source_as_list.ipynb": _nb(MASKED_NOTEBOOK_CELLS),
    "magics_everywhere.ipynb": _nb([{"cell_type": "code", "source": ["%%bash\n", "echo Embedding(mask_zero=True)\n"]},
                                    {"cell_type": "code", "source": ["files = !ls\n", "model?\n", "model.fit??\n", "  %time x = 1\n", "%load_ext foo \\\n", "  bar\n"]}]
                                   + MASKED_NOTEBOOK_CELLS),
    "syntax_error_cell.ipynb": _nb([{"cell_type": "code", "source": "from tensorflow.keras.layers import Embedding\ndef (:\n"}] + MASKED_NOTEBOOK_CELLS),
    "nbformat3.ipynb": json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
                                   "worksheets": [{"cells": [{"cell_type": "code", "language": "python", "input": MASKED_SEQUENTIAL.splitlines(keepends=True), "outputs": []}]}]}).encode(),
    "r_kernel.ipynb": _nb([{"cell_type": "code", "source": "library(keras)\nlayer_embedding(mask_zero = TRUE)\n"}], metadata={"kernelspec": {"language": "R"}}),
    "odd_metadata.ipynb": _nb(MASKED_NOTEBOOK_CELLS, metadata=[1, 2]),
    "odd_kernelspec.ipynb": _nb(MASKED_NOTEBOOK_CELLS, metadata={"kernelspec": "python3", "language_info": {"name": 3}}),
}


@pytest.fixture
def tmp_dir():
    with tempfile.TemporaryDirectory(prefix="maskloss-fuzz-") as d:
        yield Path(d)


@pytest.mark.parametrize("name", sorted(BROKEN_PY))
def test_unreadable_python_is_reported(tmp_dir, name):
    check_error_reported(scan_one(tmp_dir, name, BROKEN_PY[name]), name)


@pytest.mark.parametrize("name", sorted(SYNTAX_ERRORS))
def test_syntax_errors_are_reported(tmp_dir, name):
    check_error_reported(scan_one(tmp_dir, name, SYNTAX_ERRORS[name]), name)


def _json_and_one_more_format(tmp_dir, name, data, i):
    check(scan_one(tmp_dir, name, data, "json"), "json")
    fmt = FORMATS[(0, 2, 3)[i % 3]]  # text, sarif, github in turn
    check(run_inprocess(tmp_dir / name, "--output-format", fmt), fmt)


@pytest.mark.parametrize("name", sorted(IRRELEVANT_BROKEN))
def test_broken_files_without_keras_keep_the_contract(tmp_dir, name):
    _json_and_one_more_format(tmp_dir, name, IRRELEVANT_BROKEN[name], sorted(IRRELEVANT_BROKEN).index(name))


@pytest.mark.parametrize("name", sorted(ODD_BUT_READABLE))
def test_odd_python_files(tmp_dir, name):
    _json_and_one_more_format(tmp_dir, name, ODD_BUT_READABLE[name], sorted(ODD_BUT_READABLE).index(name))


@pytest.mark.parametrize("name", sorted(BROKEN_NOTEBOOKS))
def test_broken_notebooks_are_reported(tmp_dir, name):
    check_error_reported(scan_one(tmp_dir, name, BROKEN_NOTEBOOKS[name]), name)


@pytest.mark.parametrize("name", sorted(ODD_NOTEBOOKS))
def test_odd_notebooks(tmp_dir, name):
    _json_and_one_more_format(tmp_dir, name, ODD_NOTEBOOKS[name], sorted(ODD_NOTEBOOKS).index(name))


# Positive controls: the fuzz cases above would pass vacuously if the scanner read nothing.
@pytest.mark.parametrize(
    "name, data",
    [
        ("masked.py", MASKED_SEQUENTIAL.encode()),
        ("latin1_with_cookie.py", ODD_BUT_READABLE["latin1_with_cookie.py"]),
        ("utf8_bom_code.py", ODD_BUT_READABLE["utf8_bom_code.py"]),
        ("crlf_newlines.py", ODD_BUT_READABLE["crlf_newlines.py"]),
        ("cr_only_newlines.py", ODD_BUT_READABLE["cr_only_newlines.py"]),
        ("source_as_list.ipynb", ODD_NOTEBOOKS["source_as_list.ipynb"]),
        ("source_as_string.ipynb", ODD_NOTEBOOKS["source_as_string.ipynb"]),
        ("magics_everywhere.ipynb", ODD_NOTEBOOKS["magics_everywhere.ipynb"]),
        ("non_dict_cells.ipynb", ODD_NOTEBOOKS["non_dict_cells.ipynb"]),
        ("utf8_bom.ipynb", ODD_NOTEBOOKS["utf8_bom.ipynb"]),
    ],
)
def test_design_rule_found_despite_odd_encoding(tmp_dir, name, data):
    run = scan_one(tmp_dir, name, data)
    findings = check(run, "json")
    assert run.code == 1, run.describe()
    assert DESIGN_CODE in {f["code"] for f in findings}, run.describe()


def test_empty_folder_and_folder_of_empties(tmp_dir):
    check(run_inprocess(tmp_dir))
    for i in range(5):
        (tmp_dir / f"e{i}.py").write_bytes(b"")
        (tmp_dir / f"n{i}.ipynb").write_bytes(b"{}")
    run = run_inprocess(tmp_dir, "--output-format", "json")
    assert check(run, "json") == []


def test_symlink_loops_in_scanned_folder(tmp_dir):
    (tmp_dir / "pkg").mkdir()
    (tmp_dir / "pkg" / "train.py").write_text(MASKED_SEQUENTIAL)
    os.symlink(".", tmp_dir / "pkg" / "self")
    os.symlink("..", tmp_dir / "pkg" / "parent")
    os.symlink(tmp_dir, tmp_dir / "pkg" / "root_abs")
    os.symlink("b.py", tmp_dir / "a.py")  # file symlink loop
    os.symlink("a.py", tmp_dir / "b.py")
    os.symlink("nowhere.py", tmp_dir / "dangling.py")
    os.symlink("pkg/train.py", tmp_dir / "alias.py")
    (tmp_dir / "dir.py").mkdir()  # a folder that looks like a file
    (tmp_dir / "dir.ipynb").mkdir()
    run = run_inprocess(tmp_dir, "--output-format", "json")
    findings = check(run, "json")
    assert run.code == 1
    assert DESIGN_CODE in {f["code"] for f in findings}
    # naming the loops and the dangling link explicitly: a message, not a crash
    for name in ("a.py", "dangling.py", "dir.py", "pkg/self", "pkg/parent"):
        check(run_inprocess(tmp_dir / name, "--output-format", "json"), "json")


def test_missing_path_is_a_usage_error(tmp_dir):
    run = run_inprocess(tmp_dir / "does_not_exist.py")
    check(run)
    assert run.code == 2 and "does_not_exist.py" in run.err, run.describe()


CONFIG_CASES = {
    "invalid_toml": "[tool.maskloss\nselect = [",
    "binary": "\x00\x01\x02",
    "tool_is_string": 'tool = "x"\n',
    "maskloss_not_table": "[tool]\nmaskloss = 3\n",
    "poetry_not_table": "[tool]\npoetry = 3\n",
    "poetry_deps_not_table": "[tool.poetry]\ndependencies = [1, 2]\n",
    "project_not_table": "project = 3\n",
    "dependencies_int": "[project]\ndependencies = 5\n",
    "dependencies_mixed": "[project]\ndependencies = [1, {a = 1}, 'tensorflow==2.10.1']\n",
    "optional_deps_string": "[project.optional-dependencies]\nx = 'tensorflow'\n",
    "keras_version_table": "[tool.maskloss]\nkeras-version = {a = 1}\n",
    "keras_version_banana": "[tool.maskloss]\nkeras-version = 'banana'\n",
    "keras_version_float": "[tool.maskloss]\nkeras-version = 2.1\n",
    "select_int": "[tool.maskloss]\nselect = 5\n",
    "select_unknown": "[tool.maskloss]\nselect = ['NOPE1']\n",
    "exclude_ints": "[tool.maskloss]\nexclude = [1, 2]\n",
    "exclude_bad_glob": "[tool.maskloss]\nexclude = ['[', '**/[!']\n",
    "per_file_ignores_string": "[tool.maskloss]\nper-file-ignores = 'x'\n",
    "per_file_ignores_int": "[tool.maskloss]\nper-file-ignores = {'*' = 5}\n",
    "unknown_key": "[tool.maskloss]\nbogus = true\n",
    "bool_as_string": "[tool.maskloss]\nrespect-gitignore = 'yes'\n",
}


@pytest.mark.parametrize("name", sorted(CONFIG_CASES))
def test_odd_pyproject(tmp_dir, name):
    (tmp_dir / "pyproject.toml").write_text(CONFIG_CASES[name])
    (tmp_dir / "train.py").write_text(MASKED_SEQUENTIAL)
    check(run_inprocess(tmp_dir, "--output-format", "json"), "json")


REQUIREMENTS_CASES = {
    "binary": b"\x00\xff\xfe" * 50,
    "odd_pins": b"tensorflow==\nkeras>=3,<2\ntf-keras==abc\ntensorflow-cpu===2.10.1\nkeras @ https://x\n-r requirements.txt\n--index-url x\n",
    "latin1": b"# caf\xe9\ntensorflow==2.10.1\n",
    "huge_line": b"tensorflow==" + b"9" * 100000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(REQUIREMENTS_CASES))
def test_odd_requirements_files(tmp_dir, name):
    (tmp_dir / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_dir / "requirements.txt").write_bytes(REQUIREMENTS_CASES[name])
    (tmp_dir / "requirements").mkdir()
    (tmp_dir / "requirements" / "dev.txt").write_bytes(REQUIREMENTS_CASES[name])
    (tmp_dir / "train.py").write_text(MASKED_SEQUENTIAL)
    check(run_inprocess(tmp_dir, "--output-format", "json"), "json")


@pytest.mark.slow
def test_many_odd_files_in_one_folder(tmp_dir):
    """Everything above in one scan, with cross-module linking between them."""
    for group in (BROKEN_PY, IRRELEVANT_BROKEN, SYNTAX_ERRORS, ODD_BUT_READABLE, BROKEN_NOTEBOOKS, ODD_NOTEBOOKS):
        for name, data in group.items():
            (tmp_dir / name).write_bytes(data)
    (tmp_dir / "train.py").write_text("from masked import model\nfrom star_import import *\nmodel.fit(x, y)\n")
    (tmp_dir / "masked.py").write_text(MASKED_SEQUENTIAL)
    for fmt in FORMATS:
        run = run_inprocess(tmp_dir, "--output-format", fmt)
        check(run, fmt)
        assert run.code == 1


# ----------------------------------------------------------------------------------- slow, subprocess

NESTING = {
    "parens": lambda n: "x = " + "(" * n + "1" + ")" * n,
    "lists": lambda n: "x = " + "[" * n + "]" * n,
    "dicts": lambda n: "x = " + "{1: " * n + "1" + "}" * n,
    "calls": lambda n: "x = " + "f(" * n + ")" * n,
    "binop": lambda n: "x = " + " + ".join(["a"] * n),
    "attribute": lambda n: "x = a" + ".b" * n,
    "subscript": lambda n: "x = a" + "[0]" * n,
    "unary": lambda n: "x = " + "-" * n + "1",
    "not": lambda n: "x = " + "not " * n + "a",
    "lambda": lambda n: "x = " + "lambda: " * n + "1",
    "ternary": lambda n: "x = " + " if c else ".join(["a"] * n),
    "elif": lambda n: "if a:\n    pass\n" + "".join(f"elif a == {i}:\n    pass\n" for i in range(n)),
    "compare": lambda n: "x = " + " < ".join(["a"] * n),
    "sequential_adds": lambda n: "m = tf.keras.Sequential()\n" + "m.add(tf.keras.layers.Embedding(3, 2, mask_zero=True))\n" * n + "m.compile('adam', 'mse')",
}
NESTING_HEAD = "import tensorflow as tf\nfrom tensorflow.keras.layers import Embedding\n"


def _nesting_case(kind, depth):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}_{depth}.py"
        path.write_text(NESTING_HEAD + NESTING[kind](depth) + "\n")
        run = run_subprocess(path, "--output-format", "json")
        check(run, "json")


@pytest.mark.slow
@pytest.mark.parametrize("depth", [100, 500])
@pytest.mark.parametrize("kind", sorted(NESTING))
def test_deeply_nested_expressions(kind, depth):
    _nesting_case(kind, depth)


# Kinds libcst's native parser recurses on: at depth 5,000 they overflow its stack (SIGSEGV)
# unless the scanner refuses such input first. (The other kinds only get slow: 20 s+ for
# 5,000 chained "+" or ".b" in libcst alone, so they stay at depth 500 above.)
DEEP_KINDS = ["calls", "dicts", "elif", "lambda", "lists", "not", "parens", "unary"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", DEEP_KINDS)
def test_very_deeply_nested_expressions(kind):
    """Depth 5,000: more than CPython itself compiles for these kinds, so an MSK900 (or a
    skip) is the right answer; a crash is not."""
    _nesting_case(kind, 5000)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [6, 20])
def test_nested_layer_calls(depth):
    """``Dense(...)(Dropout(...)(LSTM(...)(Embedding(...)(inputs))))`` written as one nested
    expression: the analysis must stay polynomial in the nesting depth."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"layer_calls_{depth}.py"
        path.write_text(NESTING_HEAD + "inputs = tf.keras.Input((None,))\nx = " + "tf.keras.layers.Embedding(3, 2, mask_zero=True)(" * depth + "inputs" + ")" * depth + "\n")
        check(run_subprocess(path, "--output-format", "json", timeout=120), "json")


LARGE_CASES = {
    "long_line.py": b"layers = [" + b"Embedding(3, 2, mask_zero=True), " * 2000 + b"]\n",
    "huge_cell_source.ipynb": _nb([{"cell_type": "code", "source": ["x = 1\n"] * 5000 + MASKED_SEQUENTIAL.splitlines(keepends=True)}]),
    "many_cells.ipynb": _nb(MASKED_NOTEBOOK_CELLS * 150),
    "many_models.py": MASKED_FUNCTIONAL.encode() * 100,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LARGE_CASES))
def test_large_inputs_in_process(tmp_dir, name):
    _json_and_one_more_format(tmp_dir, name, LARGE_CASES[name], sorted(LARGE_CASES).index(name))


@pytest.mark.slow
def test_very_large_files(tmp_path):
    body = (MASKED_SEQUENTIAL + "\n\ndef helper_{i}(x):\n    return [v * 2 for v in x if v]\n")
    big = "".join(body.replace("{i}", str(i)) for i in range(600))  # ~250 kB of models, all analysed
    (tmp_path / "big_keras.py").write_text(big)
    (tmp_path / "big_mostly_plain.py").write_text(MASKED_SEQUENTIAL + "x = 1\n" * 500000)  # ~3 MB, parsed
    (tmp_path / "big_plain.py").write_text("x = 1\n" * 600000)  # ~3.6 MB, no Keras
    (tmp_path / "too_big.py").write_bytes(b"from keras.layers import Embedding\n" + b"# padding\n" * 900000)  # ~9 MB
    (tmp_path / "big.ipynb").write_bytes(_nb(MASKED_NOTEBOOK_CELLS * 100))
    run = run_subprocess(tmp_path, "--output-format", "json", timeout=900)
    findings = check(run, "json")
    assert run.code == 1
    by_file = {}
    for f in findings:
        by_file.setdefault(os.path.basename(f["path"]), set()).add(f["code"])
    assert DESIGN_CODE in by_file.get("big_keras.py", set()), run.describe()
    assert DESIGN_CODE in by_file.get("big_mostly_plain.py", set()), run.describe()
    assert "too_big.py" in by_file or "too_big.py" in run.err, run.describe()


@pytest.mark.slow
def test_fifo_socket_and_odd_names(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    os.mkfifo(tmp_path / "pipe.ipynb")
    (tmp_path / "train.py").write_text(MASKED_SEQUENTIAL)
    names = [b"bad\xff\xfename.py", b"new\nline.py", b"tab\tand space.py", b"-dash.py", "ünïcødé.py".encode()]
    for raw in names:
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as fh:
            fh.write(MASKED_SEQUENTIAL.encode())
    locked = tmp_path / "locked.py"
    locked.write_text(MASKED_SEQUENTIAL)
    locked.chmod(0)
    try:
        for fmt in FORMATS:
            run = run_subprocess(tmp_path, "--output-format", fmt, timeout=120)
            check(run, fmt)
            assert run.code == 1
        for explicit in (tmp_path / "pipe.py", tmp_path / "pipe.ipynb", os.path.join(os.fsencode(tmp_path), names[0])):
            check(run_subprocess(explicit, timeout=120))
    finally:
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.mark.slow
def test_symlink_loops_subprocess(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "train.py").write_text(MASKED_SEQUENTIAL)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "back_to_a")
    os.symlink(".", tmp_path / "a" / "here")
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    for args in ([tmp_path], [tmp_path / "a" / "b" / "back_to_a"], [tmp_path / "loop1"], [tmp_path, tmp_path / "a", tmp_path / "a" / "here"]):
        run = run_subprocess(*args, "--output-format", "json", timeout=120)
        check(run, "json")


@pytest.mark.slow
def test_parallel_matches_serial_on_mutants(tmp_path):
    """200 mutated sources and notebooks scanned with -j 2 and -j 1: same findings, no crash."""
    rng = random.Random(7)
    kinds = ["flip", "truncate", "insert", "delete", "dup"]
    for i in range(200):
        seed = rng.choice(SEEDS).encode()
        ops = []
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(kinds)
            pos = rng.randrange(1 << 16)
            ops.append((kind, pos, rng.choice(SNIPPETS) if kind == "insert" else rng.randint(1, 60)))
        data = mutate(seed, ops)
        if i % 5 == 0:
            data = _nb([{"cell_type": "code", "source": data.decode("utf-8", "replace")}])
            (tmp_path / f"m{i:03d}.ipynb").write_bytes(data)
        else:
            (tmp_path / f"m{i:03d}.py").write_bytes(data)
    serial = run_subprocess(tmp_path, "--output-format", "json", "-j", "1")
    parallel = run_subprocess(tmp_path, "--output-format", "json", "-j", "2")
    a, b = check(serial, "json"), check(parallel, "json")
    assert serial.code == parallel.code
    key = lambda f: (f["path"], f["line"], f["col"], f["code"])  # noqa: E731
    assert sorted(map(key, a or [])) == sorted(map(key, b or []))


@pytest.mark.slow
def test_bulk_random_tree_subprocess(tmp_path):
    """A tree of random bytes, mutants and notebooks with a BOM-only pyproject, scanned once."""
    rng = random.Random(11)
    for i in range(150):
        d = tmp_path / f"pkg{i % 7}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        choice = i % 3
        if choice == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
        elif choice == 1:
            data = mutate(rng.choice(SEEDS).encode(), [("insert", rng.randrange(5000), rng.choice(SNIPPETS))] * rng.randint(1, 4))
        else:
            data = mutate(_nb(MASKED_NOTEBOOK_CELLS), [("flip", rng.randrange(5000), rng.randint(1, 255))])
        (d / f"f{i}{'.ipynb' if choice == 2 else '.py'}").write_bytes(data)
    (tmp_path / "pyproject.toml").write_bytes(b"\xef\xbb\xbf")
    for fmt in FORMATS:
        check(run_subprocess(tmp_path, "--output-format", fmt, "-j", "2"), fmt)
