"""Notebooks, odd input, and autofix (diff, fix, unsafe fixes, idempotence, atomic writes)."""

import json
import os

import pytest

from tests.scan.conftest import write

MASKED = """\
import tensorflow as tf  # keep me
model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])
model.compile(
    "adam",
    "sparse_categorical_crossentropy",  # the loss
)
"""


def _nb(cells, language="python"):
    return json.dumps(
        {
            "cells": cells,
            "metadata": {"kernelspec": {"language": language, "name": "k"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        },
        indent=1,
    )


def _code(src):
    return {"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None}


def test_notebook_positions_and_magics(tmp_path, run_json, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb.ipynb").write_text(
        _nb(
            [
                {"cell_type": "markdown", "source": ["# Embedding\n"], "metadata": {}},
                _code(["%matplotlib inline\n", "import tensorflow as tf\n", "!pip install x\n"]),
                _code("%%bash\necho model.compile(\n"),
                _code(
                    [
                        "files = !ls\n",
                        "model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True)])\n",
                        "model.compile('adam', 'sparse_categorical_crossentropy')\n",
                        "model?\n",
                    ]
                ),
            ]
        )
    )
    code, data, _ = run_json("nb.ipynb", "--keras-version", "2.10")
    assert code == 1
    assert [(d["cell"], d["line"], d["col"], d["code"]) for d in data] == [(3, 3, 23, "MSK001")]
    code, out, _ = run("nb.ipynb", "--keras-version", "2.10")
    assert out.startswith("nb.ipynb:cell 3:3:23: MSK001")


def test_notebook_of_another_language_is_skipped(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.ipynb").write_text(_nb([_code("Embedding <- 1; model.compile(")], language="R"))
    code, data, _ = run_json("r.ipynb")
    assert code == 0 and data == []


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("broken.ipynb", b"{not json mask_zero", "not valid JSON"),
        ("bin.py", b"\x00\x01mask_zero\xff", "binary"),
        ("enc.py", b"# -*- coding: klingon -*-\nmask_zero\n", "encoding"),
        ("utf8.py", b"x = '\xff\xfe' # mask_zero\n", "decode"),
    ],
)
def test_bad_input_is_msk900_never_a_traceback(tmp_path, run_json, monkeypatch, name, content, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(content)
    code, data, err = run_json(name)
    assert code == 1
    assert [d["code"] for d in data] == ["MSK900"]
    assert needle in data[0]["message"]
    assert "Traceback" not in err


def test_odd_notebooks_and_symlink_loop(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.ipynb").write_text(json.dumps({"cells": [{"cell_type": "code", "source": 5}, 3, {"cell_type": "code"}], "x": "Embedding"}))
    (tmp_path / "l.ipynb").write_text(json.dumps(["mask_zero"]))
    os.symlink(".", tmp_path / "loop")
    (tmp_path / "latin.py").write_bytes(
        "# -*- coding: latin-1 -*-\n# caf\xe9\nimport keras\nm = keras.Sequential([keras.layers.Masking()])\nm.compile(loss='mse')\n".encode("latin-1")
    )
    code, data, err = run_json(".", "--keras-version", "2.10")
    assert sorted((d["path"], d["code"]) for d in data) == [("l.ipynb", "MSK900"), ("latin.py", "MSK001")]


def test_large_file_is_reported_not_parsed(tmp_path, run_json, monkeypatch):
    from pytest_maskloss.scan import source

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(source, "MAX_BYTES", 1000)
    monkeypatch.setattr("pytest_maskloss.scan.engine.MAX_BYTES", 1000)
    (tmp_path / "big.py").write_text("# mask_zero\n" + "x = 1\n" * 1000)
    code, data, _ = run_json("big.py")
    assert [d["code"] for d in data] == ["MSK900"] and "larger" in data[0]["message"]


def test_diff_shows_and_writes_nothing(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", MASKED)
    code, out, err = run("a.py", "--keras-version", "2.10", "--diff", "--unsafe-fixes")
    assert code == 1
    assert "+import pytest_maskloss.keras" in out
    assert '+    pytest_maskloss.keras.MaskedLoss("sparse_categorical_crossentropy"),  # the loss' in out
    assert (tmp_path / "a.py").read_text() == MASKED


def test_fix_without_unsafe_applies_nothing(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.py", MASKED)
    code, out, err = run("a.py", "--keras-version", "2.10", "--fix")
    assert code == 1
    assert "withheld" in err
    assert (tmp_path / "a.py").read_text() == MASKED


def test_unsafe_fix_keeps_comments_is_idempotent_and_clean(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "a.py", MASKED)
    os.chmod(path, 0o640)
    code, out, err = run("a.py", "--keras-version", "2.10", "--fix", "--unsafe-fixes")
    assert code == 0, out
    fixed = path.read_text()
    assert "# keep me" in fixed and "# the loss" in fixed
    assert fixed.startswith("import pytest_maskloss.keras\n")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o640)
    compile(fixed, "a.py", "exec")
    code, out, err = run("a.py", "--keras-version", "2.10", "--fix", "--unsafe-fixes")
    assert path.read_text() == fixed  # idempotent
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".maskloss-")]


def test_loss_subclass_call_rename_fix(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "l.py", """
        import keras
        class L(keras.losses.Loss):
            def __call__(self, y_true, y_pred):  # note
                return keras.ops.mean(y_pred)
    """)
    code, out, _ = run("l.py", "--fix", "--unsafe-fixes")
    assert "def call(self, y_true, y_pred):  # note" in path.read_text()
    assert code == 0


def test_reduction_fix_on_keras_37(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "s.py", """
        import keras
        model = keras.Sequential([keras.layers.Embedding(10, 4), keras.layers.Dense(3)])
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, sample_weight=(y != 0))
    """)
    code, out, _ = run("s.py", "--keras-version", "3.7", "--fix", "--unsafe-fixes")
    assert 'SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight")' in path.read_text()
    assert code == 0
    # no such fix before Keras 3.7
    path2 = write(tmp_path / "t.py", path.read_text().replace(', reduction="mean_with_sample_weight"', ""))
    code, out, _ = run("t.py", "--keras-version", "3.6", "--diff", "--unsafe-fixes")
    assert "mean_with_sample_weight\")" not in out.replace("use reduction", "")


def test_fix_that_would_not_parse_is_not_written(tmp_path, monkeypatch):
    from pytest_maskloss.scan import fixer
    from pytest_maskloss.scan.findings import Edit, Finding, Fix

    path = write(tmp_path / "a.py", "x = 1\n")
    bad = Finding(str(path), 1, 1, "MSK001", "m", fix=Fix("break it", (Edit(0, 1, "def ("),), True))
    with pytest.raises(fixer.FixError):
        fixer.fixed_content(str(path), [bad])
    assert path.read_text() == "x = 1\n"


def test_overlapping_fixes_apply_once(tmp_path):
    from pytest_maskloss.scan import fixer
    from pytest_maskloss.scan.findings import Edit, Finding, Fix

    path = write(tmp_path / "a.py", "x = 1\n")
    imp = Edit(0, 0, "import os\n")
    a = Finding(str(path), 1, 1, "MSK001", "m", fix=Fix("a", (Edit(4, 5, "2"), imp), True))
    b = Finding(str(path), 1, 2, "MSK001", "m", fix=Fix("b", (Edit(4, 5, "3"), imp), True))
    old, new, applied = fixer.fixed_content(str(path), [a, b])
    assert new == b"import os\nx = 2\n" and applied == [a]


def test_fixes_apply_only_to_scanned_files(project, run):
    before = (project / "train.py").read_text()
    code, out, err = run("models.py", "--fix", "--unsafe-fixes")
    assert (project / "train.py").read_text() == before
    assert code == 1  # the finding in train.py is still reported
