"""What KerasHub (and its former name keras_nlp) means to the analysis: its mask-making
embeddings, transformer blocks that pass a mask on, layers whose output carries none, and its
language-model tasks (``CausalLM``, ``MaskedLM``, ``Seq2SeqLM`` and their model-specific
subclasses such as ``GPT2CausalLM``, ``BertMaskedLM``, ``BartSeq2SeqLM``), which compile a
``sum_over_batch_size`` loss themselves and take the padding as ``sample_weight``.

A mixin of :class:`pytest_maskloss.scan.semantics.KerasSemantics`; the names come from
:mod:`pytest_maskloss.scan.kerasnames` (read in keras-hub 0.32.0's sources, never imported).
"""

from __future__ import annotations

from pytest_maskloss.scan import kerasnames as K
from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.syntax import call_arg
from pytest_maskloss.scan.values import LayerV, ModelV, is_truthy_literal

cst = LazyModule("libcst")


def _is_none(node) -> bool:
    return isinstance(node, cst.Name) and node.value == "None"


def _is_false(node) -> bool:
    return isinstance(node, cst.Name) and node.value == "False"


class HubSemantics:
    """``hub_call`` turns a call of a KerasHub name into a layer or a task model (None: not
    one the analysis knows)."""

    def hub_call(self, name: str, call, env):
        parts = name.split(".")
        leaf = parts[-1]
        parent = parts[-2] if len(parts) > 1 else ""
        task = K.hub_task(leaf) if leaf[:1].isupper() else (K.hub_task(parent) if leaf == "from_preset" else None)
        if task is not None:
            return self._task(task, leaf if leaf != "from_preset" else parent, leaf == "from_preset", call, env)
        self.eval_args(call, env)
        loc = self.loc(call)
        if leaf in K.HUB_MASK_MAKERS:
            mz = call_arg(call, None, "mask_zero")
            if mz is not None and is_truthy_literal(self.eval(mz, env)) is not False:
                return LayerV("source", leaf, loc)
            return LayerV("plain", leaf, loc)
        if leaf in K.HUB_MASK_PASSERS:
            return LayerV("pass", leaf, loc)
        if leaf in K.HUB_UNMASKED or leaf.endswith("Backbone") or parent.endswith("Backbone"):
            return LayerV("plain", leaf, loc)
        if leaf in K.HUB_MASK_DROPPERS:
            return LayerV("dropper", leaf, loc)
        if leaf in K.ATTENTION_CLEARING:
            return LayerV("attention", leaf, loc)
        return None

    def _task(self, kind: str, name: str, from_preset: bool, call, env) -> ModelV:
        self.eval_args(call, env)
        pre = call_arg(call, None, "preprocessor")
        # from_preset attaches the preset's preprocessor unless told preprocessor=None; the
        # constructor has one only when it is given
        has_pre = not _is_none(pre) if from_preset else (pre is not None and not _is_none(pre))
        compiled = not _is_false(call_arg(call, None, "compile"))  # Task.__init__(compile=True)
        model = ModelV("task", name, self.loc(call), task=(kind, has_pre, compiled))
        self.models.append(model)
        return model
