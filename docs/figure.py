"""The picture of the problem: the loss Keras reports against the fraction of padding, beside the
masked token mean computed in numpy from the same model's predictions.

Each stack is measured in its own environment and its figures are kept in ``docs/figure.json``;
the PNG is drawn from that file alone (matplotlib is needed only to draw).

    python docs/figure.py measure STACK   # print STACK's figures as JSON
    python docs/figure.py update STACK    # write them into docs/figure.json
    python docs/figure.py check STACK     # exit 1 when they drift from docs/figure.json
    python docs/figure.py draw [--out docs/figure.png]

STACK is one of

* ``tf-keras-2.10-mask``: TensorFlow 2.10's tf.keras, padding masked by
  ``Embedding(mask_zero=True)`` (the original problem; run it with the Python 3.10 venv);
* ``keras-3-sample-weight``: Keras 3, no mask in the model, padding passed as ``sample_weight``;
* ``keras-hub-causal-lm``: a tiny random KerasHub ``GPT2CausalLM`` built from an in-script
  vocabulary (nothing is downloaded), evaluated on strings as its own preprocessor pads them.

Every stack is measured stock and compiled with ``pytest_maskloss.keras``'s
``MaskedSparseCategoricalCrossentropy``. The same real tokens are padded to longer and longer
lengths; the padding sits after the real tokens and the models are causal (an LSTM, GPT-2's
causal attention), so the predictions at real tokens, and hence the token mean, do not change
with the padding. The token mean is computed here in numpy (float64) from the model's
predictions and the padding mask, independently of any Keras loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "figure.json"
PNG = HERE / "figure.png"
RTOL, ATOL = 1e-4, 1e-6  # float32 losses of identical computations on one kind of CPU

VOCAB = 12  # token ids 1..11 are real, 0 is padding
LENGTHS = (10, 9, 10, 8, 10, 9, 10, 10)  # real tokens of the 8 sequences (labels)
PADDED = (10, 11, 12, 14, 17, 20, 25, 33, 50, 100)  # padded lengths: padding 5% → 90%
SEED = 0

# KerasHub: a word-level GPT-2 tokenizer over single letters (each word is one merge).
HUB_WORDS = "abcdefgh"
HUB_TEXTS = ("a b c d e f g h a", "b c d e f g h a", "h g f e d c b a h", "a a b b c c d",
             "c d e f g h a b c", "d e f g h a b c")
HUB_LENGTHS = (11, 14, 18, 26, 40, 64)  # preprocessor sequence_length (9 words + start + end fit in 11)


def _sequences(np):
    rng = np.random.default_rng(SEED)
    return [rng.integers(1, VOCAB, size=n + 1) for n in LENGTHS]


def _padded(np, seqs, length):
    """Inputs and next-token labels, zero-padded after the real tokens."""
    x = np.zeros((len(seqs), length), dtype="int32")
    y = np.zeros((len(seqs), length), dtype="int32")
    for i, s in enumerate(seqs):
        x[i, : len(s) - 1] = s[:-1]
        y[i, : len(s) - 1] = s[1:]
    return x, y


def token_mean(np, probs_or_logits, labels, real, from_logits):
    """Σ l·m / Σ m in float64, ``l`` the per-token cross-entropy of ``labels``."""
    z = np.asarray(probs_or_logits, dtype="float64")
    if from_logits:
        z = z - z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    else:
        logp = np.log(z)
    picked = np.take_along_axis(logp, labels[..., None].astype("int64"), axis=-1)[..., 0]
    m = np.asarray(real, dtype="float64")
    return float(-(picked * m).sum() / m.sum())


def _lstm_lm(keras, np, mask_zero):
    """Embedding → LSTM → softmax, with weights drawn from numpy so every stack holds the same."""
    layers = [keras.layers.Embedding(VOCAB, 8, mask_zero=mask_zero),
              keras.layers.LSTM(8, return_sequences=True),
              keras.layers.Dense(VOCAB, activation="softmax")]
    model = keras.Sequential(layers)
    model.build((None, None))
    rng = np.random.default_rng(SEED + 1)
    model.set_weights([rng.normal(0.0, 0.6, w.shape).astype("float32") for w in model.get_weights()])
    return model


def _measure_lstm(keras, np, mask_zero):
    from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy

    seqs = _sequences(np)
    model = _lstm_lm(keras, np, mask_zero)
    out = {"padding_fraction": [], "stock": [], "pytest_maskloss": [], "token_mean": []}
    for length in PADDED:
        x, y = _padded(np, seqs, length)
        real = (y != 0).astype("float32")
        extra = {} if mask_zero else {"sample_weight": real}
        probs = model.predict(x, batch_size=len(x), verbose=0)
        out["padding_fraction"].append(float(1.0 - (y != 0).mean()))
        out["token_mean"].append(token_mean(np, probs, y, real, from_logits=False))
        for key, loss in (("stock", "sparse_categorical_crossentropy"),
                          ("pytest_maskloss", MaskedSparseCategoricalCrossentropy())):
            model.compile(loss=loss)
            # one batch holds every sequence: no epoch weighting mixes in
            out[key].append(float(model.evaluate(x, y, batch_size=len(x), verbose=0, **extra)))
    return out


def measure_tf_keras_210():
    import numpy as np
    import tensorflow as tf

    if not tf.__version__.startswith("2.10."):
        raise SystemExit(f"tf-keras-2.10-mask needs TensorFlow 2.10, this is {tf.__version__}")
    out = _measure_lstm(tf.keras, np, mask_zero=True)
    out["versions"] = {"tensorflow": tf.__version__, "keras": tf.keras.__version__}
    out["label"] = f"tf.keras {tf.__version__}, Embedding(mask_zero=True)"
    return out


def measure_keras3():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np

    if int(keras.__version__.split(".")[0]) < 3:
        raise SystemExit(f"keras-3-sample-weight needs Keras 3, this is {keras.__version__}")
    out = _measure_lstm(keras, np, mask_zero=False)
    out["versions"] = {"keras": keras.__version__, "backend": keras.backend.backend()}
    out["label"] = f"Keras {keras.__version__} ({keras.backend.backend()}), padding as sample_weight"
    return out


def _hub_tokenizer(keras_hub):
    vocabulary = {"<|endoftext|>": 0, "Ġ": 1}
    for w in HUB_WORDS:
        vocabulary[w] = len(vocabulary)
        vocabulary["Ġ" + w] = len(vocabulary)  # GPT-2's byte-level BPE writes a space as Ġ
    merges = [f"Ġ {w}" for w in HUB_WORDS]
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)


def measure_keras_hub():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import keras_hub
    import numpy as np

    from pytest_maskloss.keras import MaskedSparseCategoricalCrossentropy

    keras.utils.set_random_seed(SEED)
    tokenizer = _hub_tokenizer(keras_hub)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=max(HUB_LENGTHS))
    texts = list(HUB_TEXTS)
    pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=HUB_LENGTHS[0])
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=pre)
    out = {"padding_fraction": [], "stock": [], "pytest_maskloss": [], "token_mean": []}
    for length in HUB_LENGTHS:
        pre.sequence_length = length
        x, y, w = pre(texts)  # what the task's own data pipeline feeds its steps
        logits = keras.ops.convert_to_numpy(lm(x, training=False))
        y, w = keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(w)
        out["padding_fraction"].append(float(1.0 - (w != 0).mean()))
        out["token_mean"].append(token_mean(np, logits, y, w, from_logits=True))
    for key, loss in (("stock", "auto"), ("pytest_maskloss", MaskedSparseCategoricalCrossentropy(from_logits=True))):
        lm.compile(loss=loss, weighted_metrics=[])
        for length in HUB_LENGTHS:  # the preprocessor pads the same strings to each length
            pre.sequence_length = length
            out[key].append(float(lm.evaluate(texts, batch_size=len(texts), verbose=0)))
    out["versions"] = {"keras_hub": keras_hub.__version__, "keras": keras.__version__, "backend": keras.backend.backend()}
    out["label"] = f"KerasHub {keras_hub.__version__} GPT2CausalLM (Keras {keras.__version__})"
    return out


STACKS = {
    "tf-keras-2.10-mask": measure_tf_keras_210,
    "keras-3-sample-weight": measure_keras3,
    "keras-hub-causal-lm": measure_keras_hub,
}


def load() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8")) if DATA.exists() else {}


def drift(old: dict, new: dict) -> list[str]:
    """Every figure of ``new`` that differs from ``old`` beyond RTOL/ATOL (and every missing one)."""
    problems = []
    for key in ("padding_fraction", "stock", "pytest_maskloss", "token_mean"):
        a, b = old.get(key, []), new[key]
        if len(a) != len(b):
            problems.append(f"{key}: {len(a)} committed values, {len(b)} measured")
            continue
        for i, (u, v) in enumerate(zip(a, b)):
            if not math.isclose(u, v, rel_tol=RTOL, abs_tol=ATOL):
                problems.append(f"{key}[{i}]: committed {u:.7f}, measured {v:.7f}")
    return problems


def _table(name: str, fig: dict) -> str:
    rows = [f"{name}: {fig['label']}", "  padding  stock      pytest_maskloss  numpy token mean"]
    for p, s, f, t in zip(fig["padding_fraction"], fig["stock"], fig["pytest_maskloss"], fig["token_mean"]):
        rows.append(f"  {p:7.3f}  {s:9.6f}  {f:15.6f}  {t:16.6f}")
    return "\n".join(rows)


def draw(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.4), sharex=True)
    # the two stacks hold the same weights, so their curves coincide: big hollow markers for
    # tf.keras 2.10 let the Keras 3 ones show through
    styles = {"tf-keras-2.10-mask": dict(color="tab:red", ms=10, mfc="none", mew=1.5),
              "keras-3-sample-weight": dict(color="tab:blue", ms=4)}
    for name, style in styles.items():
        if name not in data:
            continue
        f = data[name]
        left.plot(f["padding_fraction"], f["stock"], "o-", label=f"{f['label']}: stock loss", **style)
        left.plot(f["padding_fraction"], f["pytest_maskloss"], "s--", label="same model, pytest_maskloss.keras loss", **style)
    for name in styles:
        if name in data:
            left.plot(data[name]["padding_fraction"], data[name]["token_mean"], ":", color="black", lw=2,
                      label="masked token mean, numpy (both stacks)")
            break
    left.set_title("Keras LSTM language model, same weights on both stacks", fontsize=10)
    if "keras-hub-causal-lm" in data:
        f = data["keras-hub-causal-lm"]
        right.plot(f["padding_fraction"], f["stock"], "o-", color="tab:purple", label="evaluate() on strings, the task's stock loss")
        right.plot(f["padding_fraction"], f["pytest_maskloss"], "s--", color="tab:purple", mfc="none",
                   label="same task compiled with a pytest_maskloss.keras loss")
        right.plot(f["padding_fraction"], f["token_mean"], ":", color="black", lw=2, label="masked token mean, numpy")
        right.set_title(f"{f['label']}, tiny random weights", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("fraction of positions that are padding")
        ax.set_ylabel("loss")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # the flat token-mean line off the frame
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.suptitle("The reported loss falls as padding grows; the loss over real tokens does not", fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python docs/figure.py", description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["measure", "update", "check", "draw"])
    ap.add_argument("stack", nargs="?", choices=sorted(STACKS))
    ap.add_argument("--out", type=Path, default=PNG, help="where draw writes the PNG")
    args = ap.parse_args(argv)
    if args.action == "draw":
        draw(load(), args.out)
        print(f"wrote {args.out}")
        return 0
    if args.stack is None:
        ap.error(f"{args.action} needs a STACK")
    sys.path.insert(0, str(HERE.parent))  # the checkout's pytest_maskloss when it is not installed
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    new = STACKS[args.stack]()
    print(_table(args.stack, new))
    if args.action == "measure":
        print(json.dumps(new, indent=1))
        return 0
    data = load()
    if args.action == "update":
        data[args.stack] = new
        DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.stack} into {DATA}")
        return 0
    old = data.get(args.stack)
    if old is None:
        print(f"{DATA.name} has no figures for {args.stack}: run python docs/figure.py update {args.stack}")
        return 1
    if old.get("versions") != new["versions"]:
        print(f"note: committed with {old.get('versions')}, measured with {new['versions']}")
    problems = drift(old, new)
    for p in problems:
        print(f"drift: {args.stack}: {p}")
    if problems:
        print(f"{args.stack}: the figures drifted from {DATA.name} (rtol {RTOL}, atol {ATOL})")
        return 1
    print(f"{args.stack}: {len(new['stock']) * 4} figures match {DATA.name} (rtol {RTOL}, atol {ATOL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
