"""flake8 plugin (report only): ``flake8 --select MSK``.

flake8 hands over the ``ast`` tree; the scanner needs the text, so it re-reads the file by its
name (cross-module links included, as for ``maskloss scan FILE``). Notes are not reported.
"""

from __future__ import annotations

import os

from pytest_maskloss import __version__


class MasklossChecker:
    name = "pytest-maskloss"
    version = __version__

    def __init__(self, tree=None, filename: str = "stdin", lines=None):
        self.filename = filename
        self.lines = lines

    def run(self):
        from pytest_maskloss.scan.requirements import problem

        missing = problem("the flake8 plugin MSK")
        if missing:  # flake8 prints the plugin's error: one sentence saying what to install
            raise RuntimeError(missing)
        from pytest_maskloss.scan.config import Config, ConfigError, find_pyproject, load_config
        from pytest_maskloss.scan.engine import Scanner, Settings, check_source
        from pytest_maskloss.scan.rules import CODES

        try:
            cfg = load_config(find_pyproject(self.filename if os.path.exists(self.filename) else "."), set(CODES))
        except ConfigError:
            cfg = Config()
        if self.filename in ("stdin", "-", None) or not os.path.isfile(self.filename):
            findings = check_source("".join(self.lines or []), config=cfg)
        else:
            settings = Settings(config=cfg, scan_set=frozenset({os.path.abspath(self.filename)}))
            findings = Scanner(settings).scan_file(self.filename).findings
            me = os.path.abspath(self.filename)
            findings = [f for f in findings if os.path.abspath(f.path) == me]
        for f in findings:
            if f.severity == "note":
                continue
            yield f.line, f.col - 1, f"{f.code} {f.severity}: {f.message}", type(self)
