"""Benchmark ``maskloss scan`` against Fixit running one equivalent rule and a bare libcst parse.

    python benchmarks/scan/bench.py --files 1000     # Fixit on a 500-file sample (--fixit-sample 0: all)

Builds the corpus (``corpus.py``) in a temporary folder, then times in fresh processes (wall and
CPU of the process tree): the scanner (1 process, ``-j 2``, the files without Keras, Fixit's
sample), ``fixit lint`` with only ``fixit_rule.MaskedModelStockLoss`` on a fixed random sample
(its default pool), and ``libcst.parse_module`` of every file here. Prints files/s, ratios, the
targets (>= 5x Fixit; >= 2,000 files/s without Keras) and who flags MSK001 where.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import build_corpus, link_subset  # noqa: E402

CODE, FIXIT_RULE = "MSK001", "MaskedModelStockLoss"
FIXIT_TOML = '[tool.fixit]\nroot = true\nenable-root-import = true\ndisable = ["fixit.rules"]\nenable = ["fixit_rule"]\n'


class Timing:
    def __init__(self, label, files, wall, cpu, note=""):
        self.label, self.files, self.wall, self.cpu, self.note = label, files, wall, cpu, note
        self.rate = files / wall if wall > 0 else float("inf")
        self.cpu_rate = files / cpu if cpu > 0 else float("inf")

    def row(self) -> str:
        return (f"  {self.label:<44} {self.files:>6} files {self.wall:>8.2f} s wall {self.rate:>9.1f} files/s"
                f"   cpu {self.cpu:>8.2f} s {self.cpu_rate:>9.1f} files/cpu-s  {self.note}")


def timed(label, cmd, cwd, files, note="", ok=(0, 1)):
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_CHILDREN)[:2])  # noqa: E731 (user + system)
    c0, t0 = cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace")
    t = Timing(label, files, time.perf_counter() - t0, cpu() - c0, note)
    if proc.returncode not in ok or "Traceback" in proc.stderr:
        raise SystemExit(f"{label}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    print(t.row(), flush=True)
    return t, proc


def scan(path: str, jobs: int = 1) -> list[str]:
    # --no-cache: every run here is cold (real.py measures the cache)
    return [sys.executable, "-m", "pytest_maskloss", "scan", path, "--output-format", "json", "-j", str(jobs), "--no-cache"]


def scanner_flags(proc, prefix: str):
    findings = json.loads(proc.stdout or "[]")
    codes: dict[str, int] = {}
    for f in findings:
        codes[f["code"]] = codes.get(f["code"], 0) + 1
    return {f["path"].replace(os.sep, "/").removeprefix(prefix) for f in findings if f["code"] == CODE}, codes


def fixit_flags(proc, prefix: str) -> set[str]:
    out = set()
    for line in proc.stdout.splitlines():  # vscode format: path:line:col Rule: message
        head, sep, _ = line.partition(f" {FIXIT_RULE}:")
        if sep:
            out.add(head.rsplit(":", 2)[0].replace(os.sep, "/").removeprefix(prefix))
    return out


def bare_parse(root: Path, files) -> Timing:
    import libcst

    failures = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for f in files:
        try:
            libcst.parse_module((root / f.relpath).read_bytes())
        except Exception:
            failures += 1
    t = Timing("c. bare libcst.parse_module, 1 process", len(files), time.perf_counter() - t0,
               time.process_time() - c0, f"({failures} parse failures)" if failures else "")
    print(t.row(), flush=True)
    return t


def agree(title, a: set, b: set, kinds: dict, names=("scanner", "examples")) -> None:
    print(f"  {title}: both {len(a & b)}, {names[0]} only {len(a - b)}, {names[1]} only {len(b - a)}"
          + ("  -> agree" if a == b else ""))
    for label, group in ((f"{names[0]} only", a - b), (f"{names[1]} only", b - a)):
        for kind in sorted({kinds[p] for p in group})[:6]:
            example = sorted(p for p in group if kinds[p] == kind)[0]
            print(f"      {label}: {sum(kinds[p] == kind for p in group):4d}  {kind}  e.g. {example}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--keras-share", type=float, default=0.2)
    ap.add_argument("--fixit-sample", type=int, default=500, help="files Fixit lints (0: all)")
    ap.add_argument("--no-fixit", action="store_true", help="skip Fixit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    fixit = None if args.no_fixit else shutil.which("fixit", path=str(Path(sys.executable).parent)) or shutil.which("fixit")
    if fixit is None and not args.no_fixit:
        print("fixit not found next to this Python nor on PATH: use --no-fixit", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="maskloss-bench-"))
    try:
        return bench(args, work, fixit)
    finally:
        shutil.rmtree(work, ignore_errors=True) if not args.keep else print(f"kept {work}")


def bench(args, work: Path, fixit) -> int:
    t0 = time.perf_counter()
    files = build_corpus(work / "corpus", args.files, args.seed, args.keras_share)
    keras, plain = [f for f in files if f.keras], [f for f in files if not f.keras]
    mb = sum(f.size for f in files) / 1e6
    print(f"maskloss scan benchmark  python {sys.version.split()[0]}  libcst {version('libcst')}  "
          f"fixit {version('fixit') if fixit else 'not run'}  cpus {os.cpu_count()}  load {os.getloadavg()[0]:.1f}")
    print(f"corpus: {len(files)} .py files ({mb:.1f} MB), seed {args.seed}: {len(keras)} from the rules' examples "
          f"({sum(f.expect_msk001 for f in keras)} expected {CODE}), {len(plain)} standard-library modules; "
          f"built in {time.perf_counter() - t0:.1f} s")
    n = args.fixit_sample
    sample = files if n <= 0 or n >= len(files) else sorted(random.Random(args.seed + 1).sample(files, n), key=lambda f: f.relpath)
    link_subset(work / "corpus", plain, work / "views/plain")
    link_subset(work / "corpus", sample, work / "views/sample")
    (work / "fixit.toml").write_text(FIXIT_TOML)
    shutil.copy(HERE / "fixit_rule.py", work / "fixit_rule.py")
    (work / "empty").mkdir()
    note = "" if sample is files else f"(fixed random sample of {len(sample)} files)"

    print("\ntimings (each tool in a fresh process; wall includes interpreter start-up):")
    start, _ = timed("   scanner start-up (empty folder)", scan("empty"), work, 0)
    s1, p1 = timed("a1. maskloss scan, 1 process", scan("corpus"), work, len(files))
    s2, p2 = timed("a2. maskloss scan -j 2", scan("corpus", 2), work, len(files))
    pl, pp = timed("d. maskloss scan, 1 process, no-Keras files", scan("views/plain"), work, len(plain))
    ss, ps = timed("a3. maskloss scan, 1 process, Fixit's sample", scan("views/sample"), work, len(sample), note)
    fx = pf = None
    if fixit:
        fx, pf = timed("b. fixit lint, 1 rule, default pool", [fixit, "-o", "vscode", "lint", "views/sample"],
                       work, len(sample), note, ok=(0, 1, 2, 3))
    bp = bare_parse(work / "corpus", files)

    print("\nratios:")
    if fx:
        extra = "" if sample is files else f" (Fixit on {len(sample)} files; extrapolated: {len(files) / fx.rate:.0f} s for {len(files)})"
        print(f"  scanner / fixit, same files, wall:       {ss.rate / fx.rate:7.1f}x   (scanner 1 process vs Fixit {os.cpu_count()} workers){extra}")
        print(f"  scanner / fixit, same files, per CPU-s:  {ss.cpu_rate / fx.cpu_rate:7.1f}x")
        print(f"  scanner (whole corpus, 1 process) / fixit: {s1.rate / fx.rate:5.1f}x   -j 2: {s2.rate / fx.rate:.1f}x")
    print(f"  scanner (1 process) / bare parse (1 process): {s1.rate / bp.rate:5.2f}x wall, {s1.cpu_rate / bp.cpu_rate:.2f}x per CPU-s")
    print(f"  scanner -j 2 / scanner 1 process:            {s2.rate / s1.rate:5.2f}x")
    steady = f"{pl.files / (pl.wall - start.wall):.0f} files/s after the {start.wall:.2f} s start-up" if pl.wall > 3 * start.wall \
        else f"run too short to subtract the {start.wall:.2f} s start-up"
    parsed = re.search(r"(\d+) parsed", pp.stderr)
    print(f"  files without Keras: {pl.rate:.0f} files/s wall ({steady}), {pl.cpu_rate:.0f} files/cpu-s; "
          f"{parsed.group(1) if parsed else '?'} of the {pl.files} passed the prefilter and were parsed")

    print("\ntargets:")
    if fx:
        r = ss.rate / fx.rate
        print(f"  [{'PASS' if r >= 5 else 'FAIL'}] scanner >= 5x Fixit's throughput: {r:.1f}x (same files, wall)")
    print(f"  [{'PASS' if pl.rate >= 2000 else 'FAIL'}] >= 2,000 files/s on files without Keras: {pl.rate:.0f} files/s (wall, incl. start-up)")

    flagged, codes = scanner_flags(p1, "corpus/")
    flagged2, _ = scanner_flags(p2, "corpus/")
    plain_flagged, plain_codes = scanner_flags(pp, "views/plain/")
    print(f"\nfindings (scanner, whole corpus): {dict(sorted(codes.items()))}; files with {CODE}: {len(flagged)} "
          f"(-j 2: {len(flagged2)}{', identical' if flagged == flagged2 else ', DIFFERENT'})")
    kinds = {f.relpath: f.kind for f in files}
    agree("scanner vs examples (MSK001 INVALID examples)", flagged, {f.relpath for f in files if f.expect_msk001}, kinds)
    print(f"  files without Keras flagged {CODE}: {len(plain_flagged)}; codes there: {plain_codes or 'none'}")
    if fx:
        in_sample = {f.relpath for f in sample}
        agree(f"scanner vs Fixit rule on Fixit's {len(sample)} files", flagged & in_sample,
              fixit_flags(pf, "views/sample/"), kinds, ("scanner", "fixit"))
        alone, _ = scanner_flags(ps, "views/sample/")
        if alone != flagged & in_sample:
            print(f"  note: scanning the sample alone flags {len(alone)} files (in the corpus: {len(flagged & in_sample)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
