"""``maskloss scan``: discovery, (parallel) scanning, fixes, output, exit status."""

from __future__ import annotations

import gc
import os
import sys
from contextlib import contextmanager

from pytest_maskloss.scan.config import (
    Config,
    ConfigError,
    find_pyproject,
    load_config,
    validate_codes,
)
from pytest_maskloss.scan.target import target_from_config_value

_SCANNER = None


def _init_worker(settings) -> None:
    global _SCANNER
    from pytest_maskloss.scan.engine import Scanner

    gc.disable()  # a worker lives for one scan (see _no_cyclic_gc)
    if _SCANNER is None:  # a forked worker has the parent's (Scanner.warm)
        _SCANNER = Scanner(settings)


def _work(path):
    return _SCANNER.scan_file(path)


def _split(values):
    out = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


@contextmanager
def _no_cyclic_gc(exiting: bool = False):
    """Python's cyclic garbage collector off for the scan. Everything the scanner builds (the
    trees, the analyses, the values between them) lives until the run ends, so a collection
    frees nothing and each full one walks every tree parsed so far: on keras-core's 688 files
    12 full collections freed 0 objects and cost about a third of the run's time. ``exiting``
    (the ``maskloss`` process itself, which ends after the output): what exists is frozen
    (``gc.freeze``) before the collector is turned on again, so neither the next collection nor
    the one at interpreter exit walks it (about 0.8 s on keras-core)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if exiting:
            gc.freeze()
        if was_on:
            gc.enable()


def scan_paths(paths, settings, jobs: int = 1, exiting: bool = False):
    """FileResults for ``paths`` (in the order given)."""
    with _no_cyclic_gc(exiting):
        return _scan_paths(paths, settings, jobs)


def _scan_paths(paths, settings, jobs):
    from pytest_maskloss.scan.engine import Scanner

    jobs = workers(jobs)
    scanner = Scanner(settings)
    # what needs no analysis (the prefilter rules it out, or the cache has it) is done here
    results = [scanner.quick_result(p) for p in paths] if jobs > 1 else [None] * len(paths)
    todo = [i for i, r in enumerate(results) if r is None]
    if jobs <= 1 or len(todo) < _MIN_FILES_PER_WORKER * jobs:  # e.g. a pre-commit run: no pool
        for i in todo:
            results[i] = scanner.scan_file(paths[i])
        return results
    import multiprocessing as mp

    # fork only a single-threaded process: a fork of one with threads (TensorFlow loaded, e.g.
    # when scan_paths is called inside a test session) can deadlock on a lock a thread held
    method = "fork" if "fork" in mp.get_all_start_methods() and sys.platform != "darwin" and _one_thread() else "spawn"
    ctx = mp.get_context(method)
    global _SCANNER
    if method == "fork":
        # the modules many files import are analysed once here; the workers inherit them
        scanner.warm([paths[i] for i in todo])
        gc.freeze()  # what exists now is shared with the workers, never collected
        _SCANNER = scanner
    # short contiguous chunks, about 16 per worker: files of one folder import the same modules
    # (what several import was analysed above), and short chunks keep the workers busy to the
    # end (keras-core on 2 workers: 3.7-3.9 s with chunks of 6-14 files, 4.1-4.3 s with 37)
    chunk = -(-len(todo) // (jobs * 16))
    try:
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(settings,)) as pool:
            for i, r in zip(todo, pool.imap(_work, [paths[i] for i in todo], chunksize=chunk)):
                results[i] = r
    finally:
        if method == "fork":
            _SCANNER = None
            gc.unfreeze()
    return results


_MIN_FILES_PER_WORKER = 8


def _one_thread() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


def workers(jobs: int) -> int:
    """The processes a scan uses: ``-j N`` as given; ``-j auto`` (0) every CPU this process may
    run on, whatever else keeps them busy."""
    return _cpus() if jobs == 0 else jobs


def _cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run_scan(args) -> int:
    from pytest_maskloss import __version__
    from pytest_maskloss.scan import output
    from pytest_maskloss.scan.discovery import discover
    from pytest_maskloss.scan.engine import Settings
    from pytest_maskloss.scan.rules import CODES

    def err(msg):
        print(f"maskloss: {msg}", file=sys.stderr)

    known = set(CODES)
    exiting = getattr(args, "process_exits", False)  # run as the maskloss program (cli.main)
    try:
        if args.isolated:
            cfg = Config()
        elif args.config:
            if not os.path.isfile(args.config):
                raise ConfigError(f"{args.config}: no such file")
            cfg = load_config(args.config, known)
        else:
            start = args.paths[0] if args.paths else "."
            cfg = load_config(find_pyproject(start if os.path.exists(start) else "."), known)
        if args.select:
            cfg.select = validate_codes(args.select, known, "--select")
        if args.ignore:
            cfg.ignore = cfg.ignore + validate_codes(args.ignore, known, "--ignore")
        if args.keras_version:
            target_from_config_value(args.keras_version, "--keras-version")
        if args.jobs < 0:
            raise ConfigError("-j/--jobs must be >= 0")
    except ConfigError as exc:
        err(str(exc))
        return 2

    excludes = cfg.exclude + cfg.extend_exclude + _split(args.exclude)
    base = cfg.root or os.getcwd()
    paths = args.paths or ["."]
    files = list(
        discover(
            paths,
            exclude=excludes,
            force_exclude=args.force_exclude or cfg.force_exclude,
            respect_gitignore=cfg.respect_gitignore and not args.no_respect_gitignore,
            base=base,
            warn=err,
        )
    )
    missing = [p for p in paths if not os.path.exists(p)]
    if missing and not files:
        return 2
    settings = Settings(
        config=cfg,
        keras_version=args.keras_version,
        scan_set=frozenset(os.path.abspath(f) for f in files),
        link=not args.no_link,
        cache=not args.no_cache,
        cache_dir=os.path.abspath(args.cache_dir) if args.cache_dir else None,
    )
    results = scan_paths(files, settings, args.jobs, exiting)
    findings = _dedupe(f for r in results for f in r.findings)
    parsed = sum(1 for r in results if r.parsed)
    cached = sum(1 for r in results if r.cached)

    if args.fix or args.diff:
        code = _fixes(findings, args, err, settings.scan_set)
        if code is not None:
            return code
        if args.fix:
            # report what is left, from a fresh scan of the files
            results = scan_paths(files, settings, args.jobs, exiting)
            findings = _dedupe(f for r in results for f in r.findings)

    fmt = args.output_format
    if fmt == "text":
        body = output.text(findings, show_fixes=True)
    elif fmt == "json":
        body = output.to_json(findings)
    elif fmt == "sarif":
        body = output.sarif(findings, __version__)
    else:
        body = output.github(findings)
    if body and not args.diff:
        print(body)
    elif fmt in ("json", "sarif") and not args.diff:
        print(body)
    summary_stream = sys.stdout if fmt == "text" else sys.stderr
    if args.statistics and findings:
        print(output.statistics(findings), file=summary_stream)
    if not args.quiet:
        print(output.summary(findings, len(files), parsed, cached), file=summary_stream)
    if args.exit_zero:
        return 0
    failing = [f for f in findings if f.severity in ("error", "warning")]
    if args.diff:
        return 1 if getattr(args, "_diff_nonempty", False) else (1 if failing else 0)
    return 1 if failing else 0


def _dedupe(findings):
    seen = set()
    out = []
    for f in findings:
        key = (f.path, f.cell, f.line, f.col, f.code)
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    out.sort(key=lambda f: (f.path, f.cell or 0, f.line, f.col, f.code))
    return out


def _fixes(findings, args, err, scan_set=frozenset()):
    from pytest_maskloss.scan import fixer

    chosen = fixer.choose(findings, args.unsafe_fixes)
    withheld = sum(1 for f in findings if f.fix is not None and not f.fix.safe and not args.unsafe_fixes)
    by_path: dict[str, list] = {}
    for f in chosen:
        if os.path.abspath(f.path) not in scan_set:
            continue  # found through a cross-module link in a file not being scanned
        by_path.setdefault(f.path, []).append(f)
    fixed = 0
    failed = False
    diffs = []
    for path, fs in sorted(by_path.items()):
        try:
            old, new, applied = fixer.fixed_content(path, fs)
        except fixer.FixError as exc:
            err(str(exc))
            failed = True
            continue
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            err(f"{path}: cannot apply fixes: {exc}")
            failed = True
            continue
        if new == old:
            continue
        if args.diff:
            diffs.append(fixer.diff(path, old, new))
        else:
            try:
                fixer.write_atomic(path, new)
            except OSError as exc:
                err(f"{path}: cannot write: {exc}")
                failed = True
                continue
        fixed += len(applied)
    if args.diff:
        if diffs:
            sys.stdout.write("".join(diffs))
        args._diff_nonempty = bool(diffs)
        print(
            f"Would fix {fixed} finding(s)" + (f"; {withheld} unsafe fix(es) withheld (add --unsafe-fixes)" if withheld else ""),
            file=sys.stderr,
        )
    else:
        print(
            f"Fixed {fixed} finding(s)" + (f"; {withheld} unsafe fix(es) withheld (add --unsafe-fixes)" if withheld else ""),
            file=sys.stderr,
        )
    return 2 if failed and not fixed else None
