"""Notebook cells read as IPython runs them: magics (indented too), shell escapes, help syntax,
pasted indents; findings at the cell's own line and column; one warning for invalid cells."""

import json

from pytest_maskloss.scan.ipython import cell_python


def _nb(*sources):
    cells = [{"cell_type": "markdown", "source": "# title", "metadata": {}}]
    cells += [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None} for s in sources]
    return json.dumps({"cells": cells, "metadata": {"kernelspec": {"language": "python"}}, "nbformat": 4, "nbformat_minor": 5})


def _compiles(text):
    compile(text, "<cell>", "exec")
    return True


def test_indented_magics_shell_and_help_become_statements():
    cases = [
        'import sys\nif "google.colab" in sys.modules:\n    %pip install -q -U urlextract\n',
        "try:\n  %tensorflow_version 2.x\nexcept Exception:\n  pass\n",
        "files = !ls\n!pip install \\\n    foo\n?len\nlen??\nmodel.fit?\n",
        "a, b = %who_ls\nfor x in y:\n    !echo {x}\n",
    ]
    for cell in cases:
        py = cell_python(cell)
        assert py.text.count("\n") == cell.count("\n")  # line for line
        assert _compiles(py.text), py.text


def test_python_inside_strings_and_brackets_is_left_alone():
    cell = 's = """\n%not_a_magic\n!nor_shell\n"""\nx = (1 +\n%2)\n'
    assert cell_python(cell).text == cell


def test_pasted_indent_and_time_magic_keep_columns():
    py = cell_python("    x = 1\n    y = f(x)\n")
    assert py.text == "x = 1\ny = f(x)\n" and py.shift == (4, 4)
    py = cell_python("%time history = model.fit(x)\n")
    assert py.text == "history = model.fit(x)\n" and py.shift == (6,)
    assert cell_python("%%bash\nmodel.compile(\n").text == "\n\n"
    assert cell_python("%%time\nmodel.fit(x)\n").text == "\nmodel.fit(x)\n"


MODEL_CELL = (
    "try:\n"
    "  %tensorflow_version 2.x\n"
    "except Exception:\n"
    "  pass\n"
    "import tensorflow as tf\n"
    "if IS_COLAB:\n"
    "    %pip install -q keras\n"
)
# pasted with a two-space indent, as in a tutorial's "add_method" cells
COMPILE_CELL = (
    "  model = tf.keras.Sequential([tf.keras.layers.Embedding(10, 4, mask_zero=True), tf.keras.layers.Dense(3)])\n"
    "  ?model\n"
    "  out = !nvidia-smi\n"
    "  model.compile('adam', 'sparse_categorical_crossentropy')\n"
)


def test_finding_in_a_notebook_with_magics_at_the_cells_line_and_column(tmp_path, run_json, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb.ipynb").write_text(_nb(MODEL_CELL, COMPILE_CELL))
    code, data, _ = run_json("nb.ipynb", "--keras-version", "2.10")
    # the loss string starts in column 25 of line 4 of code cell 2 (2 spaces + "model.compile('adam', ")
    expected_col = COMPILE_CELL.splitlines()[3].index("'sparse_categorical_crossentropy'") + 1
    assert [(d["code"], d["cell"], d["line"], d["col"]) for d in data] == [("MSK001", 2, 4, expected_col)]
    assert expected_col == 25
    assert not any(d["code"] == "MSK900" for d in data)


def test_unsafe_fix_in_a_dedented_cell_applies_at_the_right_place(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb.ipynb").write_text(_nb(MODEL_CELL, COMPILE_CELL))
    code, out, err = run("nb.ipynb", "--keras-version", "2.10", "--fix", "--unsafe-fixes")
    cells = [c for c in json.loads((tmp_path / "nb.ipynb").read_text())["cells"] if c["cell_type"] == "code"]
    fixed = "".join(cells[1]["source"])
    assert fixed != COMPILE_CELL and "Fixed 1" in err
    assert _compiles(cell_python(fixed).text)  # still a cell IPython runs
    assert fixed.splitlines()[1:3] == COMPILE_CELL.splitlines()[1:3]  # magics kept as written


def test_invalid_cells_give_one_warning_and_the_rest_is_analysed(tmp_path, run_json, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = "x = layers.Dense(32,\xa0activation='relu')(x)\n"  # U+00A0: CPython and IPython reject it
    (tmp_path / "nb.ipynb").write_text(_nb(bad, MODEL_CELL, bad, "def f(:\n", COMPILE_CELL))
    code, data, _ = run_json("nb.ipynb", "--keras-version", "2.10")
    errors = [d for d in data if d["code"] == "MSK900"]
    assert len(errors) == 1
    assert errors[0]["severity"] == "warning" and errors[0]["cell"] == 1 and "3 of 5 code cells" in errors[0]["message"]
    assert [(d["cell"], d["line"]) for d in data if d["code"] == "MSK001"] == [(5, 4)]
