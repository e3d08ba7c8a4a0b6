"""The shared analysis every rule reads: an abstract interpretation of one module.

The module's statements are walked in order (flow-insensitively: both branches of an ``if``,
every ``try`` handler) with an environment mapping names to abstract values: Keras names
(from any import form, assignment aliases and ``try``/``except`` imports, where a name can hold
several qualified names and matches if any does), layers, tensors with a mask state, models,
losses, fit histories. Facts the rules need (compile calls, fit/evaluate calls, ``exp`` of a
reported loss, masks dropped by a layer, ``Loss`` subclasses) are recorded on the way.

Names imported from other modules of the same project are resolved by analysing those modules
(``ProjectIndex``), so a model built in ``models.py`` and compiled in ``train.py`` is linked.

Nothing is imported or executed: only the text is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import libcst as cst

from pytest_maskloss.scan import kerasnames as K

NONE, MASKED, UNKNOWN = "none", "masked", "unknown"


def merge(states) -> str:
    states = list(states)
    if MASKED in states:
        return MASKED
    if UNKNOWN in states:
        return UNKNOWN
    return NONE


# ------------------------------------------------------------------------------------------
# abstract values


@dataclass(frozen=True)
class Loc:
    module: "ModuleAnalysis"
    unit: int
    node: cst.CSTNode
    top: object = None  # the top-level statement holding the node (cheap positions)

    @property
    def path(self) -> str:
        return self.module.path


@dataclass(eq=False)
class Qual:
    """A name that resolves to one or more dotted names (imports, aliases)."""

    names: frozenset

    def attr(self, name: str) -> "Qual":
        return Qual(frozenset(f"{q}.{name}" for q in self.names))

    def keras_leaves(self) -> set:
        return {leaf for q in self.names if (leaf := K.keras_leaf(q)) is not None}

    def canon(self) -> set:
        return {K.canonical(q) for q in self.names}

    def leaves(self) -> set:
        return {q.rsplit(".", 1)[-1] for q in self.names}

    def under(self, *prefixes: str) -> bool:
        return any(c == p or c.startswith(p + ".") for c in self.canon() for p in prefixes)


@dataclass(eq=False)
class Str:
    value: str


@dataclass(eq=False)
class Const:
    value: object


@dataclass(eq=False)
class ListV:
    items: list
    kind: str = "list"


@dataclass(eq=False)
class DictV:
    items: list  # (key value, value, key node, value node)


@dataclass(eq=False)
class LayerV:
    kind: str  # source | plain | consumer | dropper | pass | merge | unknown
    name: str
    loc: Loc
    inner: "LayerV | None" = None


@dataclass(eq=False)
class TensorV:
    state: str
    sources: tuple = ()  # Locs of the mask sources


@dataclass(eq=False)
class ModelV:
    kind: str  # sequential | functional | subclass | unknown
    name: str
    loc: Loc
    layers: list = field(default_factory=list)  # sequential: (value, Loc)
    out: TensorV | None = None
    cls: "ClassRef | None" = None
    compiles: list = field(default_factory=list)
    _state: TensorV | None = None
    _computing: bool = False

    def output(self) -> TensorV:
        if self._state is not None:
            return self._state
        if self._computing:
            return TensorV(UNKNOWN)
        self._computing = True
        try:
            if self.kind == "sequential":
                t = TensorV(NONE)
                for value, loc in self.layers:
                    t = apply_layer(value, t, loc)
                result = t
            elif self.kind == "functional":
                result = self.out or TensorV(UNKNOWN)
            elif self.kind == "subclass" and self.cls is not None:
                result = self.cls.model_output()
            else:
                result = TensorV(UNKNOWN)
        finally:
            self._computing = False
        self._state = result
        return result

    def touch(self) -> None:
        """Forget a cached output (after ``.add``)."""
        self._state = None


@dataclass(eq=False)
class LossV:
    kind: str  # stock | custom_fn | custom_cls | masked | unknown
    name: str
    loc: Loc | None = None
    reduction: str | None = None  # literal reduction keyword, "?" when not a literal
    ref: object = None  # FuncRef / ClassRef for custom losses
    call_node: cst.Call | None = None  # the instantiation, for fixes


@dataclass(eq=False)
class FuncRef:
    node: cst.FunctionDef
    module: "ModuleAnalysis"
    unit: int
    cls: "ClassRef | None" = None
    top: object = None
    _ret: object = None
    _state: str = "new"  # new | running | done

    def returns(self):
        if self._state == "done":
            return self._ret
        if self._state == "running":
            return None
        self._state = "running"
        try:
            self._ret = self.module.run_function(self)
        finally:
            self._state = "done"
        return self._ret


@dataclass(eq=False)
class ClassRef:
    node: cst.ClassDef
    module: "ModuleAnalysis"
    unit: int
    kind: str = "other"  # model | layer | loss | other
    top: object = None
    mask: str = "unknown"  # for layers: source | pass | unknown
    methods: dict = field(default_factory=dict)
    self_attrs: dict = field(default_factory=dict)
    base_refs: list = field(default_factory=list)
    model: ModelV | None = None
    _init_done: bool = False
    _out: TensorV | None = None
    _out_running: bool = False

    @property
    def name(self) -> str:
        return self.node.name.value

    def ensure_init(self) -> None:
        if self._init_done:
            return
        self._init_done = True
        for base in self.base_refs:
            if isinstance(base, ClassRef):
                base.ensure_init()
                for k, v in base.self_attrs.items():
                    self.self_attrs.setdefault(k, v)
        init = self.methods.get("__init__") or self.methods.get("build")
        if init is not None:
            init.returns()
        build = self.methods.get("build")
        if build is not None and build is not init:
            build.returns()

    def find_method(self, name):
        if name in self.methods:
            return self.methods[name]
        for base in self.base_refs:
            if isinstance(base, ClassRef):
                m = base.find_method(name)
                if m is not None:
                    return m
        return None

    def model_output(self) -> TensorV:
        if self._out is not None:
            return self._out
        if self._out_running:
            return TensorV(UNKNOWN)
        self._out_running = True
        try:
            self.ensure_init()
            call = self.find_method("call")
            if call is None:
                out = TensorV(UNKNOWN)
            else:
                ret = call.module.run_function(call, first_param=TensorV(NONE))
                out = tensor_of(ret)
        finally:
            self._out_running = False
        self._out = out
        return out


@dataclass(eq=False)
class HistoryV:
    model: object


@dataclass(eq=False)
class HistoryDictV:
    model: object


@dataclass(eq=False)
class ReportedLossV:
    model: object
    what: str  # description for messages


@dataclass(eq=False)
class EvalV:
    model: object


@dataclass(eq=False)
class ParamV:
    name: str


@dataclass(eq=False)
class PerTokenV:
    """A per-token loss tensor (result of a Keras loss function or a *_with_logits op)."""


@dataclass(eq=False)
class ReductionV:
    loc: Loc
    over_time: bool
    axis_text: str


@dataclass(eq=False)
class PaddingV:
    """A value computed by comparing labels with a padding id (``y != 0``)."""


@dataclass(eq=False)
class SelfV:
    cls: ClassRef


# ------------------------------------------------------------------------------------------
# helpers


def tensor_of(value) -> TensorV:
    if isinstance(value, TensorV):
        return value
    if isinstance(value, ListV):
        ts = [tensor_of(v) for v in value.items]
        return TensorV(merge(t.state for t in ts), _sources(ts))
    if isinstance(value, DictV):
        ts = [tensor_of(v) for _, v, _, _ in value.items]
        return TensorV(merge(t.state for t in ts), _sources(ts))
    if isinstance(value, ModelV):
        return value.output()
    return TensorV(UNKNOWN)


def _sources(ts) -> tuple:
    """The mask sources of merged tensors: distinct, at most 3 (``x = Add()([x, x])`` in a loop
    must not double them each time)."""
    out = []
    for t in ts:
        for s in t.sources:
            if s not in out:
                out.append(s)
                if len(out) == 3:
                    return tuple(out)
    return tuple(out)


def apply_layer(layer, t: TensorV, loc: Loc | None = None) -> TensorV:
    """What a layer does to the mask of its input."""
    if isinstance(layer, ModelV):
        inner = layer.output()
        if inner.state == NONE and t.state == MASKED:
            return TensorV(UNKNOWN)
        return inner
    if isinstance(layer, ListV):  # nested list in Sequential: unusual
        return TensorV(UNKNOWN)
    if not isinstance(layer, LayerV):
        return TensorV(UNKNOWN) if t.state != NONE else t
    kind = layer.kind
    if kind == "source":
        return TensorV(MASKED, (layer.loc,))
    if kind in ("plain", "consumer"):
        return TensorV(NONE)
    if kind == "dropper":
        if t.state == MASKED:
            layer.loc.module.record_drop(layer, t)
        return TensorV(NONE)
    if kind in ("pass", "merge"):
        return t
    return TensorV(UNKNOWN) if t.state != NONE else t


def is_truthy_literal(value) -> bool | None:
    if isinstance(value, Const):
        return bool(value.value)
    if isinstance(value, Str):
        return bool(value.value)
    return None


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


def _int_of(node) -> int | None:
    if isinstance(node, cst.Integer):
        try:
            return int(node.value, 0)
        except ValueError:
            return None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        v = _int_of(node.expression)
        return -v if v is not None else None
    return None


# ------------------------------------------------------------------------------------------
# facts


@dataclass(eq=False)
class CompileFact:
    loc: Loc
    model: ModelV
    losses: list  # (value, node)


@dataclass(eq=False)
class FitFact:
    loc: Loc
    method: str
    model: object
    sample_weight: object
    sw_node: cst.CSTNode


@dataclass(eq=False)
class ExpFact:
    loc: Loc
    reported: ReportedLossV


@dataclass(eq=False)
class DropFact:
    layer: LayerV
    sources: tuple


# ------------------------------------------------------------------------------------------
# the interpreter


class Env:
    __slots__ = ("vars", "parent", "func")

    def __init__(self, parent=None, func=None):
        self.vars = {}
        self.parent = parent
        self.func = func

    def get(self, name):
        env = self
        while env is not None:
            if name in env.vars:
                return env.vars[name]
            env = env.parent
        return None

    def has(self, name):
        env = self
        while env is not None:
            if name in env.vars:
                return True
            env = env.parent
        return False


class _Return(Exception):
    pass


class ModuleAnalysis:
    """Analysis of one file: its units (a file, or the code cells of a notebook) share one
    global environment."""

    def __init__(self, path, units, modules, target, index=None, module_name=None):
        self.path = path
        self.units = units  # list of source.Unit
        self.modules = modules  # parsed cst.Module per unit (None when it failed)
        self.target = target
        self.index = index
        self.module_name = module_name or os.path.splitext(os.path.basename(path))[0]
        self.globals = Env()
        self.star_imports: list[str] = []
        self.compiles: list[CompileFact] = []
        self.fits: list[FitFact] = []
        self.exps: list[ExpFact] = []
        self.drops: dict[int, DropFact] = {}
        self.classes: list[ClassRef] = []
        self.functions: list[FuncRef] = []
        self.models: list[ModelV] = []
        self.unit = 0
        self.top = None
        self._memo = {}
        self.done = False
        self.running = False
        self._depth = 0

    # -- entry point -----------------------------------------------------------------
    def run(self) -> "ModuleAnalysis":
        if self.done or self.running:
            return self
        self.running = True
        try:
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
        finally:
            self.running = False
            self.done = True
        return self

    # -- positions and edits (used by rules and fixes) ---------------------------------
    display_path: str = ""

    def _positions(self, unit: int):
        cache = self.__dict__.setdefault("_pos", {})
        if unit not in cache:
            from libcst.metadata import MetadataWrapper, PositionProvider

            wrapper = MetadataWrapper(self.modules[unit], unsafe_skip_copy=True)
            cache[unit] = wrapper.resolve(PositionProvider)
        return cache[unit]

    def _top_offsets(self, unit: int):
        """id(top-level statement) -> number of lines before it."""
        cache = self.__dict__.setdefault("_tops", {})
        if unit not in cache:
            mod = self.modules[unit]
            lines = sum(mod.code_for_node(el).count("\n") for el in mod.header)
            table = {}
            for stmt in mod.body:
                table[id(stmt)] = lines
                lines += mod.code_for_node(stmt).count("\n")
            cache[unit] = table
        return cache[unit]

    def _stmt_positions(self, unit: int, stmt):
        cache = self.__dict__.setdefault("_stmt_pos", {})
        key = (unit, id(stmt))
        if key not in cache:
            from libcst.metadata import MetadataWrapper, PositionProvider

            mod = self.modules[unit]
            mini = cst.Module(body=[stmt], header=[], footer=[], default_indent=mod.default_indent, default_newline=mod.default_newline)
            cache[key] = MetadataWrapper(mini, unsafe_skip_copy=True).resolve(PositionProvider)
        return cache[key]

    def position(self, loc: "Loc"):
        """(line, col0, end_line, end_col0) of a node, or None."""
        try:
            if loc.top is not None and id(loc.top) in loc.module._top_offsets(loc.unit):
                shift = loc.module._top_offsets(loc.unit)[id(loc.top)]
                rng = loc.module._stmt_positions(loc.unit, loc.top).get(loc.node)
                if rng is not None:
                    return rng.start.line + shift, rng.start.column, rng.end.line + shift, rng.end.column
            rng = loc.module._positions(loc.unit).get(loc.node)
        except Exception:
            return None
        if rng is None:
            return None
        return rng.start.line, rng.start.column, rng.end.line, rng.end.column

    def offset(self, unit: int, line: int, col: int) -> int:
        starts = self.__dict__.setdefault("_line_starts", {})
        if unit not in starts:
            text = self.units[unit].text
            table = [0]
            for i, ch in enumerate(text):
                if ch == "\n":
                    table.append(i + 1)
            starts[unit] = table
        table = starts[unit]
        return table[min(line - 1, len(table) - 1)] + col

    def code_for(self, loc: "Loc") -> str:
        return self.modules[loc.unit].code_for_node(loc.node)

    def replace_edit(self, loc: "Loc", text: str):
        pos = self.position(loc)
        start = self.offset(loc.unit, pos[0], pos[1])
        end = self.offset(loc.unit, pos[2], pos[3])
        return (loc.unit, start, end, text)

    def import_edits(self, unit: int, module: str):
        """An edit adding ``import module`` after the docstring and __future__ imports of the
        first unit, unless the module is imported already."""
        for value in self.globals.vars.values():
            if isinstance(value, Qual) and any(q == module or q.startswith(module + ".") for q in value.names):
                return []
        first = 0
        while first < len(self.modules) and self.modules[first] is None:
            first += 1
        if first >= len(self.modules):
            return []
        mod = self.modules[first]
        index = 0
        for i, stmt in enumerate(mod.body):
            if isinstance(stmt, cst.SimpleStatementLine) and stmt.body and (
                (i == 0 and isinstance(stmt.body[0], cst.Expr) and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))
                or (isinstance(stmt.body[0], cst.ImportFrom) and dotted(stmt.body[0].module) == "__future__")
            ):
                index = i + 1
                continue
            break
        if index < len(mod.body):
            pos = self.position(Loc(self, first, mod.body[index]))
            if pos is None:
                return []
            offset = self.offset(first, pos[0], 0)
        else:
            offset = len(self.units[first].text)
            if offset and not self.units[first].text.endswith("\n"):
                return [(first, offset, offset, "\nimport " + module + "\n")]
        return [(first, offset, offset, f"import {module}\n")]

    def record_drop(self, layer: LayerV, t: TensorV) -> None:
        self.drops.setdefault(id(layer.loc.node), DropFact(layer, t.sources))

    def loc(self, node) -> Loc:
        return Loc(self, self.unit, node, self.top)

    # -- statements ------------------------------------------------------------------
    def exec_block(self, body, env) -> None:
        for stmt in body:
            try:
                self.exec_stmt(stmt, env)
            except _Return:
                raise
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
        parts = self.module_name.split(".")
        is_pkg = os.path.basename(self.path).startswith("__init__.")
        pkg = parts if is_pkg else parts[:-1]
        if level - 1 > len(pkg):
            return None
        pkg = pkg[: len(pkg) - (level - 1)]
        return ".".join(p for p in pkg + ([base] if base else []) if p)

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
        kinds = set()
        for arg in stmt.bases:
            if arg.keyword is not None:
                continue
            base = self.deref(self.eval(arg.value, env))
            ref.base_refs.append(base)
            if isinstance(base, Qual):
                leaves = base.keras_leaves()
                if leaves & K.MODELS or leaves & K.SEQUENTIAL:
                    kinds.add("model")
                elif leaves & (K.LOSS_BASES | K.LOSS_CLASSES):
                    kinds.add("loss")
                elif leaves:
                    kinds.add("layer")
                    if leaves & (K.MASK_SOURCES | K.RNN_LAYERS):
                        ref.mask = "pass"
            elif isinstance(base, ClassRef):
                kinds.add(base.kind)
                if base.mask != "unknown":
                    ref.mask = base.mask
        for k in ("model", "loss", "layer"):
            if k in kinds:
                ref.kind = k
                break
        cenv = Env(parent=env, func=ref)
        self.exec_suite(stmt.body, cenv)
        for name, value in cenv.vars.items():
            if name == "supports_masking" and is_truthy_literal(value) and ref.mask == "unknown":
                ref.mask = "pass"
        if "compute_mask" in ref.methods:
            ref.mask = "source" if not _returns_only_none(ref.methods["compute_mask"].node) else "plain"
        elif ref.kind == "layer" and ref.mask == "unknown":
            init = ref.methods.get("__init__")
            if init is not None and _sets_supports_masking(init.node):
                ref.mask = "pass"
        if ref.kind == "model":
            ref.model = ModelV("subclass", stmt.name.value, self.loc(stmt), cls=ref)
            self.models.append(ref.model)
        env.vars[stmt.name.value] = ref
        self.classes.append(ref)

    def run_function(self, ref: FuncRef, first_param=None):
        if self._depth > 30:
            return None
        self._depth += 1
        saved = self.unit
        saved_top = self.top
        saved_memo = self._memo
        self._memo = {}
        self.unit = ref.unit
        self.top = ref.top
        try:
            env = Env(parent=self.globals if ref.cls is None else self.globals, func=ref)
            params = list(ref.node.params.params) + list(ref.node.params.posonly_params)
            params = list(ref.node.params.posonly_params) + list(ref.node.params.params)
            if ref.cls is not None and params:
                env.vars[params[0].name.value] = ref.cls.model if ref.cls.model is not None and False else SelfV(ref.cls)
                params = params[1:]
            for i, p in enumerate(params):
                env.vars[p.name.value] = first_param if (i == 0 and first_param is not None) else ParamV(p.name.value)
            for p in ref.node.params.kwonly_params:
                env.vars[p.name.value] = ParamV(p.name.value)
            body = ref.node.body.body
            if isinstance(body, (list, tuple)):
                self.exec_block(body, env)
            ret = env.vars.get("<return>")
            if ret is None and isinstance(ref.node.body, cst.SimpleStatementSuite):
                pass
            return ret
        finally:
            self.unit = saved
            self.top = saved_top
            self._memo = saved_memo
            self._depth -= 1

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

    def deref(self, value):
        """Resolve a name imported from another module of the project."""
        if isinstance(value, Qual) and self.index is not None and not value.keras_leaves():
            for q in value.names:
                resolved = self.index.resolve(q, self.path)
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
            if isinstance(base, (HistoryDictV, EvalV, ReportedLossV, TensorV, PaddingV, ParamV, PerTokenV)):
                return _BoundMethod(base, attr)
            return None
        if isinstance(node, cst.Call):
            return self.eval_call(node, env)
        if isinstance(node, cst.SimpleString):
            try:
                val = node.evaluated_value
            except Exception:
                return None
            return Str(val) if isinstance(val, str) else None
        if isinstance(node, cst.ConcatenatedString):
            try:
                val = node.evaluated_value
            except Exception:
                return None
            return Str(val) if isinstance(val, str) else None
        if isinstance(node, cst.Integer):
            return Const(_int_of(node))
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
            arg = call_arg(call, 0, "inputs")
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            return apply_layer(func, tensor_of(value) if value is not None else TensorV(UNKNOWN), self.loc(call))
        if isinstance(func, ModelV):
            arg = call_arg(call, 0, "inputs")
            value = self.eval(arg, env) if arg is not None else None
            return apply_layer(func, tensor_of(value) if value is not None else TensorV(UNKNOWN))
        if isinstance(func, FuncRef):
            self.eval_args(call, env)
            return func.returns()
        if isinstance(func, ClassRef):
            return self.instantiate(func, call, env)
        if func is None and isinstance(call.func, cst.Name) and call.func.value in ("float", "np_float", "round", "min", "max", "list", "sum"):
            arg = call_arg(call, 0, None)
            value = self.eval(arg, env) if arg is not None else None
            return value if isinstance(value, ReportedLossV) else None
        self.eval_args(call, env)
        return None

    def instantiate(self, ref: ClassRef, call, env):
        self.eval_args(call, env)
        if ref.kind == "model":
            return ref.model
        if ref.kind == "loss":
            return LossV("custom_cls", ref.name, self.loc(call), _kw_literal(call, "reduction"), ref, call)
        if ref.kind == "layer":
            mz = call_arg(call, None, "mask_zero")
            if mz is not None and is_truthy_literal(self.eval(mz, env)) is not False:
                return LayerV("source", ref.name, self.loc(call))
            return LayerV(ref.mask if ref.mask in ("source", "pass", "plain") else "unknown", ref.name, self.loc(call))
        return None

    def model_method(self, model: ModelV, name: str, call, env):
        if name == "compile":
            losses = []
            arg = call_arg(call, 1, "loss")
            if arg is not None:
                value = self.eval(arg, env)
                losses = [(self.deref(v), n) for v, n in self.loss_items(value, arg)]
            self.eval_args(call, env)
            fact = CompileFact(self.loc(call), model, losses)
            model.compiles.append(fact)
            self.compiles.append(fact)
            return None
        if name == "add":
            arg = call_arg(call, 0, "layer")
            value = self.eval(arg, env) if arg is not None else None
            model.layers.append((value, self.loc(call)))
            model.touch()
            return None
        if name in ("fit", "fit_generator", "evaluate", "evaluate_generator", "train_on_batch", "test_on_batch"):
            sw = call_arg(call, None, "sample_weight")
            self.eval_args(call, env)
            if sw is not None:
                self.fits.append(FitFact(self.loc(call), name, model, self.eval(sw, env), sw))
            if name.startswith("fit"):
                return HistoryV(model)
            return EvalV(model)
        if name == "predict" or name == "__call__":
            self.eval_args(call, env)
            return None
        self.eval_args(call, env)
        return None

    def bound_method(self, bm: "_BoundMethod", call, env):
        base, name = bm.base, bm.name
        self.eval_args(call, env)
        if isinstance(base, HistoryDictV) and name == "get":
            arg = call_arg(call, 0, None)
            key = self.eval(arg, env) if arg is not None else None
            if isinstance(key, Str) and "loss" in key.value:
                return ReportedLossV(base.model, f'history["{key.value}"]')
            return None
        if isinstance(base, ReportedLossV):
            return base
        if isinstance(base, (PaddingV, PerTokenV)) and name in ("astype", "float", "to", "type", "numpy", "__float__"):
            return base
        if isinstance(base, EvalV):
            return None
        return None

    def loss_items(self, value, node):
        """(loss value, node) pairs of a compile ``loss=`` argument."""
        if isinstance(value, ListV) and isinstance(node, (cst.List, cst.Tuple)):
            return [(v, el.value) for v, el in zip(value.items, node.elements) if not isinstance(el, cst.StarredElement)]
        if isinstance(value, DictV) and isinstance(node, cst.Dict):
            return [(v, vn) for _, v, _, vn in value.items]
        if isinstance(value, ListV):
            return [(v, node) for v in value.items]
        if isinstance(value, DictV):
            return [(v, node) for _, v, _, _ in value.items]
        return [(value, node)]

    def qual_call(self, q: Qual, call, env):
        leaves = q.keras_leaves()
        if q.under("pytest_maskloss"):
            self.eval_args(call, env)
            return LossV("masked", sorted(q.leaves())[0], self.loc(call))
        if leaves:
            return self.keras_call(q, leaves, call, env)
        all_leaves = q.leaves()
        if all_leaves & K.EXP_FUNCS and q.under("math", "numpy", "tensorflow", "torch", "jax", "jax.numpy", "scipy", "keras"):
            arg = call_arg(call, 0, "x")
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            if isinstance(value, EvalV):
                value = ReportedLossV(value.model, "evaluate(...)")
            if isinstance(value, ReportedLossV):
                self.exps.append(ExpFact(self.loc(call), value))
            return None
        if all_leaves & K.REDUCTIONS and q.under("tensorflow", "numpy", "torch", "jax"):
            return self.reduction(q, call, env)
        if all_leaves & K.PER_TOKEN_OPS:
            self.eval_args(call, env)
            return PerTokenV()
        if all_leaves & {"not_equal", "greater", "equal", "cast", "asarray", "array", "float32", "convert_to_tensor", "where", "sequence_mask"}:
            arg = call_arg(call, 0, None)
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            if all_leaves & {"not_equal", "greater", "equal", "sequence_mask"}:
                return PaddingV()
            if isinstance(value, (PaddingV, PerTokenV, ReportedLossV)):
                return value
            return None
        mz = call_arg(call, None, "mask_zero")
        if mz is not None:
            self.eval_args(call, env)
            if is_truthy_literal(self.eval(mz, env)) is not False:
                return LayerV("source", sorted(all_leaves)[0], self.loc(call))
            return LayerV("plain", sorted(all_leaves)[0], self.loc(call))
        self.eval_args(call, env)
        return None

    def reduction(self, q: Qual, call, env):
        arg = call_arg(call, 0, None)
        value = self.eval(arg, env) if arg is not None else None
        self.eval_args(call, env)
        axis_node = call_arg(call, 1, "axis")
        if axis_node is None:
            return ReductionV(self.loc(call), True, "all axes")
        axis_value = self.eval(axis_node, env)
        axes = []
        if isinstance(axis_value, Const):
            axes = [axis_value.value]
        elif isinstance(axis_value, ListV):
            axes = [v.value for v in axis_value.items if isinstance(v, Const)]
        if isinstance(axis_value, Const) and axis_value.value is None:
            return ReductionV(self.loc(call), True, "all axes")
        text = f"axis={cst.Module([]).code_for_node(axis_node)}"
        if 1 in axes or (isinstance(value, PerTokenV) and -1 in axes):
            return ReductionV(self.loc(call), True, text)
        return PerTokenV() if isinstance(value, (PerTokenV, ParamV)) or value is None else None

    def keras_call(self, q: Qual, leaves, call, env):
        canon = q.canon()
        if leaves & K.INPUTS:
            self.eval_args(call, env)
            return TensorV(NONE)
        if leaves & K.SEQUENTIAL:
            model = ModelV("sequential", "model", self.loc(call))
            arg = call_arg(call, 0, "layers")
            if arg is not None:
                value = self.eval(arg, env)
                if isinstance(value, ListV) and isinstance(arg, (cst.List, cst.Tuple)):
                    for v, el in zip(value.items, arg.elements):
                        model.layers.append((v, Loc(self, self.unit, el.value, self.top)))
                elif value is not None:
                    model.layers.append((value, self.loc(arg)))
            self.models.append(model)
            return model
        if leaves & K.MODELS:
            outs = call_arg(call, 1, "outputs")
            self.eval_args(call, env)
            if outs is None:
                return ModelV("unknown", "model", self.loc(call))
            out = tensor_of(self.eval(outs, env))
            model = ModelV("functional", "model", self.loc(call), out=out)
            self.models.append(model)
            return model
        is_loss_ns = any(c.startswith(("keras.losses.", "keras.metrics.", "keras.backend.", "keras.ops.")) or c.count(".") == 1 for c in canon)
        if leaves & K.LOSS_CLASSES and is_loss_ns:
            self.eval_args(call, env)
            name = sorted(leaves & K.LOSS_CLASSES)[0]
            return LossV("stock", name, self.loc(call), _kw_literal(call, "reduction"), None, call)
        if leaves & K.LOSS_FUNCTIONS and is_loss_ns:
            self.eval_args(call, env)
            return PerTokenV()
        if leaves & K.REDUCTIONS and any(c.startswith(("keras.ops.", "keras.backend.")) for c in canon):
            return self.reduction(q, call, env)
        if leaves & K.EXP_FUNCS:
            arg = call_arg(call, 0, "x")
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            if isinstance(value, EvalV):
                value = ReportedLossV(value.model, "evaluate(...)")
            if isinstance(value, ReportedLossV):
                self.exps.append(ExpFact(self.loc(call), value))
            return None
        if leaves & K.MERGE_FUNCS and any(c.startswith("keras.layers.") for c in canon):
            arg = call_arg(call, 0, "inputs")
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            return tensor_of(value) if value is not None else TensorV(UNKNOWN)
        name = sorted(leaves)[0]
        if not name[:1].isupper():
            self.eval_args(call, env)
            if leaves & {"not_equal", "greater", "equal", "cast"}:
                return PaddingV()
            return None
        if name in K.MODELS | K.LOSS_BASES or any(c.startswith(("keras.optimizers", "keras.callbacks", "keras.metrics", "keras.initializers", "keras.regularizers", "keras.constraints", "keras.losses")) for c in canon):
            self.eval_args(call, env)
            return None
        return self.make_layer(name, call, env)

    def make_layer(self, name: str, call, env) -> LayerV:
        loc = self.loc(call)
        kw = {}
        for arg in call.args:
            if arg.keyword is not None:
                kw[arg.keyword.value] = arg.value
        if name == "Embedding":
            node = kw.get("mask_zero")
            if node is None:
                node = self._positional_mask_zero(call)
            self.eval_args(call, env)
            if node is not None and is_truthy_literal(self.eval(node, env)) is not False:
                return LayerV("source", name, loc)
            return LayerV("plain", name, loc)
        if name == "Masking":
            self.eval_args(call, env)
            return LayerV("source", name, loc)
        if name in K.RNN_LAYERS:
            self.eval_args(call, env)
            rs = kw.get("return_sequences")
            if rs is not None and is_truthy_literal(self.eval(rs, env)) is not False:
                return LayerV("pass", name, loc)
            return LayerV("consumer", name, loc)
        if name in K.WRAPPERS or name == "TimeDistributed":
            arg = call_arg(call, 0, "layer")
            inner = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            if name == "TimeDistributed":
                return LayerV("pass", name, loc, inner)
            if isinstance(inner, LayerV):
                return LayerV(inner.kind if inner.kind in ("consumer", "pass") else "unknown", name, loc, inner)
            return LayerV("unknown", name, loc, inner)
        if name in K.GLOBAL_POOLING:
            self.eval_args(call, env)
            return LayerV("consumer", name, loc)
        if name in K.MASK_DROPPERS:
            self.eval_args(call, env)
            if name == "Lambda" and (kw.get("mask") is not None or len([a for a in call.args if a.keyword is None]) >= 3):
                return LayerV("pass", name, loc)
            return LayerV("dropper", name, loc)
        if name in K.MERGE_LAYERS:
            self.eval_args(call, env)
            return LayerV("merge", name, loc)
        self.eval_args(call, env)
        return LayerV("pass", name, loc)

    def _positional_mask_zero(self, call):
        positions = []
        if self.target.is_keras3 is True:
            positions = [K.MASK_ZERO_POSITION_KERAS3]
        elif self.target.is_keras3 is False:
            positions = [K.MASK_ZERO_POSITION_KERAS2]
        else:
            positions = [K.MASK_ZERO_POSITION_KERAS3, K.MASK_ZERO_POSITION_KERAS2]
        for pos in positions:
            node = call_arg(call, pos, None)
            if node is not None and isinstance(node, cst.Name) and node.value == "True":
                return node
        return None


@dataclass(eq=False)
class _ModelMethod:
    model: ModelV
    name: str


@dataclass(eq=False)
class _BoundMethod:
    base: object
    name: str


@dataclass(eq=False)
class ModuleRef:
    analysis: ModuleAnalysis


def _kw_literal(call: cst.Call, name: str) -> str | None:
    node = call_arg(call, None, name)
    if node is None:
        return None
    if isinstance(node, cst.SimpleString):
        try:
            return str(node.evaluated_value)
        except Exception:
            return "?"
    if isinstance(node, cst.Attribute):  # losses_utils.ReductionV2.SUM
        return node.attr.value.lower()
    return "?"


def _returns_only_none(fn: cst.FunctionDef) -> bool:
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


def _sets_supports_masking(fn: cst.FunctionDef) -> bool:
    found = []

    class V(cst.CSTVisitor):
        def visit_Assign(self, node):
            for t in node.targets:
                if isinstance(t.target, cst.Attribute) and t.target.attr.value == "supports_masking":
                    if isinstance(node.value, cst.Name) and node.value.value == "True":
                        found.append(True)

    fn.visit(V())
    return bool(found)
