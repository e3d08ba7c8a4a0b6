"""MSK001's design as one Fixit 2.x lint rule, for the benchmark only: each ``compile(...)`` with
a stock Keras loss in a module that builds a masked model (``Embedding(mask_zero=True)``, by
keyword or 6th/7th positional argument, or ``Masking``), unless the module consumes the mask
(a recurrent layer without ``return_sequences=True``, global pooling) and returns no sequences.
Per module, the closest one Fixit visitor gets without the scanner's model graph. Names resolve
through ``QualifiedNameProvider`` (made canonical with the scanner's table), else by their last
component in a module importing Keras. ``bench.py`` writes the ``fixit.toml`` enabling it."""

from __future__ import annotations

import libcst as cst
from fixit import LintRule
from libcst.metadata import QualifiedNameProvider

from pytest_maskloss.compat.flavours import KERAS_PACKAGES as KERAS_ROOTS
from pytest_maskloss.scan.kerasnames import GLOBAL_POOLING, LOSS_STRINGS, RNN_LAYERS, canonical


def _dotted(node) -> str | None:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr.value}"
    return None


def _true(node) -> bool:
    return isinstance(node, cst.Name) and node.value == "True"


def _arg(call: cst.Call, keyword: str, position: int):
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a.value
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[position].value if len(positional) > position else None


class MaskedModelStockLoss(LintRule):
    """A masked sequence model compiled with a stock Keras loss."""

    MESSAGE = "MSK001 masked model compiled with a stock Keras loss: the reported loss may count padding"
    METADATA_DEPENDENCIES = (QualifiedNameProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.imports_keras = self.masked = self.sequences = self.consumed = False
        self.stock_vars: set[str] = set()
        self.compiles: list[cst.Call] = []

    def _leaves(self, func) -> set[str]:
        leaves = {canonical(q.name).rsplit(".", 1)[-1] for q in self.get_metadata(QualifiedNameProvider, func, set())
                  if canonical(q.name).startswith("keras.")}
        if not leaves and self.imports_keras and _dotted(func):
            leaves.add(_dotted(func).rsplit(".", 1)[-1])
        return leaves

    def _stock(self, expr) -> bool:
        if isinstance(expr, cst.SimpleString):
            return expr.evaluated_value in LOSS_STRINGS
        if isinstance(expr, cst.Name) and expr.value in self.stock_vars:
            return True
        if isinstance(expr, cst.Dict):
            return any(isinstance(e, cst.DictElement) and self._stock(e.value) for e in expr.elements)
        if isinstance(expr, (cst.List, cst.Tuple)):
            return any(self._stock(e.value) for e in expr.elements)
        target = expr.func if isinstance(expr, cst.Call) else expr
        return isinstance(target, (cst.Name, cst.Attribute)) and bool(self._leaves(target) & LOSS_STRINGS)

    def visit_Import(self, node: cst.Import) -> None:
        self.imports_keras |= any((_dotted(a.name) or "").split(".")[0] in KERAS_ROOTS for a in node.names)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        self.imports_keras |= node.module is not None and (_dotted(node.module) or "").split(".")[0] in KERAS_ROOTS

    def visit_Assign(self, node: cst.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
            if not isinstance(node.value, cst.SimpleString) and self._stock(node.value):
                self.stock_vars.add(node.targets[0].target.value)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "compile":
            loss = _arg(node, "loss", 1)
            if _dotted(func.value) not in ("re", "regex", "torch") and loss is not None and self._stock(loss):
                self.compiles.append(node)
            return
        leaf = (_dotted(func) or "").rsplit(".", 1)[-1]
        if leaf not in {"Embedding", "Masking"} | RNN_LAYERS | GLOBAL_POOLING:
            return
        leaves = self._leaves(func)
        if "Masking" in leaves:
            self.masked = True
        elif "Embedding" in leaves:
            self.masked |= _true(_arg(node, "mask_zero", 99)) or any(_true(_arg(node, "-", p)) for p in (5, 6))
        elif leaves & RNN_LAYERS:
            if _true(_arg(node, "return_sequences", 99)):
                self.sequences = True
            else:
                self.consumed = True
        elif leaves & GLOBAL_POOLING:
            self.consumed = True

    def leave_Module(self, original_node: cst.Module) -> None:
        if self.masked and not (self.consumed and not self.sequences):
            for call in self.compiles:
                self.report(call)
