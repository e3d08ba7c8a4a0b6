"""What the runtime check costs against the model.evaluate it checks, and its memory.

A small LSTM language model (embedding 32, LSTM 32, softmax over the vocabulary; ``--width``
sets both) on padded sequences. Measured in one run, after a warm-up of both:

- ``model.evaluate`` alone (the named alternative: what a user already pays);
- ``check_masked_loss(paths=("evaluate",))``: the model's own evaluate observed in place (no
  second forward pass), with the time its numpy reference took;
- ``model.fit`` for one epoch against ``check_masked_loss(paths=("fit",))``, the same way;
- peak memory of the check (tracemalloc: numpy and Python allocations) as the number of batches
  grows, to show it is flat;
- on TensorFlow, one softmax pass over a batch's logits plus a gather, timed on its own, whole
  and in the chunks of rows the check takes it in (``compat.tokenstats``): the least any exact
  reference from the logits adds to a step, printed beside the model's own time per batch
  (what the ratio cannot go below on this model).

On a shared machine ``--repeat N`` runs each pair N times, alone and checked in turn, and
reports the fastest of each (the load average is printed first); the process's CPU time (all
threads) is printed beside the wall time, since other processes stretch the wall time only.

    python benchmarks/bench_check.py                      # 4,000 x 128, vocabulary 8,000
    python benchmarks/bench_check.py --sequences 20000     # the size of the issue (slow on 2 cores)
    python benchmarks/bench_check.py --sequences 2000 --repeat 3 --from-logits
    python benchmarks/bench_check.py --sequences 2000 --repeat 2 --no-autotune

Why ``--no-autotune``: on TensorFlow, the end of an ``evaluate``/``fit`` on the ``tf.data``
pipeline Keras builds waits for the next tick of tf.data's autotuning thread, whose period
doubles (ticks measured at 5.11, 10.23, 20.47 s after the iterator starts), so a call's wall
time is rounded up to a tick and a run a little slower than another can take twice its wall
time (16 batches: 4.8 s of steps ends at 5.1 s, 5.4 s of steps at 10.3 s). With the flag both
the model's own calls and the checked ones get the same ``tf.data.Dataset`` with autotuning
off, and the wall times follow the steps.
"""

import argparse
import os
import statistics
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


def model_for(vocab, from_logits=False, width=32):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocab, width, mask_zero=True),
        keras.layers.LSTM(width, return_sequences=True),
        keras.layers.Dense(vocab, activation=None if from_logits else "softmax"),
    ])
    # the package's own masked loss: the check judges it like the stock loss it wraps
    model.compile("adam", MaskedSparseCategoricalCrossentropy(from_logits=from_logits))
    return model


def softmax_pass_ms(batch, length, vocab, repeat=10):
    """The fastest of ``repeat`` runs of one softmax over the vocabulary plus a gather of each
    label's probability (a traced function, float32 logits of one batch), ``{"whole": ms,
    "chunks": ms}``: over the batch at once, and in the check's chunks of rows. The least an
    exact reference from the logits costs per batch on TensorFlow, whatever observes it."""
    import tensorflow as tf

    from pytest_maskloss.compat import tokenstats
    from pytest_maskloss.compat.ops import tensor_ops

    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(batch, length, vocab)).astype("float32"))
    labels = tf.constant(rng.integers(0, vocab, size=(batch, length)).astype("int32"))
    ops = tensor_ops(keras)
    ways = {"whole": tf.function(lambda x, y: tf.gather(tf.nn.softmax(x, axis=-1), y[..., None], batch_dims=2)),
            "chunks": tf.function(lambda x, y: tokenstats._picked_in_chunks(ops, y, x))}
    best = {}
    for name, picked in ways.items():
        picked(logits, labels).numpy()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            picked(logits, labels).numpy()
            times.append(time.perf_counter() - start)
        best[name] = 1e3 * min(times)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequences", type=int, default=4000)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--from-logits", action="store_true",
                        help="a linear output and from_logits=True (else a softmax output)")
    parser.add_argument("--width", type=int, default=32,
                        help="embedding and LSTM units: the body's share of the step (the check's "
                             "cost is in the output head)")
    parser.add_argument("--no-autotune", action="store_true",
                        help="feed a tf.data.Dataset with autotuning off (TensorFlow; see above)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each pair this many times, alone and checked in turn; the fastest counts")
    args = parser.parse_args()
    x = padded(args.sequences, args.length, args.vocab)
    model = model_for(args.vocab, args.from_logits, args.width)
    print(f"keras {keras.__version__} ({keras.config.backend()}); {args.sequences} sequences x "
          f"{args.length}, vocabulary {args.vocab}, batch {args.batch}, width {args.width}; "
          f"{int((x != 0).sum())} real tokens of {x.size}; "
          f"{'logits' if args.from_logits else 'softmax'} output"
          f"{'; tf.data without autotuning' if args.no_autotune else ''}")

    def feed(tokens):
        """The data of one call: arrays (Keras builds its pipeline), or the same pairs as a
        tf.data.Dataset with autotuning off."""
        if not args.no_autotune:
            return (tokens, tokens), {"batch_size": args.batch}
        import tensorflow as tf

        options = tf.data.Options()
        options.autotune.enabled = False
        dataset = tf.data.Dataset.from_tensor_slices((tokens, tokens)).batch(args.batch)
        return (dataset.with_options(options),), {}

    warm, warm_kw = feed(x[: args.batch * 2])
    data, data_kw = feed(x)
    model.evaluate(*warm, **warm_kw, verbose=0)
    check_masked_loss(model, *warm, **warm_kw, paths=("evaluate",), metrics=False)

    model.fit(*warm, **warm_kw, epochs=1, verbose=0, shuffle=False)
    check_masked_loss(model, *warm, **warm_kw, paths=("fit",), metrics=False)
    print("load average before the runs: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    batches = -(-args.sequences // args.batch)
    per_batch = {}
    for path in ("evaluate", "fit"):
        owns, checks, own_cpu, check_cpu = [], [], [], []
        for _ in range(max(1, args.repeat)):
            start, cpu = time.perf_counter(), time.process_time()
            if path == "evaluate":
                model.evaluate(*data, **data_kw, verbose=0)
            else:
                model.fit(*data, **data_kw, epochs=1, verbose=0, shuffle=False)
            owns.append(time.perf_counter() - start)
            own_cpu.append(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            report = check_masked_loss(model, *data, **data_kw, paths=(path,), metrics=False)
            checks.append(time.perf_counter() - start)
            check_cpu.append(time.process_time() - cpu)
        own, check = min(owns), min(checks)
        reference = report.timings.get("reference", 0.0)
        print(f"model.{path} alone:{'':<10}{own:8.2f} s")
        print(f"check_masked_loss ({path} path):{'':<3}{check:8.2f} s   ratio {check / own:.2f}x "
              f"({check / own:.3f}; target <= 1.10x)")
        if len(owns) > 1:
            print(f"  every run, alone: {' '.join(f'{t:.2f}' for t in owns)} s; "
                  f"checked: {' '.join(f'{t:.2f}' for t in checks)} s")
            # each checked run against the run alone just before it: drift of the machine cancels
            pairs = sorted(c / o for o, c in zip(owns, checks))
            print(f"  ratio of each pair: {' '.join(f'{r:.3f}' for r in pairs)}; median {statistics.median(pairs):.3f}")
        # CPU seconds of the process (every thread): what the work costs, whoever else runs
        print(f"  CPU time, alone: {' '.join(f'{t:.2f}' for t in own_cpu)} s; "
              f"checked: {' '.join(f'{t:.2f}' for t in check_cpu)} s   "
              f"ratio {min(check_cpu) / min(own_cpu):.2f}x")
        print(f"  of which numpy reference:      {reference:8.2f} s   ({reference / own:.0%} of {path})")
        print(f"  observed through: {report.observed.get(path, '-')}")
        print(f"  result: {'ok' if report.ok else [f.mode for f in report.findings][:3]}")
        per_batch[path] = (1e3 * own / batches, 1e3 * check / batches)
    print("load average after the runs: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if keras.config.backend() == "tensorflow":
        # what the statistics cannot go below: the check's remaining cost against this floor
        passes = softmax_pass_ms(args.batch, args.length, args.vocab)
        floor = min(passes.values())
        print(f"one softmax pass + gather over ({args.batch}, {args.length}, {args.vocab}): "
              f"{passes['whole']:.1f} ms per batch whole, {passes['chunks']:.1f} ms in the check's chunks")
        for path, (own_ms, check_ms) in per_batch.items():
            print(f"  {path}: {own_ms:.0f} ms per batch alone, {check_ms:.0f} ms checked (+{check_ms - own_ms:.0f} ms); "
                  f"alone + the faster softmax pass = {(own_ms + floor) / own_ms:.2f}x")

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
