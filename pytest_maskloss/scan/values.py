"""The abstract values the interpreter computes (Keras names, layers, tensors with a mask
state, models, losses, fit histories, ...), what a layer does to a mask, and the facts the rules
read (compile and fit calls, ``exp`` of a reported loss, dropped masks).

Plain data: no libcst import (nodes are only held), no interpreter import (values that run code,
``FuncRef.returns`` and ``ClassRef.model_output``, call back into the module that made them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_maskloss.scan import kerasnames as K

if TYPE_CHECKING:  # annotations only
    import libcst as cst

    from pytest_maskloss.scan.interpreter import Interpreter

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
    module: "Interpreter"
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
    # the attention layer (LayerV) that cleared this tensor's mask when it was its query, value
    # or key (MultiHeadAttention on Keras >= 3.8); ``state`` is then NONE for later uses
    cleared: object = None
    cleared_sources: tuple = ()


@dataclass(eq=False)
class ModelV:
    kind: str  # sequential | functional | subclass | unknown
    name: str
    loc: Loc
    layers: list = field(default_factory=list)  # sequential: (value, Loc)
    out: TensorV | None = None
    cls: "ClassRef | None" = None
    compiles: list = field(default_factory=list)
    # KerasHub tasks: (task kind such as "CausalLM", has a preprocessor, compiled by __init__)
    task: tuple | None = None
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
            elif self.kind == "task":
                result = TensorV(NONE)  # KerasHub backbones carry no Keras mask
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
    ignore_class: object = None  # the ignore_class= value (Const, or "?" when not a literal)


@dataclass(eq=False)
class FuncRef:
    node: cst.FunctionDef
    module: "Interpreter"
    unit: int
    cls: "ClassRef | None" = None
    top: object = None
    _ret: object = None
    _state: str = "new"  # new | running | done
    _calls: dict = field(default_factory=dict)  # argument key -> (bound values, result)

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

    def returns_with(self, bound: dict):
        """The result of a call whose arguments are known (``bound``: parameter -> value): the
        body runs again with them, once per distinct set of arguments (at most
        ``MAX_CALL_CONTEXTS``; beyond that, and for a recursive call, the call-free result)."""
        key = tuple(sorted((name, _value_key(v)) for name, v in bound.items()))
        if key in self._calls:
            return self._calls[key][1]
        if len(self._calls) >= MAX_CALL_CONTEXTS:
            return self.returns()
        self._calls[key] = (bound, None)  # a recursive call with the same arguments sees None
        ret = self.module.run_function(self, bound=bound)
        self._calls[key] = (bound, ret)
        return ret


MAX_CALL_CONTEXTS = 8


def _value_key(value):
    """What makes two argument values the same call (identity for everything but literals and
    names; the values themselves are kept alive beside the key)."""
    if isinstance(value, (Const, Str)):
        return (type(value).__name__, repr(value.value))
    if isinstance(value, Qual):
        return ("Qual", tuple(sorted(value.names)))
    return ("id", id(value))


@dataclass(eq=False)
class ClassRef:
    node: cst.ClassDef
    module: "Interpreter"
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
class DatasetV:
    """A ``tf.data`` dataset; ``padding_weights``: its elements are ``(x, y, sample_weight)`` with
    the weights computed from a padding comparison (``dataset.map(f)``, ``f`` returning
    ``features, labels, labels != 0``)."""

    padding_weights: bool = False


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
    if t.cleared is not None and kind not in ("source", "plain"):
        t.cleared.loc.module.record_drop(t.cleared, TensorV(MASKED, t.cleared_sources), "attention")
    if kind == "source":
        return TensorV(MASKED, (layer.loc,))
    if kind in ("plain", "consumer"):
        return TensorV(NONE)
    if kind == "dropper":
        if t.state == MASKED:
            layer.loc.module.record_drop(layer, t)
        return TensorV(NONE)
    if kind in ("pass", "merge", "attention"):
        return TensorV(t.state, t.sources)  # a new tensor: clearing one must not clear the other
    return TensorV(UNKNOWN) if t.state != NONE else t


def is_truthy_literal(value) -> bool | None:
    if isinstance(value, Const):
        return bool(value.value)
    if isinstance(value, Str):
        return bool(value.value)
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
    sw_node: cst.CSTNode | None
    compiles_before: int = 0  # how many compile calls the model had when this ran
    from_dataset: bool = False  # the weights are the third element of a tf.data dataset's batches


@dataclass(eq=False)
class ExpFact:
    loc: Loc
    reported: ReportedLossV


@dataclass(eq=False)
class DropFact:
    layer: LayerV
    sources: tuple
    # unsupported: a layer without mask support; attention: MultiHeadAttention cleared the mask
    # of a tensor used again after it; merge: a merge layer with an unmasked input
    reason: str = "unsupported"


# ------------------------------------------------------------------------------------------
# callables the interpreter hands around


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
    analysis: "Interpreter"
