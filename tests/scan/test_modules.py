"""The scanner's modules: the low-level ones know nothing of the interpreter, each imports alone
in a fresh interpreter, and libcst is imported only where it is needed (a scan whose files all
fail the prefilter never imports it). Cycles, sizes and docstrings of every module of the
package are checked in tests/test_layout.py."""

import ast
import json
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


ROOT = pathlib.Path(__file__).resolve().parents[2]
SCAN = ROOT / "pytest_maskloss" / "scan"
PACKAGE = "pytest_maskloss.scan"
# modules that need libcst as soon as they are imported (the engine reaches them lazily)
LIBCST_AT_IMPORT = {"analysis", "interpreter", "semantics", "fixer"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(SCAN.rglob("*.py")):
        rel = path.relative_to(SCAN).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join([PACKAGE, *parts])] = path
    out["pytest_maskloss.cli"] = ROOT / "pytest_maskloss" / "cli.py"
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
    """Project modules ``name`` imports anywhere in its text: import statements (module level
    or inside functions) and ``LazyModule("...")`` proxies."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # ``if TYPE_CHECKING:`` imports never run
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LazyModule" and node.args:
            if isinstance(node.args[0], ast.Constant):
                found.add(node.args[0].value)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_values_know_nothing_of_the_interpreter():
    for low in (f"{PACKAGE}.values", f"{PACKAGE}.syntax", f"{PACKAGE}.findings", f"{PACKAGE}.kerasnames"):
        assert not _closure(low) & {f"{PACKAGE}.interpreter", f"{PACKAGE}.semantics", f"{PACKAGE}.analysis"}, low


def _closure(name):
    seen, todo = set(), [name]
    while todo:
        for dep in GRAPH[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


PROBE = """
import json, sys
name = sys.argv[1]
allowed = set(json.loads(sys.argv[2]))
class Block:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(("pytest_maskloss.scan.", "pytest_maskloss.cli")) and fullname not in allowed:
            raise ImportError(f"{name} imported {fullname}, which its import statements do not name")
        return None
sys.meta_path.insert(0, Block())
__import__(name)
print(json.dumps({"libcst": "libcst" in sys.modules,
                  "heavy": sorted(m for m in ("tensorflow", "keras", "numpy", "tf_keras", "jax") if m in sys.modules)}))
"""


def _probe(name):
    # everything the module's import statements name, transitively, and the packages above
    # them (importing a module runs its package's __init__ first) with what those name
    allowed, todo = set(), [name]
    while todo:
        m = todo.pop()
        if m in allowed:
            continue
        allowed.add(m)
        todo += list(GRAPH.get(m, ())) + [m.rsplit(".", i)[0] for i in range(1, m.count(".") + 1)]
    proc = subprocess.run([sys.executable, "-c", PROBE, name, json.dumps(sorted(allowed))],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    return name, proc


def test_each_module_imports_alone_in_a_fresh_interpreter():
    """Other project modules are blocked unless the module names them; libcst only where a
    module needs it at import time; never TensorFlow, Keras or numpy."""
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_probe, sorted(MODULES)))
    for name, proc in results:
        assert proc.returncode == 0, f"{name}:\n{proc.stderr[-2000:]}"
        seen = json.loads(proc.stdout)
        assert not seen["heavy"], (name, seen)
        short = name.rsplit(".", 1)[-1]
        if short not in LIBCST_AT_IMPORT:
            assert not seen["libcst"], f"{name} imports libcst at import time"


def test_a_scan_of_files_the_prefilter_rules_out_never_imports_libcst(tmp_path):
    (tmp_path / "util.py").write_text("import os\n\ndef f(x):\n    return os.path.join(x, 'y')\n")
    (tmp_path / "nb.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "print(1)"}]}')
    probe = (
        "import sys; from pytest_maskloss.cli import main; code = main(['scan', sys.argv[1], '-q']); "
        "assert code == 0, code; assert 'libcst' not in sys.modules, 'libcst imported'"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
