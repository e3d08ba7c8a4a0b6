"""The statement and expression interpreter: walks a module's statements in order
(flow-insensitively: both branches of an ``if``, every ``try`` handler) with environments that
map names to abstract values (:mod:`pytest_maskloss.scan.values`), binds imports, runs functions
and classes, and evaluates expressions.

What calls into Keras mean (layers, models, losses, ``compile``/``fit``) is not decided here:
:class:`Interpreter` hands those calls to hooks that
:class:`pytest_maskloss.scan.semantics.KerasSemantics` fills in.
"""

from __future__ import annotations

import os

import libcst as cst

from pytest_maskloss.scan.calls import Env, FunctionRunner
from pytest_maskloss.scan.project import relative_module
from pytest_maskloss.scan.syntax import call_arg, dotted, int_of, string_value
from pytest_maskloss.scan.values import (
    MASKED, NONE, UNKNOWN, ClassRef, Const, DatasetV, DictV, EvalV, FuncRef, HistoryDictV, HistoryV, LayerV,
    ListV, Loc, ModelV, ModuleRef, PaddingV, ParamV, PerTokenV, Qual, ReportedLossV, SelfV, Str,
    TensorV, _BoundMethod, _ModelMethod, apply_layer, merge, tensor_of,
)


class Interpreter(FunctionRunner):
    """Abstract interpretation of the parsed units of one file (a file, or the code cells of a
    notebook), which share one global environment."""

    def __init__(self, path, modules, index=None, module_name=None):
        self.path = path
        self.modules = modules  # parsed cst.Module per unit (None when it failed)
        self.index = index  # ProjectIndex: names imported from other project modules
        self.module_name = module_name or os.path.splitext(os.path.basename(path))[0]
        self.globals = Env()
        self.star_imports: list[str] = []
        self.classes: list[ClassRef] = []
        self.functions: list[FuncRef] = []
        self.models: list[ModelV] = []
        self.unit = 0
        self.top = None
        self._memo = {}
        self._depth = 0

    def loc(self, node) -> Loc:
        return Loc(self, self.unit, node, self.top)

    def run_units(self) -> None:
        """Every top-level statement in order, then every function and class body once."""
        for i, module in enumerate(self.modules):
            if module is None:
                continue
            self.unit = i
            for stmt in module.body:
                self.top = stmt
                self.exec_block([stmt], self.globals)
            self.top = None
        for f in list(self.functions):
            f.returns()
        for c in list(self.classes):
            c.ensure_init()
            for m in list(c.methods.values()):
                m.returns()
        for m in list(self.models):
            m.output()

    # -- hooks (the Keras meaning of calls and classes; see semantics.KerasSemantics) -----
    def class_bases_known(self, ref: ClassRef) -> None:
        """After a class's bases are evaluated, before its body runs."""

    def class_body_done(self, ref: ClassRef, cenv: "Env") -> None:
        """After a class's body ran in ``cenv``."""

    def model_method(self, model, name, call, env):
        self.eval_args(call, env)

    def bound_method(self, bm, call, env):
        self.eval_args(call, env)

    def qual_call(self, q, call, env):
        self.eval_args(call, env)

    def instantiate(self, ref, call, env):
        self.eval_args(call, env)

    def call_layer(self, layer, call, env):
        """A layer applied to its inputs: what it does to their mask (the first input: positional,
        ``inputs=`` or keras-hub's ``decoder_sequence=``)."""
        arg = call_arg(call, 0, "inputs") or call_arg(call, None, "decoder_sequence")
        value = self.eval(arg, env) if arg is not None else None
        self.eval_args(call, env)
        return apply_layer(layer, tensor_of(value) if value is not None else TensorV(UNKNOWN), self.loc(call))

    # -- statements ------------------------------------------------------------------
    def exec_block(self, body, env) -> None:
        for stmt in body:
            try:
                self.exec_stmt(stmt, env)
            except RecursionError:
                continue

    def exec_stmt(self, stmt, env) -> None:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self.exec_small(small, env)
        elif isinstance(stmt, cst.FunctionDef):
            ref = FuncRef(stmt, self, self.unit, cls=env.func if isinstance(env.func, ClassRef) else None, top=self.top)
            if isinstance(env.func, ClassRef):
                env.func.methods[stmt.name.value] = ref
            else:
                env.vars[stmt.name.value] = ref
                self.functions.append(ref)
        elif isinstance(stmt, cst.ClassDef):
            self.exec_class(stmt, env)
        elif isinstance(stmt, cst.If):
            self.eval(stmt.test, env)
            self.exec_suite(stmt.body, env)
            orelse = stmt.orelse
            if isinstance(orelse, cst.If):
                self.exec_stmt(orelse, env)
            elif orelse is not None:
                self.exec_suite(orelse.body, env)
        elif isinstance(stmt, (cst.For,)):
            self.eval(stmt.iter, env)
            self.assign(stmt.target, None, env)
            self.exec_suite(stmt.body, env)
            if stmt.orelse is not None:
                self.exec_suite(stmt.orelse.body, env)
        elif isinstance(stmt, cst.While):
            self.exec_suite(stmt.body, env)
            if stmt.orelse is not None:
                self.exec_suite(stmt.orelse.body, env)
        elif isinstance(stmt, (cst.Try, getattr(cst, "TryStar", cst.Try))):
            self.exec_suite(stmt.body, env)
            for h in stmt.handlers:
                self.exec_suite(h.body, env)
            if stmt.orelse is not None:
                self.exec_suite(stmt.orelse.body, env)
            if stmt.finalbody is not None:
                self.exec_suite(stmt.finalbody.body, env)
        elif isinstance(stmt, cst.With):
            for item in stmt.items:
                value = self.eval(item.item, env)
                if item.asname is not None:
                    self.assign(item.asname.name, value, env)
            self.exec_suite(stmt.body, env)
        elif hasattr(cst, "Match") and isinstance(stmt, cst.Match):
            for case in stmt.cases:
                self.exec_suite(case.body, env)

    def exec_suite(self, suite, env) -> None:
        body = suite.body
        if isinstance(body, (list, tuple)):
            self.exec_block(body, env)

    def exec_small(self, small, env) -> None:
        self._memo = {}
        if isinstance(small, cst.Assign):
            value = self.eval(small.value, env)
            for t in small.targets:
                self.assign(t.target, value, env)
        elif isinstance(small, cst.AnnAssign):
            if small.value is not None:
                self.assign(small.target, self.eval(small.value, env), env)
        elif isinstance(small, cst.AugAssign):
            self.eval(small.value, env)
        elif isinstance(small, cst.Expr):
            self.eval(small.value, env)
        elif isinstance(small, cst.Return):
            if small.value is not None and env.func is not None and isinstance(env.func, FuncRef):
                value = self.eval(small.value, env)
                if value is not None:
                    env.vars["<return>"] = value
        elif isinstance(small, cst.Import):
            for alias in small.names:
                name = dotted(alias.name)
                if name is None:
                    continue
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    self.bind_import(env, alias.asname.name.value, name)
                else:
                    top = name.split(".")[0]
                    self.bind_import(env, top, top)
        elif isinstance(small, cst.ImportFrom):
            base = dotted(small.module) if small.module is not None else ""
            if small.relative:
                base = self.resolve_relative(len(small.relative), base)
            if base is None:
                return
            if isinstance(small.names, cst.ImportStar):
                self.star_imports.append(base)
                return
            for alias in small.names:
                name = dotted(alias.name)
                if name is None:
                    continue
                local = alias.asname.name.value if alias.asname is not None and isinstance(alias.asname.name, cst.Name) else name
                self.bind_import(env, local, f"{base}.{name}" if base else name)

    def bind_import(self, env, local, qname) -> None:
        old = env.vars.get(local)
        if isinstance(old, Qual):
            env.vars[local] = Qual(old.names | {qname})
        else:
            env.vars[local] = Qual(frozenset({qname}))

    def resolve_relative(self, level: int, base: str) -> str | None:
        return relative_module(self.module_name, self.path, level, base)

    def assign(self, target, value, env) -> None:
        if isinstance(target, cst.Name):
            env.vars[target.value] = value
        elif isinstance(target, (cst.Tuple, cst.List)):
            items = value.items if isinstance(value, ListV) else None
            for i, el in enumerate(target.elements):
                sub = items[i] if items is not None and i < len(items) and not isinstance(el, cst.StarredElement) else None
                self.assign(el.value, sub, env)
        elif isinstance(target, cst.Attribute):
            base = self.eval(target.value, env)
            if isinstance(base, SelfV):
                base.cls.self_attrs[target.attr.value] = value
                if isinstance(value, ModelV) and value.name == "model":
                    value.name = f"self.{target.attr.value}"

    def exec_class(self, stmt: cst.ClassDef, env) -> None:
        ref = ClassRef(stmt, self, self.unit, top=self.top)
        for arg in stmt.bases:
            if arg.keyword is not None:
                continue
            ref.base_refs.append(self.deref(self.eval(arg.value, env), base_class=True))
        self.class_bases_known(ref)
        cenv = Env(parent=env, func=ref)
        self.exec_suite(stmt.body, cenv)
        self.class_body_done(ref, cenv)
        env.vars[stmt.name.value] = ref
        self.classes.append(ref)

    # -- expressions -----------------------------------------------------------------
    def lookup(self, name: str, env):
        value = env.get(name)
        if value is not None or env.has(name):
            return value
        for mod in self.star_imports:
            q = Qual(frozenset({f"{mod}.{name}"}))
            if q.keras_leaves() or self.index is not None:
                return q
        return None

    def deref(self, value, base_class: bool = False):
        """Resolve a name imported from another module of the project (``base_class``: the
        name is a class's base, see ``ProjectIndex.resolve``)."""
        if isinstance(value, Qual) and self.index is not None and not value.keras_leaves():
            for q in value.names:
                resolved = self.index.resolve(q, self.path, base_class)
                if resolved is not None:
                    return resolved
        return value

    def eval(self, node, env):
        # Within one statement a node is evaluated once: handlers that look at one argument
        # and then evaluate all of them would otherwise be exponential in the nesting depth
        # (``Embedding(...)(Embedding(...)(...))``).
        key = id(node)
        memo = self._memo
        if key in memo:
            return memo[key]
        try:
            value = self._eval(node, env)
        except RecursionError:
            value = None
        memo[key] = value
        return value

    def _eval(self, node, env):
        if isinstance(node, cst.Name):
            v = node.value
            if v in ("True", "False", "None"):
                return Const({"True": True, "False": False, "None": None}[v])
            return self.lookup(v, env)
        if isinstance(node, cst.Attribute):
            base = self.eval(node.value, env)
            attr = node.attr.value
            if isinstance(base, Qual):
                return base.attr(attr)  # resolved lazily (deref) where it matters
            if isinstance(base, SelfV):
                base.cls.ensure_init() if not base.cls._init_done and attr not in base.cls.self_attrs else None
                if attr in base.cls.self_attrs:
                    return base.cls.self_attrs[attr]
                if base.cls.model is not None:
                    return _ModelMethod(base.cls.model, attr)
                return None
            if isinstance(base, HistoryV) and attr == "history":
                return HistoryDictV(base.model)
            if isinstance(base, ModelV):
                return _ModelMethod(base, attr)
            if isinstance(base, ModuleRef):
                return base.analysis.globals.get(attr)
            if isinstance(base, ClassRef):
                return None
            if isinstance(base, (HistoryDictV, EvalV, ReportedLossV, TensorV, PaddingV, ParamV, PerTokenV, DatasetV)):
                return _BoundMethod(base, attr)
            return None
        if isinstance(node, cst.Call):
            return self.eval_call(node, env)
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            val = string_value(node)
            return Str(val) if isinstance(val, str) else None
        if isinstance(node, cst.Integer):
            return Const(int_of(node))
        if isinstance(node, cst.Float):
            return Const(1.0)
        if isinstance(node, cst.UnaryOperation):
            inner = self.eval(node.expression, env)
            if isinstance(inner, Const) and isinstance(node.operator, cst.Minus) and isinstance(inner.value, int):
                return Const(-inner.value)
            if isinstance(node.operator, cst.Not):
                return None
            return inner if isinstance(inner, (PerTokenV, ReportedLossV)) else None
        if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
            items = []
            for el in node.elements:
                if isinstance(el, cst.StarredElement):
                    v = self.eval(el.value, env)
                    if isinstance(v, ListV):
                        items.extend(v.items)
                    continue
                items.append(self.eval(el.value, env))
            return ListV(items, "tuple" if isinstance(node, cst.Tuple) else "list")
        if isinstance(node, cst.Dict):
            items = []
            for el in node.elements:
                if isinstance(el, cst.DictElement):
                    items.append((self.eval(el.key, env), self.eval(el.value, env), el.key, el.value))
            return DictV(items)
        if isinstance(node, cst.Subscript):
            return self.eval_subscript(node, env)
        if isinstance(node, cst.BinaryOperation):
            left = self.eval(node.left, env)
            right = self.eval(node.right, env)
            if isinstance(left, PerTokenV) or isinstance(right, PerTokenV):
                return PerTokenV()
            if isinstance(left, PaddingV) or isinstance(right, PaddingV):
                return PaddingV()
            if isinstance(left, TensorV) or isinstance(right, TensorV):
                states = [t.state for t in (left, right) if isinstance(t, TensorV)]
                return TensorV(UNKNOWN if MASKED in states else merge(states))
            if isinstance(left, ReportedLossV) and not isinstance(right, (ReportedLossV, TensorV)):
                return left
            if isinstance(left, ListV) and isinstance(right, ListV) and isinstance(node.operator, cst.Add):
                return ListV(left.items + right.items)
            return None
        if isinstance(node, cst.Comparison):
            self.eval(node.left, env)
            for c in node.comparisons:
                self.eval(c.comparator, env)
            if any(isinstance(c.operator, (cst.NotEqual, cst.GreaterThan, cst.Equal, cst.GreaterThanEqual)) for c in node.comparisons):
                return PaddingV()
            return None
        if isinstance(node, cst.IfExp):
            a = self.eval(node.body, env)
            b = self.eval(node.orelse, env)
            return a if a is not None else b
        if isinstance(node, cst.NamedExpr):
            value = self.eval(node.value, env)
            self.assign(node.target, value, env)
            return value
        if isinstance(node, cst.Await):
            return self.eval(node.expression, env)
        if isinstance(node, cst.BooleanOperation):
            a = self.eval(node.left, env)
            b = self.eval(node.right, env)
            return a if a is not None else b
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            return None
        if isinstance(node, cst.Lambda):
            return None
        return None

    def eval_subscript(self, node: cst.Subscript, env):
        base = self.eval(node.value, env)
        index = None
        if len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index):
            index = self.eval(node.slice[0].slice.value, env)
        if isinstance(base, HistoryDictV):
            if isinstance(index, Str) and "loss" in index.value:
                return ReportedLossV(base.model, f'history["{index.value}"]')
            return None
        if isinstance(base, ReportedLossV):
            return base
        if isinstance(base, EvalV):
            if (isinstance(index, Const) and index.value == 0) or (isinstance(index, Str) and index.value == "loss"):
                return ReportedLossV(base.model, "evaluate(...)")
            return None
        if isinstance(base, TensorV):
            return TensorV(NONE)
        if isinstance(base, ListV) and isinstance(index, Const) and isinstance(index.value, int):
            try:
                return base.items[index.value]
            except IndexError:
                return None
        if isinstance(base, DictV) and isinstance(index, Str):
            for k, v, _, _ in base.items:
                if isinstance(k, Str) and k.value == index.value:
                    return v
        if isinstance(base, (PerTokenV, PaddingV)):
            return base
        return None

    # -- calls -------------------------------------------------------------------------
    def eval_args(self, call, env):
        for arg in call.args:
            self.eval(arg.value, env)

    def eval_call(self, call: cst.Call, env):
        func = self.eval(call.func, env)
        func = self.deref(func) if isinstance(func, Qual) else func
        if isinstance(func, _ModelMethod):
            return self.model_method(func.model, func.name, call, env)
        if isinstance(func, _BoundMethod):
            return self.bound_method(func, call, env)
        if isinstance(func, Qual):
            return self.qual_call(func, call, env)
        if isinstance(func, LayerV):
            return self.call_layer(func, call, env)
        if isinstance(func, ModelV):
            arg = call_arg(call, 0, "inputs")
            value = self.eval(arg, env) if arg is not None else None
            return apply_layer(func, tensor_of(value) if value is not None else TensorV(UNKNOWN))
        if isinstance(func, FuncRef):
            bound = self.bind_call(func, call, env)
            self.eval_args(call, env)
            return func.returns_with(bound) if bound else func.returns()
        if isinstance(func, ClassRef):
            return self.instantiate(func, call, env)
        if func is None and isinstance(call.func, cst.Name) and call.func.value in ("float", "np_float", "round", "min", "max", "list", "sum"):
            arg = call_arg(call, 0, None)
            value = self.eval(arg, env) if arg is not None else None
            return value if isinstance(value, ReportedLossV) else None
        self.eval_args(call, env)
        return None
