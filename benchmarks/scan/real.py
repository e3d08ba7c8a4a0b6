"""``maskloss scan`` on a real repository, against Fixit running one equivalent rule, in one run.

    python benchmarks/scan/real.py --checkout /path/to/keras-core [--fixit /path/to/fixit]

The repository measured is keras-team/keras-core at commit
3a464f904dc8dd09de9c51d248a7fe7c575d7f3e (688 .py files; fetch it yourself, e.g.
``git clone https://github.com/keras-team/keras-core && git -C keras-core checkout 3a464f9``;
its code is never committed here). The checkout is copied to a temporary folder first, so the
cache the runs write and the edit of the "staged" file never touch it.

Measured, each in a fresh process (wall includes interpreter start-up; CPU is the process
tree's user + system time):

- start-up: a scan of an empty folder;
- one staged file (``keras_core/layers/core/embedding.py``, what a pre-commit hook passes):
  **cold** (no cache folder), **warm** (the cache of an earlier run, file unchanged) and
  **edited** (the file changed since that run, the rest of the cache valid);
- the whole tree with ``-j auto``: **cold** (empty cache) and **warm** (second run), and cold
  in one process;
- ``fixit lint`` of the whole tree with only ``fixit_rule.MaskedModelStockLoss`` (Fixit's
  default worker pool).

Findings must be identical in every scanner run of the tree (checked and printed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
COMMIT = "3a464f904dc8dd09de9c51d248a7fe7c575d7f3e"
STAGED = "keras_core/layers/core/embedding.py"
FIXIT_TOML = '[tool.fixit]\nroot = true\nenable-root-import = true\ndisable = ["fixit.rules"]\nenable = ["fixit_rule"]\n'


def run(cmd, cwd, ok=(0, 1)):
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])  # noqa: E731
    env = dict(os.environ, PYTHONPATH=str(CHECKOUT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    c0, t0 = cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", env=env)
    wall, used = time.perf_counter() - t0, cpu() - c0
    if proc.returncode not in ok or "Traceback" in proc.stderr:
        raise SystemExit(f"{cmd}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return wall, used, proc


def scan(*args) -> list[str]:
    return [sys.executable, "-m", "pytest_maskloss", "scan", *args, "--output-format", "json"]


def row(label, wall, cpu, note=""):
    print(f"  {label:<58} {wall:8.2f} s wall  {cpu:8.2f} s cpu  {note}", flush=True)


def findings(proc):
    return sorted(json.dumps(f, sort_keys=True) for f in json.loads(proc.stdout or "[]"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", required=True, help="a keras-core checkout (commit above)")
    ap.add_argument("--fixit", help="the fixit executable (default: next to this Python, or on PATH)")
    ap.add_argument("--no-fixit", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each single-file case (median shown)")
    args = ap.parse_args(argv)
    fixit = None
    if not args.no_fixit:
        fixit = args.fixit or shutil.which("fixit", path=str(Path(sys.executable).parent)) or shutil.which("fixit")
        if fixit is None:
            print("fixit not found: pass --fixit or --no-fixit", file=sys.stderr)
            return 2
    src = Path(args.checkout).resolve()
    if not (src / STAGED).is_file():
        print(f"{src}: no {STAGED}; is it a keras-core checkout?", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="maskloss-real-"))
    try:
        return bench(args, src, work, fixit)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench(args, src: Path, work: Path, fixit) -> int:
    repo = work / "keras-core"
    shutil.copytree(src, repo, ignore=shutil.ignore_patterns(".git", ".maskloss_cache"))
    (work / "empty").mkdir()
    n_files = sum(1 for _ in repo.rglob("*.py"))
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the package's bytecode, as `pip install` writes it (a development checkout run with
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start; Fixit's
    # installed package has its bytecode)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(CHECKOUT / "pytest_maskloss")], check=True)
    print(f"maskloss scan on keras-team/keras-core {commit or COMMIT + ' (as recorded; not a git checkout)'}: "
          f"{n_files} .py files; python {sys.version.split()[0]}; cpus {len(os.sched_getaffinity(0))}; "
          f"load {os.getloadavg()[0]:.1f}; the package's bytecode compiled first")
    cache = repo / ".maskloss_cache"
    print("\ntimings (fresh processes):")
    w, c, _ = run(scan(str(work / "empty")), work)
    row("start-up (empty folder)", w, c)

    def single(label, prepare):
        walls, cpus = [], []
        for _ in range(args.repeats):
            prepare()
            w, c, p = run(scan(STAGED), repo)
            walls.append(w)
            cpus.append(c)
        row(label, statistics.median(walls), statistics.median(cpus),
            f"(median of {args.repeats}; min {min(walls):.2f} s) {p.stderr.strip().splitlines()[-1]}")
        return statistics.median(walls)

    staged = repo / STAGED
    original = staged.read_bytes()
    one_cold = single("one staged file, COLD (no cache)", lambda: shutil.rmtree(cache, ignore_errors=True))
    run(scan("."), repo)  # fill the cache with the whole tree, as an earlier run would
    one_warm = single("one staged file, warm (cache; file unchanged)", lambda: None)
    counter = iter(range(10**6))

    def edit():
        staged.write_bytes(original + f"\n# edited {next(counter)}\n".encode())

    one_edit = single("one staged file, edited since the cached run", edit)
    staged.write_bytes(original)

    shutil.rmtree(cache, ignore_errors=True)
    tree_cold1, cold1_cpu, p1 = run(scan(".", "-j", "1", "--no-cache"), repo)
    row("whole tree, COLD, 1 process, no cache", tree_cold1, cold1_cpu, p1.stderr.strip().splitlines()[-1])
    tree_cold, cold_cpu, p2 = run(scan("."), repo)
    row("whole tree, COLD (empty cache), -j auto", tree_cold, cold_cpu, p2.stderr.strip().splitlines()[-1])
    tree_warm, c, p3 = run(scan("."), repo)
    row("whole tree, warm (second run), -j auto", tree_warm, c, p3.stderr.strip().splitlines()[-1])
    same = findings(p1) == findings(p2) == findings(p3)
    fx = None
    if fixit:
        (work / "fixit.toml").write_text(FIXIT_TOML)
        shutil.copy(HERE / "fixit_rule.py", work / "fixit_rule.py")
        fx, fx_cpu, pf = run([fixit, "-o", "vscode", "lint", "keras-core"], work, ok=(0, 1, 2, 3))
        row("fixit lint, 1 rule, default workers, whole tree", fx, fx_cpu, (pf.stderr.strip().splitlines() or [""])[-1])

    print(f"\nfindings identical in the three tree runs (no cache -j 1, cold -j auto, warm -j auto): {same} "
          f"({len(findings(p1))} findings)")
    print("\ntargets:")
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"  [{verdict(one_warm <= 0.5)}] one staged file <= 0.5 s wall incl. start-up, warm cache: {one_warm:.2f} s"
          f"   (cold: {one_cold:.2f} s [{verdict(one_cold <= 0.5)}]; edited since the cached run: {one_edit:.2f} s [{verdict(one_edit <= 0.5)}])")
    if fx:
        print(f"  [{verdict(fx / tree_cold >= 20)}] whole tree >= 20x Fixit (1 rule, default workers), COLD cache, -j auto: "
              f"{fx / tree_cold:.1f}x   (1 process, no cache: {fx / tree_cold1:.1f}x)")
        print(f"  [{verdict(fx / tree_warm >= 20)}] whole tree >= 20x Fixit, warm cache, -j auto: {fx / tree_warm:.1f}x")
        print(f"  per CPU second (independent of other load on the machine), COLD: -j auto {fx_cpu / cold_cpu:.1f}x, "
              f"1 process {fx_cpu / cold1_cpu:.1f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
