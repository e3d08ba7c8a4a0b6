"""What the runtime check costs against the model.evaluate it checks, and its memory.

A small LSTM language model (embedding 32, LSTM 32, softmax over the vocabulary) on padded
sequences. Measured in one run, after a warm-up of both:

- ``model.evaluate`` alone (the named alternative: what a user already pays);
- ``check_masked_loss(paths=("evaluate",))``: the model's own evaluate observed in place (no
  second forward pass), with the time its numpy reference took;
- ``model.fit`` for one epoch against ``check_masked_loss(paths=("fit",))``, the same way;
- peak memory of the check (tracemalloc: numpy and Python allocations) as the number of batches
  grows, to show it is flat.

On a shared machine ``--repeat N`` runs each pair N times, alone and checked in turn, and
reports the fastest of each (the load average is printed first); the process's CPU time (all
threads) is printed beside the wall time, since other processes stretch the wall time only.

    python benchmarks/bench_check.py                      # 4,000 x 128, vocabulary 8,000
    python benchmarks/bench_check.py --sequences 20000     # the size of the issue (slow on 2 cores)
    python benchmarks/bench_check.py --sequences 2000 --repeat 3 --from-logits
"""

import argparse
import os
import time
import tracemalloc

import numpy as np

import keras
from pytest_maskloss import check_masked_loss
from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy


def padded(n, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=n)
    tokens = rng.integers(1, vocab, size=(n, length), dtype=np.int32)
    tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens


def model_for(vocab, from_logits=False):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocab, 32, mask_zero=True),
        keras.layers.LSTM(32, return_sequences=True),
        keras.layers.Dense(vocab, activation=None if from_logits else "softmax"),
    ])
    # the package's own masked loss: the check judges it like the stock loss it wraps
    model.compile("adam", MaskedSparseCategoricalCrossentropy(from_logits=from_logits))
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=4000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--from-logits", action="store_true",
                        help="a linear output and from_logits=True (else a softmax output)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each pair this many times, alone and checked in turn; the fastest counts")
    args = parser.parse_args()
    x = padded(args.sequences, args.length, args.vocab)
    model = model_for(args.vocab, args.from_logits)
    print(f"keras {keras.__version__} ({keras.config.backend()}); {args.sequences} sequences x "
          f"{args.length}, vocabulary {args.vocab}, batch {args.batch}; "
          f"{int((x != 0).sum())} real tokens of {x.size}; "
          f"{'logits' if args.from_logits else 'softmax'} output")

    warm = x[: args.batch * 2]
    model.evaluate(warm, warm, batch_size=args.batch, verbose=0)
    check_masked_loss(model, warm, warm, batch_size=args.batch, paths=("evaluate",), metrics=False)

    model.fit(warm, warm, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
    check_masked_loss(model, warm, warm, batch_size=args.batch, paths=("fit",), metrics=False)
    print("load average before the runs: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    for path in ("evaluate", "fit"):
        owns, checks, own_cpu, check_cpu = [], [], [], []
        for _ in range(max(1, args.repeat)):
            start, cpu = time.perf_counter(), time.process_time()
            if path == "evaluate":
                model.evaluate(x, x, batch_size=args.batch, verbose=0)
            else:
                model.fit(x, x, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
            owns.append(time.perf_counter() - start)
            own_cpu.append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            report = check_masked_loss(model, x, x, batch_size=args.batch, paths=(path,), metrics=False)
            checks.append(time.perf_counter() - start)
            check_cpu.append(time.process_time() - cpu)
        own, check = min(owns), min(checks)
        reference = report.timings.get("reference", 0.0)
        print(f"model.{path} alone:{'':<10}{own:8.2f} s")
        print(f"check_masked_loss ({path} path):{'':<3}{check:8.2f} s   ratio {check / own:.2f}x (target <= 1.10x)")
        if len(owns) > 1:
            print(f"  every run, alone: {' '.join(f'{t:.2f}' for t in owns)} s; "
                  f"checked: {' '.join(f'{t:.2f}' for t in checks)} s")
        # CPU seconds of the process (every thread): what the work costs, whoever else runs
        print(f"  CPU time, alone: {' '.join(f'{t:.2f}' for t in own_cpu)} s; "
              f"checked: {' '.join(f'{t:.2f}' for t in check_cpu)} s   "
              f"ratio {min(check_cpu) / min(own_cpu):.2f}x")
        print(f"  of which numpy reference:      {reference:8.2f} s   ({reference / own:.0%} of {path})")
        print(f"  observed through: {report.observed.get(path, '-')}")
        print(f"  result: {'ok' if report.ok else [f.mode for f in report.findings][:3]}")
    print("load average after the runs: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    print("peak memory of the check (tracemalloc) by number of batches:")
    small = 32
    for batches in (8, 32, 128):
        data = padded(small * batches, args.length, args.vocab, seed=batches)
        tracemalloc.start()
        check_masked_loss(model, data, data, batch_size=small, paths=("evaluate",), metrics=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  {batches:4d} batches: peak {peak / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
