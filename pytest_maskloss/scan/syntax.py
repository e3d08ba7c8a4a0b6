"""Reading libcst nodes: dotted names, call arguments by position or keyword, integer and
keyword literals, fast walks over a subtree, and two small questions about function bodies.
libcst is imported lazily."""

from __future__ import annotations

from pytest_maskloss.scan._lazy import LazyModule

cst = LazyModule("libcst")


def dotted(node) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else None
    return None


def call_arg(call: cst.Call, index: int | None, keyword: str | None):
    """The argument node given by keyword, or by position ``index``."""
    pos = 0
    for arg in call.args:
        if arg.star:
            continue
        if arg.keyword is not None:
            if keyword is not None and arg.keyword.value == keyword:
                return arg.value
        else:
            if index is not None and pos == index:
                return arg.value
            pos += 1
    return None


def has_star_args(call: cst.Call) -> bool:
    return any(arg.star for arg in call.args)


def int_of(node) -> int | None:
    if isinstance(node, cst.Integer):
        try:
            return int(node.value, 0)
        except ValueError:
            return None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        v = int_of(node.expression)
        return -v if v is not None else None
    return None


def string_value(node):
    """The value of a string literal (str or bytes; None for f-strings and bad literals).
    Literals without escapes are sliced; only the rest go through libcst's ``evaluated_value``
    (``ast.literal_eval``, a ``compile`` per call: most of the interpreter's time on real code,
    where docstrings are the commonest literals)."""
    if isinstance(node, cst.SimpleString):
        prefix, quote, text = node.prefix.lower(), node.quote, node.value
        if prefix in ("", "u", "r") and ("\\" not in text or prefix == "r"):
            return text[len(prefix) + len(quote): len(text) - len(quote)]
    elif isinstance(node, cst.ConcatenatedString):
        left, right = string_value(node.left), string_value(node.right)
        if left is None or right is None or type(left) is not type(right):
            return None
        return left + right
    else:
        return None
    try:
        return node.evaluated_value
    except Exception:
        return None


def kw_literal(call: cst.Call, name: str) -> str | None:
    node = call_arg(call, None, name)
    if node is None:
        return None
    if isinstance(node, cst.SimpleString):
        value = string_value(node)
        return "?" if value is None else str(value)
    if isinstance(node, cst.Attribute):  # losses_utils.ReductionV2.SUM
        return node.attr.value.lower()
    return "?"


def returns_only_none(fn: cst.FunctionDef) -> bool:
    body = fn.body.body
    if not isinstance(body, (list, tuple)):
        return False
    returns = []
    for stmt in body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                if isinstance(s, cst.Return):
                    returns.append(s)
        elif not isinstance(stmt, (cst.SimpleStatementLine,)):
            return False
    return bool(returns) and all(
        r.value is None or (isinstance(r.value, cst.Name) and r.value.value == "None") for r in returns
    )


def sets_supports_masking(fn: cst.FunctionDef) -> bool:
    """Does the body assign ``<x>.supports_masking = True`` anywhere?"""
    for node in walk(fn):
        if isinstance(node, cst.Assign) and isinstance(node.value, cst.Name) and node.value.value == "True":
            for t in node.targets:
                if isinstance(t.target, cst.Attribute) and t.target.attr.value == "supports_masking":
                    return True
    return False


_FIELDS: dict = {}  # node class -> names of its dataclass fields


def walk(node):
    """``node`` and every node below it, in no particular order: the nodes ``children`` would
    give, read from the dataclass fields directly (``children`` runs libcst's visitor machinery,
    ten times slower)."""
    stack = [node]
    pop, extend = stack.pop, stack.extend
    while stack:
        n = pop()
        yield n
        extend(_child_nodes(n))


def walk_in_order(node):
    """``walk`` with parents before their children and children in the order of their fields,
    which is the order of the source (a function's or class's decorators excepted: they are
    fields after the body). For a rule that keeps the first or the last of several matches."""
    stack = [node]
    pop, extend = stack.pop, stack.extend
    while stack:
        n = pop()
        yield n
        extend(reversed(_child_nodes(n)))


def _child_nodes(n) -> list:
    """The nodes held by ``n``'s fields, in field order."""
    names = _FIELDS.get(type(n))
    if names is None:
        names = _FIELDS[type(n)] = tuple(n.__dataclass_fields__)
    node_type = cst.CSTNode
    below = []
    for name in names:
        value = getattr(n, name)
        if isinstance(value, node_type):
            below.append(value)
        elif type(value) in (tuple, list):
            below.extend(v for v in value if isinstance(v, node_type))
    return below
