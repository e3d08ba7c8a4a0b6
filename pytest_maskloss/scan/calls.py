"""Running a function's body: the environments names live in (:class:`Env`), and parameters
bound to what a call passes (a call with known arguments runs the body again with them, so
``build(keras, mask_zero=False)`` is analysed with that ``keras`` and that ``False``), or left
unknown (``ParamV``) for the call-free run every function gets.

A mixin of :class:`pytest_maskloss.scan.interpreter.Interpreter`.
"""

from __future__ import annotations

from pytest_maskloss.scan._lazy import LazyModule
from pytest_maskloss.scan.values import FuncRef, ParamV, SelfV

cst = LazyModule("libcst")


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



class FunctionRunner:
    def run_function(self, ref: FuncRef, first_param=None, bound=None):
        """Run a function's body; its parameters are unknown (``ParamV``) unless ``bound``
        gives their values (a call with known arguments: the others take their defaults)."""
        if self._depth > 30:
            return None
        self._depth += 1
        saved, saved_top, saved_memo = self.unit, self.top, self._memo
        self._memo, self.unit, self.top = {}, ref.unit, ref.top
        try:
            env = Env(parent=self.globals, func=ref)
            params = list(ref.node.params.posonly_params) + list(ref.node.params.params)
            if ref.cls is not None and params:
                env.vars[params[0].name.value] = SelfV(ref.cls)
                params = params[1:]
            for i, p in enumerate(params):
                env.vars[p.name.value] = first_param if (i == 0 and first_param is not None) else self._param_value(p, bound)
            for p in ref.node.params.kwonly_params:
                env.vars[p.name.value] = self._param_value(p, bound)
            body = ref.node.body.body
            if isinstance(body, (list, tuple)):
                self.exec_block(body, env)
            return env.vars.get("<return>")
        finally:
            self.unit, self.top, self._memo = saved, saved_top, saved_memo
            self._depth -= 1

    def _param_value(self, param, bound):
        name = param.name.value
        if bound is None:
            return ParamV(name)
        if name in bound:
            return bound[name]
        if param.default is not None:
            value = self.eval(param.default, self.globals)
            if value is not None:
                return value
        return ParamV(name)

    def bind_call(self, ref: FuncRef, call: cst.Call, env) -> dict:
        """Parameter -> value for the arguments of a call that say something (not unknown);
        empty when none does, or for a method or a call with ``*args``/``**kwargs``."""
        if ref.cls is not None or any(arg.star for arg in call.args):
            return {}
        params = list(ref.node.params.posonly_params) + list(ref.node.params.params)
        by_name = {p.name.value for p in params} | {p.name.value for p in ref.node.params.kwonly_params}
        bound, pos = {}, 0
        for arg in call.args:
            if arg.keyword is not None:
                name = arg.keyword.value
                if name not in by_name:
                    continue
            elif pos < len(params):
                name = params[pos].name.value
                pos += 1
            else:
                continue
            value = self.eval(arg.value, env)
            if value is not None and not isinstance(value, ParamV):
                bound[name] = value
        return bound

