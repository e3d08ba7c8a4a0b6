"""The shared analysis every rule reads: one file, interpreted with Keras's semantics.

``ModuleAnalysis(path, units, modules, target, index)`` holds the file's units (a file, or the
code cells of a notebook) and their libcst modules; ``run()`` interprets them once
(:mod:`pytest_maskloss.scan.interpreter` with :mod:`pytest_maskloss.scan.semantics`) and leaves
the facts the rules need: ``compiles``, ``fits``, ``exps``, ``drops``, ``classes``. Names
imported from other modules of the same project are resolved through ``index``
(:class:`pytest_maskloss.scan.project.ProjectIndex`). Positions and edits are in
:mod:`pytest_maskloss.scan.edits`.

Nothing is imported or executed: only the text is read.
"""

from __future__ import annotations

from pytest_maskloss.scan.semantics import KerasSemantics
from pytest_maskloss.scan.values import CompileFact, DropFact, ExpFact, FitFact, LayerV, TensorV


class ModuleAnalysis(KerasSemantics):
    display_path: str = ""  # the path as findings show it

    def __init__(self, path, units, modules, target, index=None, module_name=None):
        super().__init__(path, modules, index, module_name)
        self.units = units  # list of source.Unit
        self.target = target  # target.KerasTarget
        self.compiles: list[CompileFact] = []
        self.fits: list[FitFact] = []
        self.exps: list[ExpFact] = []
        self.drops: dict[int, DropFact] = {}
        self.done = False
        self.running = False

    def run(self) -> "ModuleAnalysis":
        if self.done or self.running:
            return self
        self.running = True
        try:
            self.run_units()
        finally:
            self.running = False
            self.done = True
        return self

    def record_drop(self, layer: LayerV, t: TensorV, reason: str = "unsupported") -> None:
        self.drops.setdefault(id(layer.loc.node), DropFact(layer, t.sources, reason))
