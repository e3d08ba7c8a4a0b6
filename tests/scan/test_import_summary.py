"""``project.import_summary`` (what the reverse-import index keeps of a file) gives the same
answers as the plain definition it replaced: one multi-line regular expression run with
``finditer`` over the whole text for the import statements, one ``search`` for a call of
``compile``/``fit``/``evaluate``/``exp``. That definition is restated here as the reference."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_maskloss.scan.project import import_summary

_REF_USER = re.compile(r"(?<!\bre)\.compile\s*\(|\.fit\s*\(|\.evaluate\s*\(|\bexp\s*\(")
_REF_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+([.\w]+)[ \t]+import[ \t]*(\([^)]*\)|[^\n#;]*(?:\\\n[^\n#;]*)*)"
    r"|import[ \t]+([^\n#;]*(?:\\\n[^\n#;]*)*))",
    re.M,
)


def reference(text: str) -> tuple[frozenset, bool]:
    words = set()
    for m in _REF_IMPORT.finditer(text):
        for group in m.groups():
            if group:
                words.update(re.findall(r"\w+", group))
    return frozenset(words), "import" in text and _REF_USER.search(text) is not None


SHAPES = [
    "",
    "x = 1\n",
    "import os\n",
    "import os, sys as system\n",
    "import a.b.c as d  # import e\n",
    "  import indented\n",
    "\timport tabbed\n",
    "importlib.reload(x)\nimport_module('m')\n",
    "import\tos\n",
    "from models import build_model\n",
    "from .nets import lm\n",
    "from . import sibling\n",
    "from .. import up, down as d2\n",
    "from pkg.sub import (a,\n    b,  # c\n    d)\n",
    "from pkg.sub import (a,  # has ) inside a comment\n    b)\n",
    "from pkg import (\n    import_b,\n    import c,\n)\nimport after\n",
    "from a import b; import c\nimport d; from e import f\n",
    "from a import \\\n    b, \\\n    c\n",
    "import a, \\\n    b\n",
    "import a \\\n\nimport b\n",
    "from x import\nfrom y import z\n",
    "fromage import x\nfrom  spaced   import  name\n",
    "'''\nfrom doc import string\nimport in_a_docstring\n'''\n",
    ">>> from prompt import name\n",
    "if x:\n    from cond import a\nelse:\n    import b\n",
    "try:\n    import tensorflow as tf\nexcept ImportError:\n    tf = None\n",
    "from a import b\r\nimport c\r\n",
    "from a import b \\\r\n    c\r\n",
    "import é_unicode, ñ\n",
    "def f():\n    import inner  # import comment\n    return inner\n",
    "print('import x'); import y\n",
    "x = 'from a import b'\n",
    "from __future__ import annotations\nimport keras\n",
    "model.compile(loss='mse')\nimport x\n",
    "re.compile('x')\nimport x\n",
    "are.compile('x')\nimport x\n",
    "_re.compile('x')\nimport x\n",
    "import re\nre .compile('x')\n",
    "import m\nm.fit (x)\n",
    "import m\nm.evaluate\n(x)\n",
    "import math\nmath.exp(1)\n",
    "import math\nnp.expm1(1)\nmyexp(2)\n",
    "import math\nexp (2)\n",
    "model.fit(x)\n",  # no import: never a user
    "import x\n" * 50 + "y.fit(z)\n",
]


def test_shapes_of_import_statements_give_the_reference_answers():
    for text in SHAPES:
        assert import_summary(text) == reference(text), text


ALPHABET = st.sampled_from([
    "import", "from", " ", "\t", "\n", "\r\n", "\\\n", "(", ")", ",", ";", "#", ".", "a", "b_c", "os",
    "as", "'''", "re", ".compile", "compile", ".fit", ".evaluate", "exp", "(", "x", "é", ">>> ",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(ALPHABET, max_size=60).map("".join))
def test_random_texts_give_the_reference_answers(text):
    assert import_summary(text) == reference(text)


def test_the_project_own_files_give_the_reference_answers():
    root = Path(__file__).resolve().parents[2]
    files = sorted(p for folder in ("pytest_maskloss", "tests", "benchmarks", "examples", "docs", ".ci")
                   for p in (root / folder).rglob("*.py"))  # not the venvs a working copy holds
    assert len(files) > 50
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert import_summary(text) == reference(text), path
