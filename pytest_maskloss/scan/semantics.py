"""What Keras calls mean to the analysis: layers and what they do to a mask, models
(Sequential, functional, subclassed), losses (stock, custom, ``pytest_maskloss.keras``),
``compile``/``fit``/``evaluate`` and their facts, reductions over the time axis, ``exp`` of a
reported loss, and what a class is from its bases (model, layer, loss; mask source or not).

The interpreter (:mod:`pytest_maskloss.scan.interpreter`) calls these hooks; the names Keras
uses come from :mod:`pytest_maskloss.scan.kerasnames`.
"""

from __future__ import annotations

import libcst as cst

from pytest_maskloss.scan import kerasnames as K
from pytest_maskloss.scan.hub import HubSemantics
from pytest_maskloss.scan.interpreter import Interpreter
from pytest_maskloss.scan.syntax import call_arg, kw_literal, returns_only_none, sets_supports_masking
from pytest_maskloss.scan.values import (
    MASKED, NONE, UNKNOWN, ClassRef, CompileFact, Const, DatasetV, DictV, EvalV, ExpFact, FitFact,
    FuncRef, HistoryDictV, HistoryV, LayerV, ListV, Loc, LossV, ModelV, PaddingV, ParamV, PerTokenV,
    Qual, ReductionV, ReportedLossV, Str, TensorV, _BoundMethod, apply_layer, is_truthy_literal,
    merge, tensor_of,
)


class KerasSemantics(HubSemantics, Interpreter):
    """The interpreter with Keras's meaning of calls and classes. Records facts on
    ``self.compiles``, ``self.fits``, ``self.exps`` (and, through ``apply_layer``, drops)."""

    # -- classes ---------------------------------------------------------------------
    def class_bases_known(self, ref: ClassRef) -> None:
        kinds = set()
        for base in ref.base_refs:
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

    def class_body_done(self, ref: ClassRef, cenv) -> None:
        for name, value in cenv.vars.items():
            if name == "supports_masking" and is_truthy_literal(value) and ref.mask == "unknown":
                ref.mask = "pass"
        if "compute_mask" in ref.methods:
            ref.mask = "source" if not returns_only_none(ref.methods["compute_mask"].node) else "plain"
        elif ref.kind == "layer" and ref.mask == "unknown":
            init = ref.methods.get("__init__")
            # the text first: a walk of every layer's __init__ costs (keras-core: 236 of them)
            if init is not None and self._text_mentions(ref.unit, "supports_masking") and sets_supports_masking(init.node):
                ref.mask = "pass"
        if ref.kind == "model":
            ref.model = ModelV("subclass", ref.name, self.loc(ref.node), cls=ref)
            self.models.append(ref.model)

    def _text_mentions(self, unit: int, word: str) -> bool:
        """Does the source of that unit contain ``word``? True when the text is unknown."""
        units = getattr(self, "units", None)
        return units is None or not 0 <= unit < len(units) or word in units[unit].text

    # -- calls -------------------------------------------------------------------------
    def instantiate(self, ref: ClassRef, call, env):
        self.eval_args(call, env)
        if ref.kind == "model":
            return ref.model
        if ref.kind == "loss":
            return LossV("custom_cls", ref.name, self.loc(call), kw_literal(call, "reduction"), ref, call)
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
            x = call_arg(call, 0, "x")
            self.eval_args(call, env)
            if sw is None and x is not None and getattr(self.eval(x, env), "padding_weights", False):
                self.fits.append(FitFact(self.loc(call), name, model, PaddingV(), x, len(model.compiles), from_dataset=True))
            elif sw is None and model.task is not None:  # a KerasHub task's preprocessor weights
                self.fits.append(FitFact(self.loc(call), name, model, None, None, len(model.compiles)))
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
        if isinstance(base, DatasetV):
            if name == "map":
                fn = self.eval(call_arg(call, 0, "map_func"), env) if call_arg(call, 0, "map_func") is not None else None
                ret = fn.returns() if isinstance(fn, FuncRef) else None
                if isinstance(ret, ListV) and len(ret.items) == 3 and isinstance(ret.items[2], PaddingV):
                    return DatasetV(True)
            return DatasetV(base.padding_weights)
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
        hub = next((h for n in sorted(q.names) if (h := K.hub_name(n)) is not None), None)
        if hub is not None:
            value = self.hub_call(hub, call, env)
            if value is not None:
                return value
        all_leaves = q.leaves()
        if q.under("tensorflow.data"):
            self.eval_args(call, env)
            return DatasetV()
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
            ignore = call_arg(call, None, "ignore_class")
            ignore = None if ignore is None else (self.eval(ignore, env) if isinstance(ignore, (cst.Integer, cst.UnaryOperation, cst.Name)) else "?")
            if isinstance(ignore, Const) and ignore.value is None:
                ignore = None
            return LossV("stock", name, self.loc(call), kw_literal(call, "reduction"), None, call, ignore if ignore is not None else None)
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
            return self.merge_inputs(LayerV("merge", sorted(leaves & K.MERGE_FUNCS)[0], self.loc(call)), value)
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
        if name in K.ATTENTION_CLEARING:
            return LayerV("attention", name, loc)
        mz = kw.get("mask_zero")  # ReversibleEmbedding and other layers that make a mask
        if mz is not None:
            return LayerV("source" if is_truthy_literal(self.eval(mz, env)) is not False else "plain", name, loc)
        return LayerV("pass", name, loc)

    # -- layers with several inputs ------------------------------------------------------
    def call_layer(self, layer, call, env):
        if layer.kind == "merge":
            arg = call_arg(call, 0, "inputs")
            value = self.eval(arg, env) if arg is not None else None
            self.eval_args(call, env)
            return self.merge_inputs(layer, value)
        if layer.kind == "attention":
            return self.attend(layer, call, env)
        return super().call_layer(layer, call, env)

    def merge_inputs(self, layer: LayerV, value) -> TensorV:
        """A merge (``Add``, ``Concatenate``, ...): Keras 3 keeps a mask only when every input
        has one; Keras 2 keeps the masked inputs' masks (``compat.flavours``)."""
        if not isinstance(value, ListV):
            return apply_layer(layer, tensor_of(value) if value is not None else TensorV(UNKNOWN), layer.loc)
        ts = [tensor_of(v) for v in value.items]
        for t in ts:
            if t.cleared is not None:  # the attention layer is the culprit, not the merge
                t.cleared.loc.module.record_drop(t.cleared, TensorV(MASKED, t.cleared_sources), "attention")
        masked = TensorV(MASKED, tuple(s for t in ts for s in t.sources)[:3])
        states = {t.state for t in ts}
        if MASKED not in states:
            return TensorV(merge(states))
        if any(t.cleared is not None for t in ts):
            return TensorV(NONE if self.target.attention_clears_input_masks else UNKNOWN)
        if NONE in states:
            drops = self.target.merge_drops_mask_of_partly_masked_inputs
            if drops is False:
                return masked
            self.record_drop(layer, masked, "merge")
            return TensorV(NONE if drops else UNKNOWN)
        if UNKNOWN not in states and self.target.merge_drops_mask_of_masked_inputs:
            self.record_drop(layer, masked, "merge")
            return TensorV(NONE)
        return masked if UNKNOWN not in states else TensorV(UNKNOWN)

    def attend(self, layer: LayerV, call, env) -> TensorV:
        """``MultiHeadAttention(...)(query, value[, key])``: the output keeps the query's mask;
        on Keras >= 3.8 the query, value and key tensors lose theirs for every later use."""
        values = [self.eval(n, env) if n is not None else None for n in (
            call_arg(call, 0, "query"), call_arg(call, 1, "value"), call_arg(call, 2, "key"))]
        self.eval_args(call, env)
        query = tensor_of(values[0]) if values[0] is not None else TensorV(UNKNOWN)
        if query.cleared is not None:
            query.cleared.loc.module.record_drop(query.cleared, TensorV(MASKED, query.cleared_sources), "attention")
        out = TensorV(query.state, query.sources)
        clears = self.target.attention_clears_input_masks
        if clears is not False:
            for v in values:
                if isinstance(v, TensorV) and v.state == MASKED:
                    v.state, v.cleared, v.cleared_sources = (NONE if clears else UNKNOWN), layer, v.sources
        return out

    def _positional_mask_zero(self, call):
        """``True`` given positionally where the targeted flavour takes ``mask_zero``."""
        for pos in self.target.mask_zero_positions:
            node = call_arg(call, pos, None)
            if node is not None and isinstance(node, cst.Name) and node.value == "True":
                return node
        return None
