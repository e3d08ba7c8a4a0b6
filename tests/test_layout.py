"""The package's layout, checked from its sources (nothing is imported): no import cycles, each
product depends only on the layers below it, the Keras flavours are named in one module, and no
module outgrows one job."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_maskloss"
MAX_LINES = 500

# What each part may import from the package (beyond itself). compat is the bottom layer; the
# three products sit on it and never import each other, except that the plugin drives the
# check. Nothing imports the plugin's hook module (pytest_maskloss.plugin itself).
ALLOWED = {
    "errors": set(),
    "compat": {"errors"},
    "check": {"errors", "compat"},
    "keras": {"compat", "errors"},
    "plugin": {"errors", "compat", "check"},
    "scan": {"compat", ""},  # "": the package root, for __version__
    "reference": {"check"},
    "cli": {"scan", ""},
    "": {"errors", "check"},  # the package's __init__ (lazy re-exports)
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set:
    """Every module of the package that ``name`` imports, at any depth of the file (function-level
    imports included: a lazy import still ties two modules together), through
    ``importlib.import_module("pytest_maskloss.x")``, a ``LazyModule("pytest_maskloss.x")`` proxy
    or a lazy re-export table
    (``_LAZY = {...: "pytest_maskloss.x"}``)."""
    known = modules()
    found = set()
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = set()  # `if TYPE_CHECKING:` imports never run
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            targets = [v.value for v in getattr(node.value, "values", []) if isinstance(v, ast.Constant)]
        elif isinstance(node, ast.Call) and (getattr(node.func, "attr", None) == "import_module"
                                             or getattr(node.func, "id", None) == "LazyModule") and node.args:
            first = node.args[0]
            targets = [first.value] if isinstance(first, ast.Constant) and isinstance(first.value, str) else []
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("pytest_maskloss") and target != name:
                found.add(target)
    return found


def graph():
    return {name: imports_of(name, path) for name, path in modules().items()}


def part_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycles(edges) -> list:
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles():
    assert find_cycles(graph()) == []


def test_the_checks_see_cycles_and_lazy_imports():
    """They must not pass because they see nothing."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    edges = graph()
    assert "pytest_maskloss.check.observation" in edges["pytest_maskloss.plugin.audit"]  # inside a function
    assert "pytest_maskloss.scan.analysis" in edges["pytest_maskloss.scan.engine"]  # a LazyModule proxy
    assert "pytest_maskloss.check.api" in edges["pytest_maskloss"]  # a lazy re-export table
    assert "pytest_maskloss.compat.flavours" in edges["pytest_maskloss.check.lossspec"]


def test_each_part_imports_only_the_layers_below_it():
    wrong = []
    for name, targets in graph().items():
        part = part_of(name)
        for target in targets:
            other = part_of(target)
            if other != part and other not in ALLOWED.get(part, set()):
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_nothing_imports_the_plugin_hook_module():
    importers = [name for name, targets in graph().items() if "pytest_maskloss.plugin" in targets]
    assert importers == []


def _flavour_names():
    tree = ast.parse((PACKAGE / "compat" / "flavours.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if any(isinstance(t, ast.Name) and t.id in ("KERAS3", "TF_KERAS", "TF_DOT_KERAS") for t in node.targets):
                names.add(node.value.value)
    return names


def test_exactly_one_module_names_the_keras_flavours():
    names = _flavour_names()
    assert names == {"keras3", "tf_keras", "tf.keras"}
    stacks = {f"keras3-{b}" for b in ("tensorflow", "jax", "torch", "numpy")}
    spelled = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (node.value in names | stacks):
                spelled.setdefault(name, set()).add(node.value)
    assert set(spelled) == {"pytest_maskloss.compat.flavours"}, spelled


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_outgrows_one_job(name):
    path = modules()[name]
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{name} has no docstring saying what it is for"
