"""Parsing one unit of source for the analysis: CPython's parser looks at the text first (it
rejects nesting that would overflow libcst's native parser), then libcst builds the tree,
without re-validating each node it makes; syntax errors come back as (line, col, message).
libcst is imported lazily."""

from __future__ import annotations

from pytest_maskloss.scan._lazy import LazyModule

cst = LazyModule("libcst")


def _no_check(self) -> None:
    pass


def parse_unvalidated(text: str):
    """``libcst.parse_module(text)`` without the ``_validate`` call every node's constructor
    makes (``CSTNode.__post_init__``: about 15% of the parse). Those checks guard trees built
    or changed by hand; the native parser only builds trees that pass them, so the tree is the
    same (``tests/scan/test_parsing.py`` compares the two on real files). Fixes are re-parsed
    with the plain ``libcst.parse_module``."""
    base = cst.CSTNode
    saved = base.__dict__["__post_init__"]
    base.__post_init__ = _no_check
    try:
        return cst.parse_module(text)
    finally:
        base.__post_init__ = saved


_TOO_DEEP = ("too many nested", "too complex", "too many levels", "stack overflow")


def safe_parse(text: str):
    """(module, None) or (None, (line, col, message)). CPython's own parser looks at the text
    first: libcst's native parser overflows the C stack (a segfault, not an exception) on
    very deep nesting such as 1500 brackets or 20000 chained ``not``, which CPython rejects
    cleanly ("too many nested parentheses", "too complex"); such files are reported as MSK900."""
    try:
        compile(text, "<scan>", "exec", 1024, dont_inherit=True)  # ast.PyCF_ONLY_AST
    except (RecursionError, MemoryError, OverflowError):
        return None, (1, 1, "too deeply nested to analyse")
    except SyntaxError as se:
        if any(t in str(se.msg) for t in _TOO_DEEP):
            return None, (se.lineno or 1, max(1, se.offset or 1), f"syntax error: {se.msg}")
        # maybe syntax newer than this interpreter: libcst decides
    except ValueError as exc:  # NUL bytes and the like
        return None, (1, 1, f"cannot parse: {exc}")
    try:
        return parse_unvalidated(text), None
    except cst.ParserSyntaxError as exc:
        return None, _syntax_position(text, exc)
    except (RecursionError, MemoryError, ValueError, TypeError, IndexError) as exc:
        return None, (1, 1, f"cannot parse: {type(exc).__name__}")


def _syntax_position(text: str, exc: cst.ParserSyntaxError):
    """(line, col, message) of a syntax error: CPython's position and message when CPython
    rejects the text too (they are more precise), else libcst's."""
    try:
        compile(text, "<scan>", "exec", 1024, dont_inherit=True)  # ast.PyCF_ONLY_AST
    except SyntaxError as se:
        if se.lineno:
            return se.lineno, max(1, se.offset or 1), f"syntax error: {se.msg}"
    except (ValueError, RecursionError, MemoryError, OverflowError):
        pass
    return exc.raw_line, exc.raw_column + 1, _syntax_message(exc)


def _syntax_message(exc: cst.ParserSyntaxError) -> str:
    msg = str(getattr(exc, "message", "") or "invalid syntax").splitlines()[0]
    return f"syntax error: {msg[:200]}"
