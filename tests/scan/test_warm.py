"""Parallel scans parse a shared module once: the parent process finds, from the files' text,
the project modules several scanned files import (``ProjectIndex.imported_files`` /
``shared_imports``), analyses them before it forks, and the workers inherit them
(``Scanner.warm``). The findings are those of a one-process scan."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

from pytest_maskloss.scan.project import ProjectIndex

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ast_imports(index: ProjectIndex, path: str) -> set[str]:
    """The reference: every import statement CPython's parser sees, resolved to project files
    the same way (a module, or a package's module for ``from a import b``)."""
    tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
    package = index.module_name(path).split(".")
    if not os.path.basename(path).startswith("__init__."):
        package = package[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ([base] if base else []))
            if base:
                names.add(base)
            names |= {f"{base}.{a.name}" if base else a.name for a in node.names if a.name != "*"}
    out = set()
    for name in names:
        if name.split(".")[0] in ("numpy", "math", "os", "sys", "torch", "jax", "keras", "tensorflow", "tf_keras"):
            continue
        found = index.find_module(name, path)
        if found is not None and found != os.path.abspath(path):
            out.add(found)
    return out


def test_imported_files_find_every_import_statement_of_this_project():
    """On the package's own files (relative and absolute imports, parenthesised lists with
    comments, imports inside functions): the text-level reading finds every project module
    the parsed statements import. It may find more (an ``import`` line inside a docstring):
    that only warms a module for nothing."""
    index = ProjectIndex(str(ROOT), None, None)
    files = [f for f in index.files() if f.startswith(str(ROOT / "pytest_maskloss"))]
    assert len(files) > 50
    total = 0
    for path in files:
        expected = _ast_imports(index, path)
        total += len(expected)
        assert expected <= index.imported_files(path), path
    assert total > 100


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_imported_files_shapes(tmp_path):
    _write(tmp_path / "pkg" / "__init__.py", "")
    _write(tmp_path / "pkg" / "models.py", "x = 1\n")
    _write(tmp_path / "pkg" / "data.py", "y = 2\n")
    _write(tmp_path / "pkg" / "sub" / "__init__.py", "")
    _write(tmp_path / "pkg" / "sub" / "train.py", (
        "import numpy as np\n"
        "from .. import models\n"
        "from ..data import y  # a comment\n"
        "from pkg import (\n    data,  # the data\n    models as m,\n)\n"
        "import pkg.models as pm, os\n"
    ))
    index = ProjectIndex(str(tmp_path), None, None)
    got = index.imported_files(str(tmp_path / "pkg" / "sub" / "train.py"))
    rel = {os.path.relpath(p, tmp_path) for p in got}
    assert rel == {"pkg/__init__.py", "pkg/models.py", "pkg/data.py"}
    shared = index.shared_imports([str(tmp_path / "pkg" / "sub" / "train.py"), str(tmp_path / "pkg" / "data.py")])
    assert shared == []  # data.py imports nothing: every count is 1
    assert index.shared_imports([str(tmp_path / "pkg" / "sub" / "train.py")] * 2)[0].endswith("__init__.py")


MODELS = '''
import tensorflow as tf


def build_model(vocab=100):
    model = tf.keras.Sequential()
    model.add(tf.keras.layers.Embedding(vocab, 8, mask_zero=True))
    model.add(tf.keras.layers.LSTM(8, return_sequences=True))
    model.add(tf.keras.layers.Dense(vocab))
    return model
'''

TRAIN = '''
from models import build_model

model = build_model({n})
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x, y)
'''

# run in a fresh process: the pool forks only a single-threaded one
_COUNTING_RUN = r'''
import json, os, sys
from pytest_maskloss.scan import cli, engine
from pytest_maskloss.scan.engine import Settings

parse = engine.safe_parse
def counting(text):
    if "def build_model" in text:
        with open("parses.log", "a") as fh:
            fh.write(f"{os.getpid()}\n")
    return parse(text)
engine.safe_parse = counting
files = sorted(os.path.abspath(f) for f in os.listdir(".") if f.startswith("train"))
out = {}
for jobs in (1, 2):
    open("parses.log", "w").close()
    results = cli.scan_paths(files, Settings(scan_set=frozenset(files)), jobs)
    pids = open("parses.log").read().split()
    out[jobs] = {"findings": sorted((os.path.basename(f.path), f.code, f.line) for r in results for f in r.findings),
                 "parses": len(pids), "in_parent": pids.count(str(os.getpid()))}
print(json.dumps(out))
'''


def test_two_workers_parse_the_shared_module_once_in_the_parent(tmp_path):
    _write(tmp_path / "pyproject.toml", "[project]\nname = 'demo'\ndependencies = ['tensorflow==2.10.1']\n")
    _write(tmp_path / "models.py", MODELS)
    for n in range(20):
        _write(tmp_path / f"train_{n:02d}.py", TRAIN.format(n=n + 10))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-c", _COUNTING_RUN], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    one, two = out["1"], out["2"]
    assert one["findings"] == two["findings"]
    assert [code for _, code, _ in two["findings"]] == ["MSK001"] * 20
    assert one["parses"] == 1
    assert two["parses"] == 1 and two["in_parent"] == 1  # not once per worker


def test_importers_are_the_files_whose_imports_resolve_to_the_module(tmp_path):
    """The reverse links of ``pkg/legacy/layers.py``: files that import it, however spelt, and
    not files whose imports only share its last name (``from pkg import layers`` is
    ``pkg/layers/``), which were analysed, and parsed, for nothing (keras-core: 105 files for
    its ``legacy/layers.py``)."""
    for name in ("pkg/__init__.py", "pkg/layers/__init__.py", "pkg/legacy/__init__.py"):
        _write(tmp_path / name, "")
    _write(tmp_path / "pkg" / "legacy" / "layers.py", "def build():\n    return None\n")
    uses = "model.compile(loss='mse')\n"
    _write(tmp_path / "package_layers.py", "from pkg import layers\n" + uses)
    _write(tmp_path / "from_legacy.py", "from pkg.legacy import layers\n" + uses)
    _write(tmp_path / "dotted.py", "import pkg.legacy.layers as legacy_layers\nmodel.fit(x)\n")
    _write(tmp_path / "pkg" / "legacy" / "relative.py", "from .layers import build\n" + uses)
    _write(tmp_path / "no_use.py", "from pkg.legacy import layers\n")  # never compiles or fits
    index = ProjectIndex(str(tmp_path), None, None)
    got = {os.path.relpath(p, tmp_path) for p in index.importers(str(tmp_path / "pkg" / "legacy" / "layers.py"))}
    assert got == {"from_legacy.py", "dotted.py", "pkg/legacy/relative.py"}
