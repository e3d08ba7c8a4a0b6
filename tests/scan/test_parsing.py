"""The analysis parse (``parsing.parse_unvalidated``: libcst without re-validating each node)
gives the same trees as ``libcst.parse_module``, leaves libcst's validation in force for
everyone else, and ``syntax.walk`` reaches the nodes libcst's ``children`` reach."""

from __future__ import annotations

from pathlib import Path

import libcst as cst
import pytest

from pytest_maskloss.scan.parsing import parse_unvalidated, safe_parse
from pytest_maskloss.scan.syntax import walk, walk_in_order

ROOT = Path(__file__).resolve().parents[2]
# the project's own sources (not the venvs, caches or checkouts a working copy may hold)
FILES = sorted(p for folder in ("pytest_maskloss", "tests", "benchmarks", "examples", "docs", ".ci")
               for p in (ROOT / folder).rglob("*.py"))

SNIPPETS = [
    "",
    "\n\n# only a comment\n",
    "x = (1 +\n     2)  # trailing\n",
    "async def f():\n    async with a as b, c:\n        await g(*x, **y)\n",
    "match p:\n    case [1, *rest] if rest:\n        pass\n    case {'k': v}:\n        pass\n",
    "def f[T](x: T) -> T:\n    return x\n",
    "f'{x!r:>{width}} {y=}'\n",
    "lambda *a, b=1, **k: (yield)\n",
    "try:\n    pass\nexcept* (A, B) as e:\n    raise\n",
    "x: int = 1; del x; global y\n",
    "@dec\nclass C(B, metaclass=M):\n    '''doc'''\n    a = [i for i in range(3) if i]\n",
    "x = 1 if y else 2 if z else 3\nw = not not a\n",
    "print('ünïcode', b'bytes', r'raw\\d', '''tri\nple''')\r\n",
]


def children_walk(node):
    stack, out = [node], []
    while stack:
        n = stack.pop()
        out.append(n)
        stack.extend(n.children)
    return out


@pytest.mark.parametrize("text", SNIPPETS)
def test_snippets_parse_to_the_same_tree(text):
    plain, fast = cst.parse_module(text), parse_unvalidated(text)
    assert fast.deep_equals(plain)
    assert fast.code == text


def test_real_files_parse_to_the_same_tree():
    assert len(FILES) > 50
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        plain, fast = cst.parse_module(text), parse_unvalidated(text)
        assert fast.deep_equals(plain), path
        assert fast.code == plain.code == text, path


def test_validation_stays_on_outside_the_analysis_parse():
    parse_unvalidated("x = 1\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")  # an empty name is refused by libcst's validation
    with pytest.raises(cst.ParserSyntaxError):
        parse_unvalidated("def (:\n")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")  # restored after a parse that failed, too


def test_safe_parse_reports_syntax_errors_and_deep_nesting():
    assert safe_parse("x = 1\n")[1] is None
    module, error = safe_parse("x = (\n")
    assert module is None and error[0] == 1 and "never closed" in error[2]
    module, error = safe_parse("x = " + "(" * 3000 + ")" * 3000 + "\n")
    assert module is None and "too many nested" in error[2]


def test_walk_reaches_the_nodes_children_reach():
    for path in FILES[:80]:
        module = parse_unvalidated(path.read_text(encoding="utf-8"))
        expected = {id(n) for n in children_walk(module)}
        got = [id(n) for n in walk(module)]
        assert len(got) == len(set(got)), path
        assert set(got) == expected, path



def test_walk_in_order_reaches_what_walk_reaches_in_the_order_of_the_source():
    for path in FILES[:40]:
        module = parse_unvalidated(path.read_text(encoding="utf-8"))
        assert {id(n) for n in walk_in_order(module)} == {id(n) for n in walk(module)}, path
    module = parse_unvalidated("a = f(1, g(2))\nb = h(3)\n")
    calls = [n.func.value for n in walk_in_order(module) if isinstance(n, cst.Call)]
    assert calls == ["f", "g", "h"]
