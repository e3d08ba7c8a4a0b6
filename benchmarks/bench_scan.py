"""Benchmark ``maskloss scan`` against Fixit running one equivalent rule and a bare libcst parse.

    python benchmarks/bench_scan.py                 # 5,000 files, Fixit on a 500-file sample
    python benchmarks/bench_scan.py --files 8000 --fixit-sample 0   # Fixit on every file (slow)

What it does, in one temporary folder (removed afterwards unless ``--keep``):

1. writes a deterministic corpus (``scan_corpus.build_corpus``: by default 5,000 ``.py`` files,
   20 % Keras training scripts in many variants, 80 % ordinary modules of long-tailed size);
2. times, each in a fresh process, with wall time and the CPU time of the process tree:
   a. ``python -m pytest_maskloss scan corpus --output-format json`` single process, and ``-j 2``;
   b. ``fixit lint`` with only ``scan_fixit_rule.MaskedModelStockLoss`` enabled (a ``fixit.toml``
      with ``root``, ``enable-root-import``, ``disable = ["fixit.rules"]``), on a fixed random
      sample of the corpus (``--fixit-sample``, 0 = every file) — Fixit runs its default process
      pool (one worker per CPU); the scanner is also timed on the very same sample;
   c. ``libcst.parse_module`` of every file in this process (no metadata, no visitor);
   d. the scanner on the files without Keras alone;
3. prints files/s for each, the ratios, the targets (scanner >= 5x Fixit; >= 2,000 files/s on
   files without Keras), and whether the scanner and the Fixit rule flag the same files.

Noisy machine? Compare the ``cpu`` columns (CPU seconds of the whole process tree), which
other processes disturb far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scan_corpus import CorpusFile, build_corpus, link_subset  # noqa: E402

DESIGN_CODE = "MSK001"  # pytest_maskloss/scan/rules.py: stock-loss-on-masked-output
FIXIT_RULE = "MaskedModelStockLoss"
FIXIT_TOML = """\
[tool.fixit]
root = true
enable-root-import = true
disable = ["fixit.rules"]
enable = ["scan_fixit_rule"]
"""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Timing:
    def __init__(self, label: str, files: int, wall: float, cpu: float, note: str = ""):
        self.label, self.files, self.wall, self.cpu, self.note = label, files, wall, cpu, note

    @property
    def rate(self) -> float:
        return self.files / self.wall if self.wall > 0 else float("inf")

    @property
    def cpu_rate(self) -> float:
        return self.files / self.cpu if self.cpu > 0 else float("inf")

    def row(self) -> str:
        return f"  {self.label:<44} {self.files:>6} files {self.wall:>8.2f} s wall {self.rate:>9.1f} files/s   cpu {self.cpu:>8.2f} s {self.cpu_rate:>9.1f} files/cpu-s  {self.note}"


def run_timed(label: str, cmd: list[str], cwd: Path, files: int, ok_codes=(0, 1), note: str = "") -> tuple[Timing, subprocess.CompletedProcess]:
    c0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace")
    wall = time.perf_counter() - t0
    cpu = children_cpu() - c0
    if proc.returncode not in ok_codes or "Traceback" in proc.stderr:
        sys.stderr.write(f"{label}: exit {proc.returncode}\n{proc.stderr[-3000:]}\n")
        raise SystemExit(f"{label} failed")
    return Timing(label, files, wall, cpu, note), proc


def scan_cmd(path: str, jobs: int) -> list[str]:
    return [sys.executable, "-m", "pytest_maskloss", "scan", path, "--output-format", "json", "-j", str(jobs)]


def flagged_by_scanner(proc: subprocess.CompletedProcess, prefix: str) -> tuple[set[str], dict[str, int]]:
    findings = json.loads(proc.stdout or "[]")
    codes: dict[str, int] = {}
    files = set()
    for f in findings:
        codes[f["code"]] = codes.get(f["code"], 0) + 1
        if f["code"] == DESIGN_CODE:
            files.add(_strip(f["path"], prefix))
    return files, codes


def flagged_by_fixit(proc: subprocess.CompletedProcess, prefix: str) -> tuple[set[str], int]:
    files = set()
    errors = 0
    for line in proc.stdout.splitlines():
        # vscode format: path:line:col RuleName: message
        head, sep, _ = line.partition(f" {FIXIT_RULE}:")
        if sep:
            files.add(_strip(head.rsplit(":", 2)[0], prefix))
        elif line.strip() and "error" in line.lower():
            errors += 1
    return files, errors


def _strip(path: str, prefix: str) -> str:
    path = path.replace(os.sep, "/")
    return path[len(prefix):] if path.startswith(prefix) else path


def bare_parse(root: Path, files: list[CorpusFile]) -> Timing:
    import libcst

    failures = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for f in files:
        data = (root / f.relpath).read_bytes()
        try:
            libcst.parse_module(data)
        except Exception:  # the corpus is valid Python; count, do not stop
            failures += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    note = f"({failures} parse failures)" if failures else ""
    return Timing("c. bare libcst.parse_module, 1 process", len(files), wall, cpu, note)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--keras-share", type=float, default=0.2)
    ap.add_argument("--fixit-sample", type=int, default=500, help="files Fixit lints (0: all); a fixed random sample")
    ap.add_argument("--parse-sample", type=int, default=0, help="files the bare parse reads (0: all)")
    ap.add_argument("--no-fixit", action="store_true", help="skip Fixit (e.g. not installed)")
    ap.add_argument("--workdir", help="folder to build in (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    fixit_bin = shutil.which("fixit", path=str(Path(sys.executable).parent)) or shutil.which("fixit")
    if fixit_bin is None and not args.no_fixit:
        print("fixit not found next to this Python nor on PATH: use --no-fixit", file=sys.stderr)
        return 2

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="maskloss-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, work, fixit_bin)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"kept {work}")


def _bench(args, work: Path, fixit_bin: str | None) -> int:
    import libcst

    corpus = work / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    t0 = time.perf_counter()
    files = build_corpus(corpus, args.files, args.seed, args.keras_share)
    gen = time.perf_counter() - t0
    keras = [f for f in files if f.keras]
    plain = [f for f in files if not f.keras]
    total_mb = sum(f.size for f in files) / 1e6
    print(f"maskloss scan benchmark  python {sys.version.split()[0]}  libcst {libcst_version()}  fixit {fixit_version(fixit_bin)}  cpus {os.cpu_count()}  load {os.getloadavg()[0]:.1f}")
    print(f"corpus: {len(files)} .py files ({total_mb:.1f} MB, mean {total_mb * 1e3 / len(files):.1f} kB), seed {args.seed}: "
          f"{len(keras)} Keras scripts ({sum(f.masked_and_stock for f in keras)} masked + stock loss, "
          f"{sum(f.mask_reaches_output for f in keras)} of them with the mask reaching the output), "
          f"{len(plain)} without Keras; generated in {gen:.1f} s")

    rng = random.Random(args.seed + 1)
    sample = files if args.fixit_sample <= 0 or args.fixit_sample >= len(files) else sorted(rng.sample(files, args.fixit_sample), key=lambda f: f.relpath)
    views = work / "views"
    if views.exists():
        shutil.rmtree(views)
    link_subset(corpus, plain, views / "plain")
    plain_no_torch = [f for f in plain if f.kind != "torch"]
    link_subset(corpus, plain_no_torch, views / "plain_no_torch")
    link_subset(corpus, sample, views / "sample")
    (work / "fixit.toml").write_text(FIXIT_TOML)
    shutil.copy(HERE / "scan_fixit_rule.py", work / "scan_fixit_rule.py")

    timings: dict[str, Timing] = {}
    print("\ntimings (each tool in a fresh process; wall includes interpreter start-up):")
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    t, _ = run_timed("   scanner start-up (empty folder)", scan_cmd("empty", 1), work, 0)
    timings["startup"] = t
    print(f"  {t.label:<44}                {t.wall:>8.2f} s wall", flush=True)

    t, p1 = run_timed("a1. maskloss scan, 1 process", scan_cmd("corpus", 1), work, len(files))
    timings["scan1"] = t
    print(t.row(), flush=True)
    t, p2 = run_timed("a2. maskloss scan -j 2", scan_cmd("corpus", 2), work, len(files))
    timings["scan2"] = t
    print(t.row(), flush=True)
    scan_flagged, scan_codes = flagged_by_scanner(p1, "corpus/")
    scan_flagged2, _ = flagged_by_scanner(p2, "corpus/")

    t, pp = run_timed("d. maskloss scan, 1 process, no-Keras files", scan_cmd("views/plain", 1), work, len(plain))
    timings["plain"] = t
    print(t.row(), flush=True)
    plain_flagged, plain_codes = flagged_by_scanner(pp, "views/plain/")
    t, _ = run_timed("d2. the same without the PyTorch modules", scan_cmd("views/plain_no_torch", 1), work, len(plain_no_torch),
                     note=f"({len(plain) - len(plain_no_torch)} PyTorch files mentioning Embedding left out)")
    timings["plain_no_torch"] = t
    print(t.row(), flush=True)

    sample_note = "" if sample is files else f"(fixed random sample of {len(sample)} files)"
    t, ps = run_timed("a3. maskloss scan, 1 process, Fixit's sample", scan_cmd("views/sample", 1), work, len(sample), note=sample_note)
    timings["scan_sample"] = t
    print(t.row(), flush=True)

    fixit_flagged: set[str] = set()
    if fixit_bin is not None:
        t, pf = run_timed(
            "b. fixit lint, 1 rule, default pool",
            [fixit_bin, "-o", "vscode", "lint", "views/sample"], work, len(sample), ok_codes=(0, 1, 2, 3),
            note=sample_note,
        )
        timings["fixit"] = t
        print(t.row(), flush=True)
        fixit_flagged, fixit_errors = flagged_by_fixit(pf, "views/sample/")
        if pf.returncode & 2 or fixit_errors:
            print(f"     fixit reported errors (exit {pf.returncode}, {fixit_errors} error lines)")

    parse_files = files if args.parse_sample <= 0 else sorted(random.Random(args.seed + 2).sample(files, min(args.parse_sample, len(files))), key=lambda f: f.relpath)
    t = bare_parse(corpus, parse_files)
    if parse_files is not files:
        t.note += f" (random sample of {len(parse_files)} files)"
    timings["parse"] = t
    print(t.row(), flush=True)

    # ---------------------------------------------------------------- ratios and targets
    s1, s2, ss, pl, bp = (timings[k] for k in ("scan1", "scan2", "scan_sample", "plain", "parse"))
    print("\nratios:")
    if "fixit" in timings:
        fx = timings["fixit"]
        extrap = "" if sample is files else f" (Fixit measured on {len(sample)} files, rate extrapolated to the corpus: {len(files) / fx.rate:.0f} s for {len(files)} files)"
        print(f"  scanner / fixit, same files, wall:       {ss.rate / fx.rate:7.1f}x   (scanner 1 process vs Fixit {os.cpu_count()} workers){extrap}")
        print(f"  scanner / fixit, same files, per CPU-s:  {ss.cpu_rate / fx.cpu_rate:7.1f}x")
        print(f"  scanner (whole corpus, 1 process) / fixit: {s1.rate / fx.rate:5.1f}x   -j 2: {s2.rate / fx.rate:.1f}x")
    print(f"  scanner (1 process) / bare parse (1 process): {s1.rate / bp.rate:5.2f}x wall, {s1.cpu_rate / bp.cpu_rate:.2f}x per CPU-s")
    print(f"  scanner -j 2 / scanner 1 process:            {s2.rate / s1.rate:5.2f}x")
    st = timings["startup"].wall
    pn = timings["plain_no_torch"]
    print(f"  files without Keras: {pl.rate:.0f} files/s wall ({after_startup(pl, st)}), {pl.cpu_rate:.0f} files/cpu-s")
    print(f"  ... without the PyTorch ones: {pn.rate:.0f} files/s wall ({after_startup(pn, st)}), {pn.cpu_rate:.0f} files/cpu-s")

    print("\ntargets:")
    if "fixit" in timings:
        r = ss.rate / timings["fixit"].rate
        print(f"  [{'PASS' if r >= 5 else 'FAIL'}] scanner >= 5x Fixit's throughput: {r:.1f}x (same files, wall)")
    print(f"  [{'PASS' if pl.rate >= 2000 else 'FAIL'}] >= 2,000 files/s on files without Keras: {pl.rate:.0f} files/s (wall, incl. {timings['startup'].wall:.2f} s start-up)")
    if pl.wall > 3 * timings["startup"].wall:
        steady = pl.files / (pl.wall - timings["startup"].wall)
        print(f"  [{'PASS' if steady >= 2000 else 'FAIL'}] ... the same after start-up: {steady:.0f} files/s")

    # ---------------------------------------------------------------- agreement
    print(f"\nfindings (scanner, whole corpus): {dict(sorted(scan_codes.items()))}; files with {DESIGN_CODE}: {len(scan_flagged)} "
          f"(-j 2: {len(scan_flagged2)}{', identical' if scan_flagged == scan_flagged2 else ', DIFFERENT'})")
    expected = {f.relpath for f in files if f.mask_reaches_output}
    _agree("scanner vs generator (mask reaches output + stock loss)", scan_flagged, expected, files)
    print(f"  files without Keras flagged {DESIGN_CODE}: {len(plain_flagged)}; other codes there: {plain_codes or 'none'}")
    if "fixit" in timings:
        sample_paths = {f.relpath for f in sample}
        _agree(f"scanner vs Fixit rule on Fixit's {len(sample)} files", scan_flagged & sample_paths, fixit_flagged, sample, ("scanner", "fixit"))
        sample_scan_flagged, _ = flagged_by_scanner(ps, "views/sample/")
        if sample_scan_flagged != scan_flagged & sample_paths:
            print(f"  note: scanning the sample alone flags {len(sample_scan_flagged)} files (in the corpus: {len(scan_flagged & sample_paths)})")
    return 0


def after_startup(t: Timing, startup: float) -> str:
    if t.wall <= 3 * startup:
        return f"run too short to subtract the {startup:.2f} s start-up"
    return f"{t.files / (t.wall - startup):.0f} files/s after the {startup:.2f} s start-up"


def _agree(title: str, a: set[str], b: set[str], universe: list[CorpusFile], names=("scanner", "generator")) -> None:
    both, only_a, only_b = a & b, a - b, b - a
    print(f"  {title}: both {len(both)}, {names[0]} only {len(only_a)}, {names[1]} only {len(only_b)}"
          + ("  -> agree" if not only_a and not only_b else ""))
    kinds = {f.relpath: f.kind for f in universe}
    for label, group in ((f"{names[0]} only", only_a), (f"{names[1]} only", only_b)):
        by_kind: dict[str, int] = {}
        for p in group:
            by_kind[kinds.get(p, "?")] = by_kind.get(kinds.get(p, "?"), 0) + 1
        for kind, n in sorted(by_kind.items(), key=lambda kv: -kv[1])[:6]:
            print(f"      {label}: {n:4d}  {kind}  e.g. {sorted(p for p in group if kinds.get(p) == kind)[0]}")


def libcst_version() -> str:
    try:
        from importlib.metadata import version

        return version("libcst")
    except Exception:
        return "?"


def fixit_version(fixit_bin) -> str:
    if fixit_bin is None:
        return "not run"
    try:
        from importlib.metadata import version

        return version("fixit")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
